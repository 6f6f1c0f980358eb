"""The shortcut knob: a surface cue that predicts the answer in training domains only.

In a training domain with strength ``s`` the prompt ends in ``Hint: <cue>.`` where the
cue equals the answer with probability ``s`` and is a plausible wrong answer otherwise.
Strengths differ across training domains, so the cue's usefulness is not invariant (the
setting IRM-style methods and IGA target). Held-out domains get no cue (``absent``) or
an always-wrong one (``reversed``), so a student that learned the cue loses accuracy
out of domain. Every isomer's metadata records what was planted.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from iga.isomers.domains import DEFAULT_HELDOUT_DOMAINS

CUE_TEMPLATE = "Hint: {cue}."
HELDOUT_MODES = ("absent", "reversed")


@dataclass(frozen=True)
class ShortcutSpec:
    """Per-domain cue strengths; domains without a strength get the ``heldout`` mode."""

    strengths: Mapping[str, float] = field(default_factory=dict)  # domain -> P(cue == answer)
    heldout: str = "reversed"

    def __post_init__(self) -> None:
        for domain, strength in self.strengths.items():
            if not 0.0 <= float(strength) <= 1.0:
                raise ValueError(
                    f"shortcut strength for {domain!r} must be in [0, 1], got {strength}"
                )
        if self.heldout not in HELDOUT_MODES:
            raise ValueError(
                f"shortcut heldout mode must be one of {HELDOUT_MODES}, got {self.heldout!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"strengths": dict(self.strengths), "heldout": self.heldout}


def auto_strengths(domains: Sequence[str], high: float = 0.9, low: float = 0.6) -> dict[str, float]:
    """Evenly spaced strengths from ``high`` to ``low`` over the non-held-out ``domains``."""
    train = [d for d in domains if d not in DEFAULT_HELDOUT_DOMAINS]
    if len(train) == 1:
        return {train[0]: high}
    step = (high - low) / max(1, len(train) - 1)
    return {d: round(high - i * step, 4) for i, d in enumerate(train)}


def parse_shortcut(text: str, domains: Sequence[str], heldout: str = "reversed") -> ShortcutSpec:
    """``"auto"`` or ``"law=0.9,medicine=0.7"`` (the CLI's ``--shortcut``) as a spec."""
    if text.strip() == "auto":
        return ShortcutSpec(auto_strengths(domains), heldout)
    strengths = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            strengths[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or name.strip() not in domains:
            raise ValueError(
                f"bad --shortcut item {item!r}: expected DOMAIN=STRENGTH "
                f"with DOMAIN among {list(domains)}"
            )
    return ShortcutSpec(strengths, heldout)


def plant_cue(
    prompt: str,
    answer: str,
    domain: str,
    spec: ShortcutSpec | None,
    wrong_answer: Callable[[], str],
    rng: random.Random,
) -> tuple[str, dict[str, Any] | None]:
    """``prompt`` with the cue appended (or not), and the metadata describing it."""
    if spec is None:
        return prompt, None
    if domain in spec.strengths:
        strength = float(spec.strengths[domain])
        agrees = rng.random() < strength
        mode, cue = "train", answer if agrees else wrong_answer()
    elif spec.heldout == "reversed":
        mode, strength, agrees, cue = "reversed", 0.0, False, wrong_answer()
    else:
        return prompt, {"mode": "absent", "strength": None, "cue": None, "agrees": None}
    meta = {"mode": mode, "strength": strength, "cue": cue, "agrees": agrees}
    return f"{prompt} {CUE_TEMPLATE.format(cue=cue)}", meta
