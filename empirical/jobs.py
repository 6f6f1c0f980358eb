"""One run's arguments: a ``Job`` = (method, benchmark, seed, hparams, training domains, scale).

A job's folder is named by ``Job.key()``, the hash of every argument (the base
student by its own hash) and the record version, so a rerun of the same
arguments finds its finished folder and skips it (DomainBed's sweep contract,
docs/style.md "DomainBed").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from iga.distill.pretrain import BaseConfig
from iga.distill.run import DistillConfig
from iga.isomers import DEFAULT_HELDOUT_DOMAINS, DEFAULT_TRAIN_DOMAINS, FAMILIES, ShortcutSpec

RECORD_VERSION = 1


@dataclass(frozen=True)
class Scale:
    """How big one run is; GPU users scale up with ``--scale steps=2000,n_train_sets=1000``."""

    steps: int = 120
    batch_sets: int = 8
    n_train_sets: int = 240
    n_val_sets: int = 12
    n_test_sets: int = 24
    max_new_tokens: int = 96
    eval_batch_size: int = 48
    max_length: int = 256

    @classmethod
    def parse(cls, text: str, base: Scale | None = None) -> Scale:
        """``"steps=200,n_test_sets=50"`` on top of ``base``."""
        values = asdict(base or cls())
        for item in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = item.partition("=")
            if name not in values:
                raise ValueError(f"unknown scale field {name!r}; choose from {sorted(values)}.")
            values[name] = int(value)
        return cls(**values)


def shortcut_for(train_domains: Sequence[str]) -> ShortcutSpec:
    """Answer cue of strength 0.9 .. 0.6 across the training domains, reversed when held out."""
    k = len(train_domains)
    strengths = {d: round(0.9 - 0.3 * i / max(1, k - 1), 4) for i, d in enumerate(train_domains)}
    return ShortcutSpec(strengths, heldout="reversed")


def base_config() -> BaseConfig:
    """The base student every method starts from: ``iga distill``'s default, read now."""
    return DistillConfig().base


# The benchmark of a run that trains on every family at once (as ``iga distill`` does)
# and is scored per family: one such run covers the four benchmarks.
ALL_FAMILIES = "all"


def families_of(benchmark: str) -> tuple[str, ...]:
    """The isomer families a job on ``benchmark`` trains and is scored on."""
    if benchmark == ALL_FAMILIES:
        return FAMILIES
    if benchmark not in FAMILIES:
        raise ValueError(
            f"unknown benchmark {benchmark!r}; choose a family {FAMILIES} or {ALL_FAMILIES!r}."
        )
    return (benchmark,)


@dataclass(frozen=True)
class Job:
    method: str
    benchmark: str  # an isomer family (arithmetic, deduction, ordering, rules) or "all"
    seed: int
    hparams: dict = field(hash=False)
    scale: Scale = Scale()
    train_domains: tuple[str, ...] = DEFAULT_TRAIN_DOMAINS
    heldout_domains: tuple[str, ...] = DEFAULT_HELDOUT_DOMAINS
    base: dict | None = field(default=None, hash=False)  # BaseConfig fields; None: current
    # A pretrained student (``--student`` of iga distill: preset, .gguf file or folder);
    # None: the built-in student built from ``base``.
    student: str | None = None

    def base_config(self) -> BaseConfig:
        return base_config() if self.base is None else BaseConfig(**self.base)

    def student_key(self) -> str:
        """What the run starts from: the pretrained student's name, or the base's hash."""
        return self.student if self.student is not None else self.base_config().key()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["train_domains"] = list(self.train_domains)
        d["heldout_domains"] = list(self.heldout_domains)
        d["base"] = asdict(self.base_config()) if self.student is None else None
        return d

    def key(self) -> str:
        """Hash of every argument (the base student by its own hash) and the record version."""
        job = {k: v for k, v in self.to_dict().items() if k not in ("base", "student")}
        if self.student is not None:  # absent for the built-in student: old keys stand
            job["student"] = self.student
        blob = {"job": job, "base": self.student_key(), "v": RECORD_VERSION}
        text = json.dumps(blob, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def label(self) -> str:
        """One line naming the job in the sweep's log."""
        return (
            f"{self.method:10s} {self.benchmark:10s} seed {self.seed} K={len(self.train_domains)}"
        )

    @classmethod
    def from_dict(cls, d: dict) -> Job:
        d = dict(d)
        d["scale"] = Scale(**d["scale"])
        d["train_domains"], d["heldout_domains"] = (
            tuple(d["train_domains"]),
            tuple(d["heldout_domains"]),
        )
        return cls(**d)
