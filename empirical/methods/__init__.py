"""Methods behind one interface: ``update(per_domain_batches) -> dict[str, float]``."""

from empirical.methods.base import Method, concat_domains, per_domain_losses
from empirical.methods.registry import EXTRA_BASELINES, METHODS, PAPER_BASELINES, make_method

__all__ = [
    "EXTRA_BASELINES",
    "METHODS",
    "PAPER_BASELINES",
    "Method",
    "concat_domains",
    "make_method",
    "per_domain_losses",
]
