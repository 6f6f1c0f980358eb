"""``DistillConfig``: one ``iga distill`` run, every field a flag (docs/style.md, "Configs
that travel"). It nests the configs it owns, ``iga: IGAConfig`` and ``base: BaseConfig``;
``iga.distill.run`` carries the run out, ``iga.distill.cli`` generates its flags."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from iga.core import configio
from iga.core.config import TRAINER_METHODS as METHODS
from iga.core.config import IGAConfig
from iga.distill.pretrain import BaseConfig
from iga.distill.student import DEFAULT_LORA_TARGETS
from iga.isomers import DEFAULT_HELDOUT_DOMAINS, DEFAULT_TRAIN_DOMAINS, FAMILIES

# How a pretrained student is trained when no flag says otherwise (``iga demo --student``,
# ``scripts/learning_curve.py``): the recipe of the SmolLM2-135M learning curves (issue 15,
# README "A pretrained student"), LoRA on every linear layer (DEFAULT_LORA_TARGETS). The
# built-in student keeps DistillConfig's own defaults.
PRETRAINED_RECIPE = MappingProxyType(
    {"steps": 2000, "batch_sets": 4, "n_sets": 500, "lr": 5e-4, "lora_rank": 16}
)

# DistillConfig's IGA fields before they were nested as ``iga: IGAConfig`` (old run folders)
_FLAT_IGA_KEYS = (
    "tau",
    "variance",
    "projection",
    "space",
    "mask_target",
    "mask_floor",
    "warmup_steps",
)


def _flag(default: Any, help_text: str, choices: tuple[str, ...] | None = None):
    """A field whose ``iga distill`` flag gets ``help_text`` (and ``choices``)."""
    meta = {"help": help_text, **({"choices": choices} if choices else {})}
    return field(default=default, metadata=meta)


@dataclass
class DistillConfig:
    """One distillation run; every field is a command-line flag of ``iga distill``.

    It nests the configs it owns (docs/style.md, "Configs that travel"): ``iga`` (the
    IGA step, ``iga.IGAConfig``; its ``seed`` is this run's ``seed``) and ``base`` (the
    default student's base phase). ``to_dict``/``from_dict`` round-trip the whole tree.
    """

    method: str = _flag(
        "iga", "'iga' (the IGA step) or 'erm' (plain LoRA SFT, same pipeline)", METHODS
    )
    out: str = _flag("runs/default", "run folder: checkpoints, adapter, eval.json, summary.json")
    families: tuple[str, ...] = _flag(FAMILIES, "isomer families to train and evaluate on")
    train_domains: tuple[str, ...] = _flag(DEFAULT_TRAIN_DOMAINS, "training domains (K of them)")
    heldout_domains: tuple[str, ...] = _flag(
        DEFAULT_HELDOUT_DOMAINS, "held-out domains, evaluated only (never trained on)"
    )
    sets: tuple[str, ...] = _flag((), "isomer JSONL files to train on instead of generated sets")
    n_sets: int = _flag(200, "generated training sets per family")
    n_eval_sets: int = _flag(25, "generated evaluation sets per family (disjoint seeds)")
    seed: int = _flag(0, "seed of data, LoRA init, training and the IGA step's SVD sketch")
    steps: int = _flag(300, "LoRA optimizer steps")
    batch_sets: int = _flag(8, "isomer sets per step (each holds every training domain)")
    lr: float = _flag(
        3e-3, "peak AdamW learning rate (linear warm-up over 1/20 of the steps, then cosine)"
    )
    lora_rank: int = _flag(8, "LoRA rank r")
    lora_targets: tuple[str, ...] = _flag(DEFAULT_LORA_TARGETS, "module names LoRA adapts")
    iga: IGAConfig = field(default_factory=IGAConfig)
    kd_weight: float = _flag(0.0, "weight of token-level KD against --teacher, in [0, 1]")
    student: str | None = _flag(
        None,
        "local Hugging Face model folder, .gguf file or preset 'smollm2-135m' "
        "(default: the built-in student)",
    )
    teacher: str | None = _flag(
        None, "local Hugging Face model folder, .gguf file or preset writing the rationales"
    )
    trust_remote_code: bool = _flag(False, "allow a model's own code")
    save_steps: int = _flag(100, "steps between checkpoints (--resume continues from the last)")
    max_length: int = _flag(256, "tokens per example (prompt and rationale)")
    evaluate: bool = _flag(True, "evaluate after training")
    base: BaseConfig = field(default_factory=BaseConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"--method: unknown method {self.method!r}; choose one of {METHODS}.")
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise ValueError(f"--families: unknown families {unknown}; choose from {FAMILIES}.")
        if len(self.train_domains) < 2 and self.method == "iga":
            raise ValueError(
                f"IGA needs at least two training domains (got --train-domains "
                f"{','.join(self.train_domains)}): the mask compares gradients across domains. "
                "Add domains or use --method erm."
            )
        overlap = set(self.train_domains) & set(self.heldout_domains)
        if overlap:
            raise ValueError(
                f"domains {sorted(overlap)} are both in --train-domains and --heldout-domains."
            )
        if not isinstance(self.iga, IGAConfig):
            raise TypeError(f"DistillConfig.iga must be an IGAConfig, got {self.iga!r}.")
        if self.iga.seed != self.seed:  # one seed per run: it also seeds the SVD sketch
            self.iga = replace(self.iga, seed=self.seed)
        for name in ("n_sets", "steps", "batch_sets", "lora_rank", "save_steps", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}."
                )
        if self.evaluate and self.n_eval_sets < 1:
            raise ValueError(
                f"--n-eval-sets must be >= 1 (or pass --no-eval), got {self.n_eval_sets}."
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr must be a finite number > 0, got {self.lr}.")
        if not 0.0 <= self.kd_weight <= 1.0:
            raise ValueError(f"--kd-weight must lie in [0, 1], got {self.kd_weight}.")
        if self.kd_weight > 0 and self.teacher is None:
            raise ValueError(
                f"--kd-weight {self.kd_weight} needs --teacher PATH, a local Hugging Face model "
                "sharing the student's vocabulary: the symbolic teacher writes rationales but "
                "has no token distribution to distil. Add --teacher or drop --kd-weight."
            )

    def iga_config(self) -> IGAConfig:
        """The IGA step's configuration (validated at construction)."""
        return self.iga

    def to_dict(self) -> dict[str, Any]:
        """Every field, nested configs as dicts (JSON-ready); ``from_dict`` inverts it."""
        return configio.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "DistillConfig") -> DistillConfig:
        """Inverse of ``to_dict`` (nested configs, tuples, None); unknown keys are errors.

        A run folder written before the IGA fields were nested (flat ``tau``,
        ``variance``, ... beside the run's fields) still loads: those keys move into
        ``iga``.
        """
        if not isinstance(data, dict):
            return configio.from_dict(cls, data, where)  # its error names ``where``
        data = dict(data)
        flat = {k: data.pop(k) for k in _FLAT_IGA_KEYS if k in data}
        if flat:
            if "iga" in data:
                raise configio.ConfigFileError(
                    f"{where}: IGA fields {sorted(flat)} appear both at the "
                    "top level and under 'iga'; keep them under 'iga' only."
                )
            data["iga"] = flat
        return configio.from_dict(cls, data, where)
