"""Learning curves: training-domain validation accuracy per family vs steps (issue 15, item 3).

One curve is one ``iga distill`` configuration (``DistillConfig``: the project's data,
collator, loss, ``IGATrainer`` and ``evaluate``) trained for ``--steps`` and evaluated
every ``--eval-every`` steps (and once before training) on a fixed validation split:
``--n-val-sets`` sets per family in each training domain (seeded apart from training
and test sets) plus ``--n-heldout-sets`` per family in each held-out domain. Each
evaluation point appends one JSON line to ``<out>/curve.jsonl`` (its completions go
to ``<out>/evals/step-<n>.json``); checkpoints go to ``<out>/ckpt`` every
``--eval-every`` steps, and rerunning the same command resumes from the newest one,
skipping evaluation points already recorded. The adapter of every evaluation point is
kept in ``<out>/adapters/step-<n>`` (the checkpoints rotate), so that any point can be
scored later on the run's test sets, the split ``iga distill`` reports on:

    PYTHONPATH=$PWD python scripts/learning_curve.py --name erm-r16-lr5e-4 --test-at 700

writes ``<out>/test/step-700/{summary,eval}.json`` in the formats of ``iga distill``
(accuracy in and out of domain, per family, LCS, answer consistency, every completion).

    PYTHONPATH=$PWD python scripts/learning_curve.py --name erm-r16-lr5e-4 \\
        --student smollm2-135m --method erm --lora-rank 16 --lr 5e-4 --batch-sets 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from transformers import TrainerCallback

from iga.core.config import IGAConfig
from iga.distill.config import PRETRAINED_RECIPE
from iga.distill.evaluate import evaluate
from iga.distill.run import (
    DistillConfig,
    build_trainer,
    checkpoint_step,
    evaluate_run,
    load_student,
    load_student_base,
    load_training_sets,
    newest_checkpoint,
    training_arguments,
    write_eval,
)
from iga.distill.rundir import write_atomic
from iga.isomers import FAMILIES, generate_sets

VALIDATION_SEED_OFFSET = 700_000  # apart from training (0) and test (500_000) seeds
CURVES = Path("results/pretrained/curves")


def validation_sets(config: DistillConfig, n_val: int, n_heldout: int):
    """(training-domain sets, held-out-domain sets), fixed by ``config.seed``."""
    seed = config.seed + VALIDATION_SEED_OFFSET
    val = [s for f in config.families for s in generate_sets(f, config.train_domains, n_val, seed)]
    held = [
        s
        for f in config.families
        for s in generate_sets(f, config.heldout_domains, n_heldout, seed + 1)
    ]
    return val, held


def recorded_steps(path: Path) -> set[int]:
    if not path.is_file():
        return set()
    steps = set()
    for line in path.read_text().splitlines():
        try:
            steps.add(int(json.loads(line)["step"]))
        except (json.JSONDecodeError, KeyError, ValueError):
            continue  # a line cut short by a kill; that point is evaluated again
    return steps


class CurveRecorder(TrainerCallback):
    """Evaluates on the validation split every ``every`` steps and appends a record."""

    def __init__(self, out: Path, tokenizer, config, val, held, every: int, at, batch_size: int):
        self.out, self.tokenizer, self.config = out, tokenizer, config
        self.val, self.held, self.every, self.batch_size = val, held, every, batch_size
        self.at = set(at)
        self.done = recorded_steps(out / "curve.jsonl")
        self.step_clock: tuple[int, float] | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.step_clock = (state.global_step, time.perf_counter())
        if 0 not in self.done and state.global_step == 0:
            self.record(model, state, train_seconds=0.0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if (step % self.every == 0 or step in self.at) and step not in self.done:
            first, t0 = self.step_clock
            seconds = (time.perf_counter() - t0) / max(1, step - first)
            self.record(model, state, train_seconds=seconds)
            control.should_save = True  # a checkpoint at every evaluation point
            self.step_clock = (step, time.perf_counter())

    def on_save(self, args, state, control, **kwargs):
        """Keep this checkpoint's adapter (a few MB) before ``save_total_limit`` drops it."""
        step = state.global_step
        if step in self.done:
            keep_adapter(Path(args.output_dir) / f"checkpoint-{step}", self.out, step)

    def record(self, model, state, train_seconds: float) -> None:
        t0 = time.perf_counter()
        cfg = self.config
        ev_id = evaluate(
            model, self.tokenizer, self.val, cfg.train_domains, (), batch_size=self.batch_size
        )
        ev_ood = evaluate(
            model, self.tokenizer, self.held, (), cfg.heldout_domains, batch_size=self.batch_size
        )
        model.train()
        # on_step_end runs before this step's log: the newest logged loss is the last one
        logged = [(h["step"], h["loss"]) for h in state.log_history if "loss" in h]
        row = {
            "step": state.global_step,
            "train_loss": logged[-1][1] if logged else None,
            "train_loss_step": logged[-1][0] if logged else None,
            "seconds_per_step": train_seconds,
            "eval_seconds": time.perf_counter() - t0,
            "accuracy_id": ev_id.accuracy_id,
            "accuracy_ood": ev_ood.accuracy_ood,
            "id": {f: v["id"] for f, v in ev_id.per_family.items()},
            "ood": {f: v["ood"] for f, v in ev_ood.per_family.items()},
            "answer_consistency_id": ev_id.answer_consistency,
            "n_val": ev_id.n_examples,
            "n_heldout": ev_ood.n_examples,
            "loadavg_1m": os.getloadavg()[0],
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        evals = self.out / "evals"
        evals.mkdir(parents=True, exist_ok=True)
        examples = {"id": ev_id.examples, "ood": ev_ood.examples}
        (evals / f"step-{state.global_step}.json").write_text(json.dumps(examples, indent=1))
        with open(self.out / "curve.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        self.done.add(state.global_step)
        print(json.dumps(row), flush=True)


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "trainer_state.json")


def keep_adapter(checkpoint: Path, out: Path, step: int) -> Path:
    """Copy a checkpoint's adapter to ``out/adapters/step-<step>`` (atomically: a kill
    mid-copy leaves no half folder under the final name)."""
    final = out / "adapters" / f"step-{step}"
    if (final / "adapter_model.safetensors").is_file():
        return final
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ADAPTER_FILES:
        shutil.copy2(checkpoint / name, tmp / name)
    tmp.rename(final)
    return final


def find_adapter(out: Path, step: int) -> Path:
    for folder in (out / "adapters" / f"step-{step}", out / "ckpt" / f"checkpoint-{step}"):
        if (folder / "adapter_config.json").is_file():
            return folder
    names = [p.name for p in (out / "adapters").glob("step-*")] + [
        p.name for p in (out / "ckpt").glob("checkpoint-*")
    ]
    kept = sorted({int(n.split("-")[1]) for n in names if n.split("-")[1].isdigit()})
    raise FileNotFoundError(
        f"--test-at {step}: {out} keeps no adapter of step {step} (kept steps: "
        f"{kept or 'none'}); choose one of those or rerun the curve to that step."
    )


def train_seconds_to(rows: list[dict], step: int) -> float:
    """Training time up to ``step`` from the curve's records: each record's mean s/step
    over the steps since the record before it (evaluation time excluded)."""
    total, previous = 0.0, 0
    for row in sorted(rows, key=lambda r: r["step"]):
        if row["step"] > step:
            break
        total += row["seconds_per_step"] * (row["step"] - previous)
        previous = row["step"]
    return total


def load_point(config: DistillConfig, adapter: Path):
    """(student with the kept adapter, tokenizer), in eval mode."""
    from peft import PeftModel

    base, tokenizer = load_student_base(config)
    return PeftModel.from_pretrained(base, adapter).eval(), tokenizer


def score_on_test_sets(out: Path, config: DistillConfig, step: int, batch_size: int) -> int:
    """Score the adapter kept at ``step`` on the run's test sets (``load_eval_sets``):
    ``iga distill``'s evaluation, written as ``out/test/step-<n>/{summary,eval}.json``."""
    rows = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines() if line]
    if step not in {r["step"] for r in rows}:
        raise FileNotFoundError(f"--test-at {step}: {out}/curve.jsonl has no point at step {step}.")
    adapter = find_adapter(out, step)
    dest = out / "test" / f"step-{step}"
    model, tokenizer = load_point(config, adapter)
    t0 = time.perf_counter()
    ev = evaluate_run(model, tokenizer, config, batch_size=batch_size)
    seconds = train_seconds_to(rows, step)
    summary = {
        "method": config.method,
        "student": config.student,
        "steps": step,
        "schedule_steps": config.steps,
        "adapter": str(adapter),
        "train_seconds": seconds,
        "seconds_per_step": seconds / max(1, step),
        "eval_seconds": time.perf_counter() - t0,
        "loadavg_1m": os.getloadavg()[0],
        "eval": ev.to_dict(),
    }
    if config.method == "iga":
        summary["iga_space"] = config.iga.space
    dest.mkdir(parents=True, exist_ok=True)
    write_eval(dest / "eval.json", ev)
    write_atomic(dest / "summary.json", json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "eval"} | {
        "accuracy_id": ev.accuracy_id, "accuracy_ood": ev.accuracy_ood, "lcs": ev.lcs,
    }), flush=True)  # fmt: skip
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    R = PRETRAINED_RECIPE  # the defaults of `iga demo --student` too
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="curve folder under results/pretrained/curves")
    p.add_argument("--student", default="smollm2-135m", help="preset, .gguf file or HF folder")
    p.add_argument("--method", default="erm", choices=["erm", "iga"], help="training method")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), help="isomer families")
    p.add_argument(
        "--sets",
        nargs="+",
        default=[],
        help="isomer JSONL files to train on instead of generated sets (validation and test "
        "sets are still generated for --families, so the prompts scored are the same)",
    )
    p.add_argument("--steps", type=int, default=R["steps"], help="optimizer steps (schedule)")
    p.add_argument("--batch-sets", type=int, default=R["batch_sets"], help="isomer sets per step")
    p.add_argument("--n-sets", type=int, default=R["n_sets"], help="training sets per family")
    p.add_argument("--lr", type=float, default=R["lr"], help="peak learning rate (cosine)")
    p.add_argument("--lora-rank", type=int, default=R["lora_rank"], help="LoRA rank, all linear")
    p.add_argument("--space", default="factor", choices=["full", "factor"], help="IGA space")
    p.add_argument("--eval-every", type=int, default=100, help="steps between evaluations")
    p.add_argument(
        "--eval-at",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[25, 50],
        help="extra early evaluation steps, comma-separated (a checkpoint at each)",
    )
    p.add_argument("--n-val-sets", type=int, default=16, help="validation sets per family")
    p.add_argument("--n-heldout-sets", type=int, default=4, help="held-out sets per family")
    p.add_argument("--eval-batch", type=int, default=64, help="generation batch size")
    p.add_argument("--seed", type=int, default=0, help="data, LoRA and trainer seed")
    p.add_argument(
        "--test-at",
        type=int,
        default=None,
        help="instead of training: score the adapter kept at this step on the test sets "
        "(the curve's stored configuration; other flags but --name and --eval-batch unused)",
    )
    return p.parse_args(argv)


def _same_curve(stored: dict, wanted: dict, config: DistillConfig) -> bool:
    """Whether a stored curve config describes this one. The distillation part is read
    back through ``DistillConfig.from_dict``, so a file written before the IGA fields were
    nested (flat ``space``, ``tau``...) compares equal to its nested form. An ERM run
    never reads its ``iga`` block, so a change of the IGA defaults does not make an ERM
    curve another curve."""
    distill = {**stored.get("distill", {}), "save_steps": config.save_steps}
    try:
        stored_run = DistillConfig.from_dict(distill, where="curve_config.json")
    except ValueError:
        return False
    if config.method == "erm":
        stored_run = replace(stored_run, iga=config.iga)
    same_run = stored_run == config
    curve = json.loads(json.dumps(wanted["curve"]))
    return same_run and stored.get("curve") == curve


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    out = CURVES / a.name
    config = DistillConfig(
        method=a.method,
        out=str(out / "ckpt"),
        families=tuple(a.families),
        sets=tuple(a.sets),
        n_sets=a.n_sets,
        seed=a.seed,
        steps=a.steps,
        batch_sets=a.batch_sets,
        lr=a.lr,
        lora_rank=a.lora_rank,
        iga=IGAConfig(space=a.space),
        student=a.student,
        save_steps=a.eval_every,
        evaluate=False,
    )
    saved = out / "curve_config.json"
    # When and how fast it evaluates does not change the trained weights (greedy, no
    # dropout, no RNG draws), so it is not part of the curve's identity.
    cadence = ("eval_every", "eval_at", "eval_batch", "test_at")
    wanted = {
        "distill": {k: v for k, v in asdict(config).items() if k != "save_steps"},
        # --sets is recorded under "distill" already (and curves before it lack the key)
        "curve": {k: v for k, v in vars(a).items() if k not in (*cadence, "sets")},
    }
    if a.test_at is not None:  # the curve's own configuration, whatever the other flags say
        if not saved.is_file():
            print(f"error: --test-at: {out} holds no curve ({saved} is missing).", file=sys.stderr)
            return 2
        stored = {**json.loads(saved.read_text())["distill"], "save_steps": config.save_steps}
        try:
            run = DistillConfig.from_dict(stored, where=str(saved))
            return score_on_test_sets(out, run, a.test_at, a.eval_batch)
        except (FileNotFoundError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if saved.is_file() and not _same_curve(json.loads(saved.read_text()), wanted, config):
        print(f"error: {saved} holds another configuration; use another --name.", file=sys.stderr)
        return 2
    model, tokenizer, source = load_student(config)
    sets = load_training_sets(config)
    val, held = validation_sets(config, a.n_val_sets, a.n_heldout_sets)
    args = training_arguments(config)
    args.logging_steps = 10
    args.disable_tqdm = True
    trainer = build_trainer(config, model, tokenizer, sets, args)
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(wanted, indent=2))
    trainer.add_callback(
        CurveRecorder(out, tokenizer, config, val, held, a.eval_every, a.eval_at, a.eval_batch)
    )
    checkpoint = newest_checkpoint(Path(config.out))
    if checkpoint is not None and checkpoint_step(checkpoint) >= config.steps:
        # HF's Trainer resumed at max_steps would train one step more.
        print(f"{out}: finished ({config.steps} steps); nothing to do.", flush=True)
        return 0
    print(
        f"student {source}; train sets {len(trainer.train_dataset)}; resume from {checkpoint}",
        flush=True,
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
