"""``iga distill``: LoRA distillation of isomer-set rationales into a student, ERM or IGA.

One run = data (generated or read isomer sets, symbolic or HF teacher rationales)
-> student (the cached built-in default, or a local HF model) with LoRA ->
``IGATrainer`` -> adapter saved with peft's ``save_pretrained`` -> optional
evaluation. Checkpoints every ``save_steps``; ``resume=True`` continues from the
newest complete checkpoint to the same result as an uninterrupted run.

The run folder is a unit (issue 18; ``iga.distill.rundir``): one writer at a time, the
config (``DistillConfig.to_dict``, nested configs included) written once the run is
built, compared on resume, and read back by ``iga eval`` with ``from_dict``.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path

import torch

from iga.distill import rundir
from iga.distill.config import DistillConfig  # defined there, imported from here too
from iga.distill.data import IsomerCollator, IsomerDataset, check_unique_sets
from iga.distill.evaluate import EvalResult, evaluate
from iga.distill.gguf import names_a_folder
from iga.distill.pretrain import load_or_build_base
from iga.distill.schedule import warmup_steps
from iga.distill.student import attach_lora, load_local_model
from iga.isomers import generate_sets
from iga.isomers.io import read_sets_located

EVAL_SEED_OFFSET = 500_000  # evaluation sets never share a seed with training sets


def load_training_sets(config: DistillConfig) -> list:
    if config.sets:
        located = [(s, where) for path in config.sets for s, where in read_sets_located(path)]
        check_unique_sets(located)  # the same set in two files (or one file twice)
        return [s for s, _ in located]
    domains = [*config.train_domains, *config.heldout_domains]
    return [
        s
        for f in config.families
        for s in generate_sets(f, domains, config.n_sets, seed=config.seed)
    ]


def load_eval_sets(config: DistillConfig, knobs: dict[str, dict] | None = None) -> list:
    """The run's test sets; ``knobs`` (family -> knob values) renders a family another
    way, e.g. ordering's teacher style, without changing its problems or prompts."""
    domains = [*config.train_domains, *config.heldout_domains]
    seed = config.seed + EVAL_SEED_OFFSET
    knobs = knobs or {}
    return [
        s
        for f in config.families
        for s in generate_sets(f, domains, config.n_eval_sets, seed=seed, **knobs.get(f, {}))
    ]


def evaluate_run(model, tokenizer, config: DistillConfig, **options) -> EvalResult:
    """The run's reported evaluation: its test sets (``load_eval_sets``), training
    domains in-domain and held-out domains out-of-domain; ``options`` go to ``evaluate``."""
    return evaluate(
        model,
        tokenizer,
        load_eval_sets(config),
        config.train_domains,
        config.heldout_domains,
        **options,
    )


def load_student_base(config: DistillConfig, show_progress: bool = True):
    """(base model, tokenizer) before LoRA: the cached default or a local HF model."""
    if config.student is None:
        model, tokenizer, _ = load_or_build_base(config.base, show_progress)
        return model, tokenizer
    try:
        return load_local_model(config.student, config.trust_remote_code)
    except (ValueError, OSError) as err:
        raise ValueError(f"--student: {err}") from err


def load_student(config: DistillConfig, show_progress: bool = True):
    """(peft model, tokenizer, description) for the run."""
    model, tokenizer = load_student_base(config, show_progress)
    source = config.student or f"built-in default (base {config.base.key()})"
    model = attach_lora(model, config.lora_rank, config.lora_targets, seed=config.seed)
    return model, tokenizer, source


def newest_checkpoint(out: Path) -> str | None:
    """The latest complete checkpoint folder (broken ones skipped), if any."""
    return rundir.newest_checkpoint(out)[0]


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
        warmup_steps=warmup_steps(config.steps),  # iga/distill/schedule.py, shared
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        # A divisor of save_steps: every checkpoint then closes a logging window, so the
        # losses it stores cover its steps exactly (rundir.whole_run_loss).
        logging_steps=math.gcd(max(1, config.steps // 10), config.save_steps),
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


def build_trainer(
    config: DistillConfig,
    model,
    tokenizer,
    sets: list,
    args=None,
    teacher_model=None,
    callbacks: list | None = None,
    trainer_cls=None,
):
    """The trainer of one run: ``config``'s training domains and sequence length over
    ``sets``, the isomer collator, ``args`` (default ``training_arguments(config)``).
    ``iga distill`` and the learning curves (``scripts/learning_curve.py``) both build
    theirs here, so a curve trains exactly as the run it stands for."""
    from iga.distill.trainer import IGATrainer

    trainer_cls = trainer_cls or IGATrainer
    return trainer_cls(
        model=model,
        args=args if args is not None else training_arguments(config),
        train_dataset=IsomerDataset(sets, config.train_domains, tokenizer, config.max_length),
        data_collator=IsomerCollator(tokenizer.pad_token_id),
        num_domains=len(config.train_domains),
        teacher_model=teacher_model,
        callbacks=callbacks,
    )


def _note(text: str) -> None:
    print(f"iga distill: note: {text}", file=sys.stderr)


def distill(config: DistillConfig, resume: bool = False, show_progress: bool = True) -> dict:
    """Train (or resume) one run; returns its summary (also written to ``out/summary.json``).

    The run folder is a unit (``iga.distill.rundir``): locked against a second writer,
    its stored config compared with ``config`` on ``resume``, a finished run resumed is a
    no-op returning the stored summary (with ``"already_finished": True``), and nothing is
    written to ``out`` before the student, data and trainer are built.
    """
    from accelerate import PartialState

    from iga.distill.trainer import IGATrainer

    out = Path(config.out)
    for flag, path in (("--student", config.student), ("--teacher", config.teacher)):
        # A preset or a .gguf file is resolved (and converted) when the student loads.
        if path is not None and names_a_folder(path) and not (Path(path) / "config.json").is_file():
            raise FileNotFoundError(
                f"{flag} {path}: not a Hugging Face model folder (no config.json). Pass a local "
                "folder saved with save_pretrained; nothing is downloaded from a hub."
            )
    rundir.inspect_run(out, config.to_dict(), resume)  # read-only: fail before any work
    args = training_arguments(config)
    args.disable_tqdm = not show_progress
    # Under `accelerate launch` / torchrun every process runs this function. The main
    # process builds the cached base student and the teacher cache first; the others
    # then read them. Only the main process locks and writes `out`, and evaluates.
    _ = args.device  # sets up the process group the Trainer will use
    state = PartialState()
    lock = rundir.RunLock(out) if state.is_main_process else contextlib.nullcontext()
    with lock:
        folder = rundir.inspect_run(out, config.to_dict(), resume)  # again, now under the lock
        if folder.finished is not None:
            if show_progress and state.is_main_process:
                _note(
                    f"{out} holds a finished run ({folder.finished.get('steps')} steps); "
                    "nothing to do (evaluate it with `iga eval`)."
                )
            return {**folder.finished, "already_finished": True}
        for text in folder.notes:
            _note(text)
        return _train(config, folder.checkpoint, args, state, IGATrainer, show_progress)


def _train(config, checkpoint, args, state, trainer_cls, show_progress) -> dict:
    # Long on purpose (over 50 lines): the order (build student, data and trainer; only then write;
    # train; save; summarise) is what keeps a failed run from touching its folder, and one body
    # keeps that order visible.
    out = Path(config.out)
    with state.main_process_first():
        sets = load_training_sets(config)  # first: a bad --sets file fails in a moment
        model, tokenizer, source = load_student(config, show_progress and state.is_main_process)
        teacher_model = None
        if config.kd_weight > 0:  # checked before the teacher writes its cache into `out`
            from iga.distill.kd import check_logit_widths, load_kd_teacher

            teacher_model = load_kd_teacher(config.teacher, tokenizer, config.trust_remote_code)
            check_logit_widths(teacher_model, model)
            teacher_model.to(args.device)
        if config.teacher is not None:
            from iga.distill.teacher_hf import teacher_rationales

            sets = teacher_rationales(
                config.teacher,
                sets,
                config.train_domains,
                out / "teacher_cache.jsonl",
                trust_remote_code=config.trust_remote_code,
            )
    from iga.distill.runclock import RunClock

    clock = RunClock(RunClock.stored_seconds(checkpoint))
    trainer = build_trainer(
        config, model, tokenizer, sets, args, teacher_model, [clock], trainer_cls
    )
    # Only now, with the student, data and trainer built, is anything written to `out`,
    # so a bad flag on --resume cannot clobber a run's files.
    if state.is_main_process:
        rundir.write_atomic(out / rundir.CONFIG_FILE, json.dumps(config.to_dict(), indent=2))
    start = time.perf_counter()
    start_step = checkpoint_step(checkpoint)
    if start_step >= config.steps:
        session_loss = _restore_final_checkpoint(trainer, checkpoint)
    else:
        session_loss = trainer.train(resume_from_checkpoint=checkpoint).training_loss
    session = time.perf_counter() - start
    if state.is_main_process:
        model.save_pretrained(out / "adapter", safe_serialization=True)
        tokenizer.save_pretrained(out / "adapter")
    steps = trainer.state.global_step
    seconds = clock.total()
    summary = {
        "method": config.method,
        "student": source,
        "base_key": config.base.key() if config.student is None else None,
        "train_sets": len(trainer.train_dataset),
        "steps": steps,
        # Over the whole run, also after a resume (rundir.whole_run_loss, RunClock).
        "train_loss": rundir.whole_run_loss(
            trainer.state.log_history, start_step, session_loss, steps
        ),
        "final_loss": next(
            (h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None
        ),
        "train_seconds": seconds,
        "seconds_per_step": seconds / max(1, steps),
        "session_seconds": session,
        "session_steps": steps - start_step,
        "kd_weight": config.kd_weight,
        "resumed_from": checkpoint,
    }
    if getattr(trainer, "iga_step", None) is not None:  # "auto" made concrete for this student
        summary["iga_space"] = trainer.iga_step.config.space
    if not state.is_main_process:
        return summary
    if config.evaluate:
        ev = evaluate_run(model, tokenizer, config, show_progress=show_progress)
        summary["eval"] = ev.to_dict()
        write_eval(out / "eval.json", ev)
    rundir.write_atomic(out / rundir.SUMMARY_FILE, json.dumps(summary, indent=2))
    return summary


def _restore_final_checkpoint(trainer, checkpoint: str) -> float:
    """Load a checkpoint that already holds the run's last step, without training.

    A run killed after its final checkpoint but before its summary resumes here: HF's
    ``Trainer.train`` resumed at ``max_steps`` runs one step more (transformers 5.24:
    the stop check follows the step), so the run would end at ``steps + 1``. Returns
    this session's mean loss, 0 (it trained no step)."""
    from transformers import TrainerState

    trainer._load_from_checkpoint(checkpoint)  # the adapter weights (peft-aware)
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    return 0.0


def checkpoint_step(checkpoint: str | None) -> int:
    if checkpoint is None:
        return 0
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"])


def write_eval(path: Path, result: EvalResult) -> None:
    rundir.write_atomic(Path(path), json.dumps(result.to_dict(with_examples=True), indent=2))
