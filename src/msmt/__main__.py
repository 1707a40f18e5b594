"""``python -m msmt`` (also what ``torchrun -m msmt`` runs)."""

from msmt.cli import main

if __name__ == "__main__":
    main()
