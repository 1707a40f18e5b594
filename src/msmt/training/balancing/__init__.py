"""Loss-balancing strategies beyond fixed weights; importing the package registers them.

``msmt.training.losses.balancer_names()`` imports this package, so every strategy here is selectable
with ``loss.strategy`` and configurable in ``loss.<strategy>.*``.
"""

from msmt.training.balancing import dwa, gradnorm, pcgrad, uncertainty  # noqa: F401
