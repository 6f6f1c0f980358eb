"""Hyperparameters, DomainBed-style: one default and one search distribution per name.

``hparams(method, seed=None)`` returns the defaults (``seed=None``) or one random
draw. Each name's draw uses its own generator, seeded by a hash of
``(seed, method, name)``, so registering a new name never shifts another's draw.
Defaults that come from the library are read at call time, so they follow the tuned
defaults: the learning rate and LoRA rank from ``iga.distill.run.DistillConfig()``, and
every IGA hparam from ``iga.IGAConfig`` (one name per field, default = the field's
default; ``iga_search`` lists the fields that are searched, the others are fixed).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Mapping
from typing import Any

from iga.core.config import IGAConfig
from iga.distill.run import DistillConfig

Draw = Callable[[random.Random], Any]


def _rng(seed: int, method: str, name: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}/{method}/{name}".encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def _log_uniform(lo: float, hi: float) -> Draw:
    """10 ** uniform(lo, hi)."""
    return lambda r: 10 ** r.uniform(lo, hi)


def _uniform(lo: float, hi: float) -> Draw:
    return lambda r: r.uniform(lo, hi)


def _choice(values: list) -> Draw:
    return lambda r: r.choice(values)


def _fixed(value: Any) -> Draw:
    return lambda r: value


def registry(method: str, recipe: Mapping[str, Any] | None = None) -> dict[str, tuple[Any, Draw]]:
    """name -> (default, search distribution) for ``method``. The library defaults come
    from ``DistillConfig(**recipe)``: a suite on a pretrained student passes
    ``PRETRAINED_RECIPE`` (its learning rate and rank), the built-in student none."""
    d = DistillConfig(**(recipe or {}))
    log_lr = math.log10(d.lr)
    out: dict[str, tuple[Any, Draw]] = {
        # Every method searches its learning rate (half a decade each side), as in DomainBed.
        "lr": (d.lr, _log_uniform(log_lr - 0.5, log_lr + 0.5)),
        "lora_rank": (d.lora_rank, _fixed(d.lora_rank)),
    }
    anneal = ("anneal_frac", (0.25, _uniform(0.0, 0.5)))
    specific: dict[str, dict[str, tuple[Any, Draw]]] = {
        "erm": {},
        "irm": {"lambda": (100.0, _log_uniform(-1, 5)), anneal[0]: anneal[1]},
        "vrex": {"lambda": (10.0, _log_uniform(-1, 5)), anneal[0]: anneal[1]},
        "groupdro": {"eta": (1e-2, _log_uniform(-3, -1))},
        "fish": {"meta_lr": (0.5, _choice([0.05, 0.1, 0.5]))},
        "andmask": {"tau": (1.0, _uniform(0.5, 1.0))},
        # Default tau = 0.4: DomainBed's 1 never updates (SANDMask's docstring); the search
        # distributions are DomainBed's.
        "sandmask": {"tau": (0.4, _uniform(0.0, 1.0)), "k": (10.0, _log_uniform(-3, 5))},
        "fishr": {
            "lambda": (1000.0, _log_uniform(1, 4)),
            "ema": (0.95, _uniform(0.90, 0.99)),
            anneal[0]: anneal[1],
        },
        "ky-gradvar": {"lambda": (1.0, _log_uniform(-2, 2))},
        "pcgrad": {},
        "iga": iga_registry(d),
        "iga-batch": {**iga_registry(d), "estimator": ("batch", _fixed("batch"))},
    }
    if method not in specific:
        raise ValueError(f"no hyperparameters registered for method {method!r}.")
    return {**out, **specific[method]}


# The IGA hparams that are searched; every other IGAConfig field is fixed at its default.
IGA_SEARCH: dict[str, Draw] = {
    "tau": _log_uniform(-1, 2),
    "mask_floor": _choice([0.0, 0.1, 0.3]),
}
# IGAConfig fields that are not hparams: the seed is the job's; warm-up is a fraction.
_IGA_NOT_HPARAMS = ("seed", "warmup_steps")


def iga_registry(d: DistillConfig) -> dict[str, tuple[Any, Draw]]:
    """IGA's hparams: one per ``IGAConfig`` field (its default), plus ``warmup_frac``."""
    from dataclasses import fields

    defaults = d.iga
    out: dict[str, tuple[Any, Draw]] = {}
    for f in fields(IGAConfig):
        if f.name in _IGA_NOT_HPARAMS:
            continue
        value = getattr(defaults, f.name)
        out[f.name] = (value, IGA_SEARCH.get(f.name, _fixed(value)))
    out["warmup_frac"] = (defaults.warmup_steps / d.steps, _choice([0.0, 0.1, 0.2]))
    return out


def hparams(
    method: str, seed: int | None = None, recipe: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Defaults (``seed=None``) or the ``seed``-th random draw of ``method``'s hparams
    (around ``DistillConfig(**recipe)``'s defaults, see ``registry``)."""
    reg = registry(method, recipe)
    if seed is None:
        return {name: default for name, (default, _) in reg.items()}
    return {name: draw(_rng(seed, method, name)) for name, (_, draw) in reg.items()}
