"""msmt: multi-scenario, multi-task prediction for advertising and recommendation.

The Python API (:mod:`msmt.api`), loaded on first use so that ``import msmt`` stays cheap::

    import msmt
    run = msmt.train("experiment.yaml", data=frame, out="runs/mine")
    scored = run.predict(new_rows)
    run = msmt.load("runs/mine")
    study = msmt.tune("experiment.yaml", trials=20)   # Optuna search; study.best_config trains
"""

__version__ = "0.2.0"

__all__ = ["Run", "__version__", "load", "train", "tune"]
_API = ("Run", "load", "train", "tune")


def __getattr__(name: str):
    if name in _API:
        from msmt import api

        return getattr(api, name)
    raise AttributeError(f"module 'msmt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
