"""msmt: multi-scenario, multi-task prediction for advertising and recommendation."""

__version__ = "0.2.0"
