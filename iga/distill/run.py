"""``iga distill``: LoRA distillation of isomer-set rationales into a student, ERM or IGA.

One run = data (generated or read isomer sets, symbolic or HF teacher rationales)
-> student (the cached built-in default, or a local HF model) with LoRA ->
``IGATrainer`` -> adapter saved with peft's ``save_pretrained`` -> optional
evaluation. Checkpoints every ``save_steps``; ``resume=True`` continues from the
newest complete checkpoint to the same result as an uninterrupted run.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from iga.core.config import TRAINER_METHODS as METHODS
from iga.core.config import IGAConfig, dataclass_from_dict
from iga.distill.data import IsomerCollator, IsomerDataset
from iga.distill.evaluate import EvalResult, evaluate
from iga.distill.pretrain import BaseConfig, load_or_build_base
from iga.distill.student import DEFAULT_LORA_TARGETS, attach_lora, load_local_model
from iga.isomers import (
    DEFAULT_HELDOUT_DOMAINS,
    DEFAULT_TRAIN_DOMAINS,
    FAMILIES,
    generate_sets,
    read_sets,
)

EVAL_SEED_OFFSET = 500_000  # evaluation sets never share a seed with training sets


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
    student: str | None = _flag(None, "local Hugging Face model folder (default: built-in student)")
    teacher: str | None = _flag(None, "local Hugging Face model folder writing the rationales")
    trust_remote_code: bool = _flag(False, "allow a model's own code")
    save_steps: int = _flag(100, "steps between checkpoints (--resume continues from the last)")
    max_length: int = _flag(256, "tokens per example (prompt and rationale)")
    evaluate: bool = _flag(True, "evaluate after training")
    base: BaseConfig = field(default_factory=BaseConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {METHODS}.")
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown families {unknown}; choose from {FAMILIES}.")
        if len(self.train_domains) < 2 and self.method == "iga":
            raise ValueError(
                f"IGA needs at least two training domains (got {list(self.train_domains)}): the "
                "mask compares gradients across domains. Add domains or use --method erm."
            )
        overlap = set(self.train_domains) & set(self.heldout_domains)
        if overlap:
            raise ValueError(f"domains {sorted(overlap)} are both training and held-out.")
        if not isinstance(self.iga, IGAConfig):
            raise TypeError(f"DistillConfig.iga must be an IGAConfig, got {self.iga!r}.")
        if self.iga.seed != self.seed:  # one seed per run: it also seeds the SVD sketch
            self.iga = replace(self.iga, seed=self.seed)
        for name in ("n_sets", "steps", "batch_sets", "lora_rank", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}."
                )

    def iga_config(self) -> IGAConfig:
        """The IGA step's configuration (validated at construction)."""
        return self.iga

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> DistillConfig:
        """Inverse of ``to_dict`` (nested configs, tuples, None); unknown keys are errors.

        A run folder written before the IGA fields were nested (flat ``tau``,
        ``variance``, ... beside the run's fields) still loads: those keys move into
        ``iga``.
        """
        data = dict(data)
        flat = {k: data.pop(k) for k in _FLAT_IGA_KEYS if k in data}
        if flat:
            if "iga" in data:
                raise ValueError(
                    f"{where or 'DistillConfig'}: IGA fields {sorted(flat)} appear both at the "
                    "top level and under 'iga'; keep them under 'iga' only."
                )
            data["iga"] = flat
        return dataclass_from_dict(cls, data, where)


def load_training_sets(config: DistillConfig) -> list:
    if config.sets:
        return [s for path in config.sets for s in read_sets(path)]
    domains = [*config.train_domains, *config.heldout_domains]
    return [
        s
        for f in config.families
        for s in generate_sets(f, domains, config.n_sets, seed=config.seed)
    ]


def load_eval_sets(config: DistillConfig) -> list:
    domains = [*config.train_domains, *config.heldout_domains]
    seed = config.seed + EVAL_SEED_OFFSET
    return [
        s for f in config.families for s in generate_sets(f, domains, config.n_eval_sets, seed=seed)
    ]


def load_student_base(config: DistillConfig, show_progress: bool = True):
    """(base model, tokenizer) before LoRA: the cached default or a local HF model."""
    if config.student is None:
        model, tokenizer, _ = load_or_build_base(config.base, show_progress)
        return model, tokenizer
    return load_local_model(config.student, config.trust_remote_code)


def load_student(config: DistillConfig, show_progress: bool = True):
    """(peft model, tokenizer, description) for the run."""
    model, tokenizer = load_student_base(config, show_progress)
    source = config.student or f"built-in default (base {config.base.key()})"
    model = attach_lora(model, config.lora_rank, config.lora_targets, seed=config.seed)
    return model, tokenizer, source


def newest_checkpoint(out: Path) -> str | None:
    """The latest checkpoint folder whose trainer state was fully written, if any."""
    done = [p for p in out.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return str(max(done, key=lambda p: int(p.name.split("-")[1]))) if done else None


def training_arguments(config: DistillConfig):

    from iga.distill.trainer import IGATrainingArguments

    return IGATrainingArguments(
        output_dir=config.out,
        method=config.method,
        **IGATrainingArguments.iga_kwargs(config.iga),
        kd_weight=config.kd_weight,
        max_steps=config.steps,
        per_device_train_batch_size=config.batch_sets,
        learning_rate=config.lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, config.steps // 20),
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        logging_steps=max(1, config.steps // 10),
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        # LoRA uses every trainable parameter in each forward: no extra graph traversal.
        ddp_find_unused_parameters=False,
    )


def distill(config: DistillConfig, resume: bool = False, show_progress: bool = True) -> dict:
    """Train (or resume) one run; returns its summary (also written to ``out/summary.json``)."""
    from iga.distill.trainer import IGATrainer

    out = Path(config.out)
    checkpoint = newest_checkpoint(out) if resume else None
    if not resume and (out / "summary.json").exists():
        raise FileExistsError(
            f"{out} already holds a finished run; pass --resume to continue it "
            "or choose another --out."
        )
    from accelerate import PartialState

    args = training_arguments(config)
    args.disable_tqdm = not show_progress
    # Under `accelerate launch` / torchrun every process runs this function. The main
    # process builds the cached base student and the teacher cache first; the others
    # then read them. Only the main process writes to `out` and evaluates.
    _ = args.device  # sets up the process group the Trainer will use
    state = PartialState()
    with state.main_process_first():
        model, tokenizer, source = load_student(config, show_progress and state.is_main_process)
        sets = load_training_sets(config)
        if config.teacher is not None:
            from iga.distill.teacher_hf import teacher_rationales

            sets = teacher_rationales(
                config.teacher,
                sets,
                config.train_domains,
                out / "teacher_cache.jsonl",
                trust_remote_code=config.trust_remote_code,
            )
    dataset = IsomerDataset(sets, config.train_domains, tokenizer, config.max_length)
    trainer = IGATrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=IsomerCollator(tokenizer.pad_token_id),
        num_domains=len(config.train_domains),
    )
    # Only now, with the student, data and trainer built, is anything written to `out`,
    # so a bad flag on --resume cannot clobber a run's files.
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "distill_config.json").write_text(json.dumps(config.to_dict(), indent=2))
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - start
    if state.is_main_process:
        model.save_pretrained(out / "adapter", safe_serialization=True)
        tokenizer.save_pretrained(out / "adapter")
    summary = {
        "method": config.method,
        "student": source,
        "train_sets": len(dataset),
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "final_loss": next(
            (h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None
        ),
        "train_seconds": seconds,
        "seconds_per_step": seconds / max(1, trainer.state.global_step),
        "resumed_from": checkpoint,
    }
    if not state.is_main_process:
        return summary
    if config.evaluate:
        ev = evaluate(
            model,
            tokenizer,
            load_eval_sets(config),
            config.train_domains,
            config.heldout_domains,
            show_progress=show_progress,
        )
        summary["eval"] = ev.to_dict()
        write_eval(out / "eval.json", ev)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def write_eval(path: Path, result: EvalResult) -> None:
    path.write_text(json.dumps(result.to_dict(with_examples=True), indent=2))
