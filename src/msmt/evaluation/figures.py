"""matplotlib on demand: the plotting modules import it when they draw, not when they load.

``import matplotlib.pyplot`` costs about half a second; every ``msmt`` command would pay it at
start-up (``msmt evaluate``, ``msmt serve``) although only training reports and pages draw."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def integer_ticks(axis) -> None:
    """Integer-only major ticks on ``axis`` (e.g. ``ax.xaxis`` for epochs or trials)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))
