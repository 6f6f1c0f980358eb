"""Methods behind one interface: ``update(per_domain_batches) -> dict[str, float]``."""

from empirical.methods.base import Method, concat_domains
from empirical.methods.registry import (
    EXTRA_BASELINES,
    METHODS,
    PAPER_BASELINES,
    make_method,
)
from iga.core.losses import per_domain_losses

__all__ = [
    "EXTRA_BASELINES",
    "METHODS",
    "PAPER_BASELINES",
    "Method",
    "concat_domains",
    "make_method",
    "per_domain_losses",
]
