"""Command-line front ends: ``iga distill``, ``iga eval`` and ``iga demo`` (the main job)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import typing
from dataclasses import fields, replace
from pathlib import Path

from iga.core import configio
from iga.core.config import IGAConfig
from iga.distill import rundir
from iga.distill.config import PRETRAINED_RECIPE
from iga.distill.run import DistillConfig, distill, load_eval_sets, write_eval

_CSV_FIELDS = {"families", "train_domains", "heldout_domains", "lora_targets", "sets"}


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


# BaseConfig field -> (flag, help): the default student's base phase (iga/distill/pretrain.py).
# A bool field becomes a switch, any other an integer option (kind from BaseConfig's default).
_BASE_FLAGS = {
    "steps": ("--base-steps", "steps of the default student's base phase"),
    "sets_per_family": ("--base-sets", "prompt sets per family in the base-phase corpus"),
    "n_facts": ("--base-facts", "number facts in the base-phase corpus"),
    "with_rationales": (
        "--base-rationales",
        "also pretrain the default student on worked rationales of the training domains "
        "(disjoint seeds; never a held-out domain)",
    ),
}


# IGAConfig field -> flag where the plain --name would be ambiguous beside the run's flags;
# every other field is --name (--tau, --variance, ..., --estimator, --ema-beta).
_IGA_FLAG_NAMES = {"rank": "--projection-rank", "eps": "--variance-eps"}
_IGA_NOT_FLAGS = ("seed",)  # the run's --seed seeds the IGA step too


def _optional(kind):
    """``int | None`` -> ``int``; the value type an option parses."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return args[0] if args else kind


def add_iga_flags(p: argparse.ArgumentParser) -> None:
    """One flag per ``IGAConfig`` field, with its help and choices (dest ``iga_<name>``)."""
    group = p.add_argument_group("IGA step (iga.IGAConfig; ignored with --method erm)")
    hints = typing.get_type_hints(IGAConfig)
    for f in fields(IGAConfig):
        if f.name in _IGA_NOT_FLAGS:
            continue
        flag = iga_flag(f.name)
        default = f.default
        shown = "unset" if default is None else default
        group.add_argument(
            flag,
            dest=f"iga_{f.name}",
            type=_optional(hints[f.name]),
            default=default,
            choices=f.metadata.get("choices"),
            help=f"{f.metadata['help']} (default: {shown})",
        )


def iga_flag(name: str) -> str:
    """The ``iga distill`` flag of an ``IGAConfig`` field (``ema_beta`` -> ``--ema-beta``)."""
    return _IGA_FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def iga_config_from_args(args: argparse.Namespace) -> IGAConfig:
    """The validated IGA config of the parsed flags; an error names the flag, not the field."""
    given = {
        f.name: getattr(args, f"iga_{f.name}")
        for f in fields(IGAConfig)
        if hasattr(args, f"iga_{f.name}")
    }
    try:
        return IGAConfig(**given)
    except ValueError as err:  # "IGAConfig.tau must be ..." -> "--tau must be ..."
        raise ValueError(re.sub(r"IGAConfig\.(\w+)", lambda m: iga_flag(m[1]), str(err))) from err


def add_distill_flags(p: argparse.ArgumentParser) -> None:
    defaults = DistillConfig()
    add_iga_flags(p)
    for f in fields(DistillConfig):
        if f.name in ("base", "iga", "evaluate", "trust_remote_code"):
            continue
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        text, choices = f.metadata["help"], f.metadata.get("choices")
        if f.name in _CSV_FIELDS:
            shown = ",".join(value) or "none"
            p.add_argument(
                flag, type=_csv, default=value, help=f"{text}; comma-separated (default: {shown})"
            )
        elif isinstance(value, bool):
            continue
        elif value is None:
            p.add_argument(flag, default=None, help=text)
        else:
            p.add_argument(
                flag,
                type=type(value),
                default=value,
                choices=choices,
                help=f"{text} (default: {value})",
            )
    p.add_argument(
        "--trust-remote-code", action="store_true", help="allow a model's own code (off by default)"
    )
    p.add_argument("--no-eval", dest="evaluate", action="store_false", help="skip evaluation")
    for name, (flag, help_text) in _BASE_FLAGS.items():
        kind = (
            {"action": "store_true"}
            if isinstance(getattr(defaults.base, name), bool)
            else {"metavar": "N", "type": int}
        )
        p.add_argument(flag, dest=f"base_{name}", default=None, help=help_text, **kind)


def config_from_args(args: argparse.Namespace) -> DistillConfig:
    kwargs = {f.name: getattr(args, f.name) for f in fields(DistillConfig) if hasattr(args, f.name)}
    config = DistillConfig(**kwargs, iga=iga_config_from_args(args))
    given = {name: getattr(args, f"base_{name}", None) for name in _BASE_FLAGS}
    base = {name: value for name, value in given.items() if value is not None}
    if base:
        config = replace(config, base=replace(config.base, **base))
    return config


def _fail(command: str, err: BaseException) -> int:
    """One line on stderr naming what was wrong (the errors name the file or flag); exit 2."""
    print(f"iga {command}: error: {' '.join(str(err).splitlines())}", file=sys.stderr)
    return 2


# What a user's input can make go wrong: bad flags and files (ValueError and its kinds:
# RunFolderError, ConfigFileError, IsomerFormatError, UnicodeDecodeError, ...) and the
# file system (OSError). Anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (ValueError, OSError)


def resume_config(given: DistillConfig) -> DistillConfig:
    """On ``--resume``: flags left at their defaults take the run's stored values, so
    ``iga distill --resume --out RUN`` continues RUN as it was started; a flag given
    with another value than the stored one stays and ``distill`` reports the difference."""
    path = Path(given.out) / rundir.CONFIG_FILE
    if not path.is_file():
        return given
    stored = configio.read_config(DistillConfig, path).to_dict()
    merged = configio.merge_given(stored, given.to_dict(), DistillConfig().to_dict())
    return DistillConfig.from_dict(merged, str(path))


def _distill(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        if args.resume:
            config = resume_config(config)
        summary = distill(config, resume=args.resume)
    except EXPECTED_ERRORS as err:
        return _fail("distill", err)
    if summary.get("already_finished"):
        print(f"{config.out} already holds a finished run; nothing to do.")
    print(format_summary(summary))
    return 0


def format_summary(summary: dict) -> str:
    lines = [
        f"method {summary['method']}: {summary['steps']} steps, "
        f"final loss {summary['final_loss']:.4f}, {summary['seconds_per_step'] * 1000:.0f} ms/step",
    ]
    if "eval" in summary:
        e = summary["eval"]
        lines.append(
            f"accuracy: in-domain {e['accuracy_id']:.3f}, held-out {e['accuracy_ood']:.3f}; "
            f"LCS {e['lcs']:.4f}; answer consistency {e['answer_consistency']:.3f}"
        )
    return "\n".join(lines)


def _eval(args: argparse.Namespace) -> int:
    try:
        return _eval_run(args)
    except EXPECTED_ERRORS as err:
        return _fail("eval", err)


def stored_run_config(run: Path) -> DistillConfig:
    """The config a run was trained with, checked against what its summary recorded.

    The student is rebuilt from the stored config (``from_dict``, every nested config
    included); if the run's summary names another base student than the one the
    config describes, the run folder is inconsistent and evaluation refuses it.
    """
    if not run.is_dir():
        raise rundir.RunFolderError(f"{run}: no such run folder.")
    cfg_path = run / rundir.CONFIG_FILE
    if not cfg_path.is_file():
        raise rundir.RunFolderError(f"{run} is not a run folder (no {rundir.CONFIG_FILE}).")
    config = configio.read_config(DistillConfig, cfg_path)
    summary_path = run / rundir.SUMMARY_FILE
    if config.student is None and summary_path.is_file():
        summary = rundir.read_json_object(summary_path)
        recorded = summary.get("base_key") or _base_key_in(summary.get("student", ""))
        if recorded is not None and recorded != config.base.key():
            raise rundir.RunFolderError(
                f"{summary_path} says the run was trained on base student {recorded}, but "
                f"{cfg_path} describes base {config.base.key()}; the folder mixes two runs. "
                "Retrain the run, or restore its distill_config.json."
            )
    return config


def _base_key_in(source: str) -> str | None:
    match = re.search(r"\(base ([0-9a-f]{16})\)", source)
    return match.group(1) if match else None


def _eval_run(args: argparse.Namespace) -> int:
    # Long on purpose (over 50 lines): one ordered sequence of checks, each a one-line error, that
    # all run before the student loads.
    from peft import PeftModel

    from iga.distill.evaluate import evaluate
    from iga.distill.pretrain import cache_root
    from iga.distill.run import load_student_base
    from iga.isomers.io import read_sets_located

    sizes = {"--max-new-tokens": args.max_new_tokens, "--batch-size": args.batch_size}
    for flag, value in sizes.items():
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}.")
    if args.json:
        rundir.check_output_file(Path(args.json), "--json")
    run = Path(args.run)
    config = stored_run_config(run)
    adapter = run / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise rundir.RunFolderError(
            f"{run} has no adapter ({adapter}/adapter_config.json): the run has not finished. "
            f"Continue it with `iga distill --resume --out {run}`."
        )
    sets = [s for s, _ in read_sets_located(args.sets)] if args.sets else load_eval_sets(config)
    cached = (cache_root() / "base" / config.base.key() / "done").is_file()
    building = config.student is None and not cached
    if building:
        print(
            f"iga eval: note: the run's base student {config.base.key()} is not in the cache "
            f"({cache_root()}); building it now ({config.base.steps} steps).",
            file=sys.stderr,
        )
    base, tokenizer = load_student_base(config, show_progress=building)
    try:
        model = PeftModel.from_pretrained(base, adapter)
    except (RuntimeError, ValueError, OSError, KeyError) as err:
        raise rundir.RunFolderError(
            f"{adapter} does not fit the student its run config describes "
            f"({' '.join(str(err).splitlines())[:300]}); the folder is damaged or mixed."
        ) from err
    result = evaluate(
        model,
        tokenizer,
        sets,
        config.train_domains,
        config.heldout_domains,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    print(json.dumps(result.to_dict(), indent=2))
    if args.json:
        write_eval(Path(args.json), result)
    return 0


DEMO_TABLE_HEADER = (
    "| method | in-domain acc | held-out acc | LCS (lower is better) | answer consistency "
    "| s/step |"
)


def _demo(args: argparse.Namespace) -> int:
    try:
        rundir.check_output_dir(Path(args.out), "--out")
        recipe = {} if args.student is None else dict(PRETRAINED_RECIPE, student=args.student)
        if args.steps is not None:
            recipe["steps"] = args.steps
        configs = [
            DistillConfig(method=m, out=str(Path(args.out) / m), seed=args.seed, **recipe)
            for m in ("erm", "iga")
        ]
        return _demo_runs(args, configs)
    except EXPECTED_ERRORS as err:
        return _fail("demo", err)


def _demo_runs(args: argparse.Namespace, configs: list[DistillConfig]) -> int:
    start = time.perf_counter()
    rows, results = [], {}
    for config in configs:
        method = config.method
        summary = distill(config, resume=True)  # a finished run is reused, not retrained
        results[method] = summary
        e = summary["eval"]
        rows.append(
            f"| {method} | {e['accuracy_id']:.3f} | {e['accuracy_ood']:.3f} | {e['lcs']:.4f} | "
            f"{e['answer_consistency']:.3f} | {summary['seconds_per_step']:.2f} |"
        )
    print()
    print(DEMO_TABLE_HEADER)
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print()
    print("per family, in-domain / held-out accuracy:")
    for family in results["erm"]["eval"]["per_family"]:
        cells = [
            f"{m} {results[m]['eval']['per_family'][family]['id']:.2f}/"
            f"{results[m]['eval']['per_family'][family]['ood']:.2f}"
            for m in results
        ]
        print(f"  {family:<11} " + "   ".join(cells))
    print(f"\ntotal {time.perf_counter() - start:.0f} s; runs in {args.out}/erm and {args.out}/iga")
    rundir.write_atomic(Path(args.out, "demo.json"), json.dumps(results, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill", help="distil isomer-set rationales into a LoRA student (ERM or IGA)"
    )
    add_distill_flags(p)
    p.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in --out"
    )
    p.set_defaults(func=_distill)

    e = sub.add_parser("eval", help="evaluate a distilled run: accuracy, LCS, answer consistency")
    e.add_argument("run", help="run folder written by iga distill")
    e.add_argument(
        "--sets", help="isomer JSONL to evaluate on (default: the run's evaluation sets)"
    )
    e.add_argument("--json", help="write the full result, with every completion, here")
    e.add_argument(
        "--max-new-tokens", type=int, default=96, help="generation budget per completion"
    )
    e.add_argument("--batch-size", type=int, default=64, help="prompts generated at once")
    e.set_defaults(func=_eval)

    d = sub.add_parser(
        "demo", help="the main job: ERM-SFT vs IGA on the built-in default, side by side"
    )
    d.add_argument("--out", default="runs/demo", help="folder of the two runs (erm/ and iga/)")
    d.add_argument("--seed", type=int, default=0, help="seed of data, LoRA init and training")
    d.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"LoRA steps of each method (default {DistillConfig.steps}; with --student "
        f"{PRETRAINED_RECIPE['steps']})",
    )
    d.add_argument(
        "--student",
        default=None,
        help="a pretrained student instead of the built-in one (preset 'smollm2-135m', .gguf "
        "file or local HF folder), trained with PRETRAINED_RECIPE: "
        + ", ".join(f"{k} {v}" for k, v in PRETRAINED_RECIPE.items())
        + " (about 10 h for both methods on 2 CPU cores)",
    )
    d.set_defaults(func=_demo)
