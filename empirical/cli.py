"""``iga experiments run`` and ``iga experiments table``."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path

from empirical.launchers import LauncherConfig

DEFAULT_ROOT = Path("results/empirical")


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in _csv(text)]


def add_config_flags(parser: argparse.ArgumentParser, cls) -> None:
    """One ``--flag`` per field of the dataclass ``cls``: help and choices from its metadata,
    type from its default (a field defaulting to None takes its type from the annotation)."""
    for f in fields(cls):
        kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
        kind = type(f.default) if f.default is not None else kind
        default = "none" if f.default is None else f.default
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=kind,
            default=f.default,
            choices=f.metadata.get("choices"),
            help=f"{f.metadata['help']} (default: {default})",
        )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "experiments", help="IGA vs baselines on the isomer benchmarks (sweeps and tables)"
    )
    sub = p.add_subparsers(dest="experiments_command", metavar="ACTION")
    run = sub.add_parser("run", help="run (or resume) a suite; finished runs are skipped")
    run.add_argument(
        "--suite",
        choices=("quick", "full", "estimator", "pretrained"),
        default="quick",
        help="which suite (empirical/suites.py): quick (4 methods on deduction x 2 seeds), full "
        "(every method x 4 benchmarks x 5 seeds with search and ablations), estimator (the "
        "mask-estimator ablation, issue 14) or pretrained (12 methods on SmolLM2-135M, one "
        "run per seed over all four families, issue 16: about 400 h on 2 CPU cores, see "
        "PROTOCOL.md)",
    )
    run.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at once: local processes (one CPU thread each) or submitted cluster jobs",
    )
    run.add_argument(
        "--out", type=Path, default=None, help="records folder (results/empirical/SUITE)"
    )
    run.add_argument("--seeds", type=_ints, default=None, help="e.g. 0,1,2,3,4")
    run.add_argument(
        "--scale", default="", help="e.g. steps=1000,n_train_sets=2000,n_test_sets=200"
    )
    run.add_argument(
        "--methods", type=_csv, default=None, help="run only these methods' jobs of the suite"
    )
    run.add_argument(
        "--benchmarks", type=_csv, default=None, help="run only these benchmarks' jobs"
    )
    run.add_argument("--no-ablations", action="store_true", help="skip the ablation stage")
    add_config_flags(run, LauncherConfig)
    run.set_defaults(func=_run)
    table = sub.add_parser("table", help="tables (markdown, LaTeX, JSON) from the records")
    table.add_argument(
        "--records",
        type=Path,
        default=DEFAULT_ROOT / "full",
        help="a suite's records folder, written by 'iga experiments run'",
    )
    table.add_argument("--json", type=Path, default=None, help="write everything as JSON")
    table.add_argument("--latex", type=Path, default=None, help="write LaTeX tabulars")
    table.add_argument(
        "--alpha", type=float, default=0.05, help="family-wise level of the Holm-corrected tests"
    )
    table.set_defaults(func=_table)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _run(args: argparse.Namespace) -> int:
    """Run a suite; the subset flags filter its jobs and never change its ``suite.json``."""
    from dataclasses import replace

    from empirical.launchers import make_launcher
    from empirical.runner import run_stages
    from empirical.suites import check_subset, get_suite

    try:
        suite = get_suite(args.suite, args.seeds, args.scale)
        check_subset(suite, args.methods, args.benchmarks)
        launch = LauncherConfig(**{f.name: getattr(args, f.name) for f in fields(LauncherConfig)})
        if args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}.")
    except ValueError as err:
        print(f"iga experiments run: error: {err}", file=sys.stderr)
        return 2
    out = args.out or DEFAULT_ROOT / suite.name
    try:
        launcher = make_launcher(launch, out, args.jobs)
    except RuntimeError as err:  # submitit is not installed
        print(f"iga experiments run: error: {err}", file=sys.stderr)
        return 2
    from empirical.table import TableInputError, load_suite
    from iga.outputs import OutputPathError, check_output_dir

    try:
        check_output_dir(out, "--out")
        saved = load_suite(out) if (out / "suite.json").is_file() else None
    except (TableInputError, OutputPathError) as err:
        print(f"iga experiments run: error: {err}", file=sys.stderr)
        return 2
    if saved is not None:
        if saved == suite:  # resume: keep the defaults frozen at the first sitting
            suite = replace(suite, resolved=saved.resolved)
        else:
            print(
                f"iga experiments run: note: {out}/suite.json described another suite; it is "
                "replaced (finished runs with the same arguments are still reused).",
                file=sys.stderr,
            )
    suite = suite.resolve()
    suite.save(out)
    start = time.perf_counter()
    _note_old_records(out)
    plan = suite.plan(out, args.methods, args.benchmarks, not args.no_ablations)
    run_stages(plan, out, log=lambda s: print(s, flush=True), launcher=launcher)
    print(f"done in {time.perf_counter() - start:.0f} s; records under {out}/records")
    return 0


def _note_old_records(out: Path) -> None:
    """Say so when a sweep reuses records of the loop before the current training contract."""
    from empirical.records import TRAINING_CONTRACT, load_records, old_contract_count

    old = old_contract_count(load_records(out, []))  # corrupt records: left out here
    if old:
        print(
            f"iga experiments run: note: {old} finished runs in {out} were trained by the loop "
            f"before training contract {TRAINING_CONTRACT} (empirical/PROTOCOL.md); they are "
            "reused as they are, new runs follow iga distill's schedule and batching.",
            file=sys.stderr,
        )


def _table(args: argparse.Namespace) -> int:
    from empirical.table import TableInputError, build, latex, markdown, write_json
    from iga.outputs import OutputPathError, check_output_file

    try:
        for flag, path in (("--json", args.json), ("--latex", args.latex)):
            if path is not None:
                check_output_file(path, flag)
        result = build(args.records, args.alpha)
    except (TableInputError, OutputPathError) as err:
        print(f"iga experiments table: error: {err}", file=sys.stderr)
        return 2
    for note in result["skipped"]:
        print(f"iga experiments table: skipped corrupt record {note}", file=sys.stderr)
    print(markdown(result))
    if args.json:
        write_json(result, args.json)
    if args.latex:
        args.latex.write_text(latex(result))
    return 0
