"""``iga experiments run`` and ``iga experiments table``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEFAULT_ROOT = Path("results/empirical")


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in _csv(text)]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "experiments", help="IGA vs baselines on the isomer benchmarks (sweeps and tables)"
    )
    sub = p.add_subparsers(dest="experiments_command", metavar="ACTION")
    run = sub.add_parser("run", help="run (or resume) a suite; finished runs are skipped")
    run.add_argument(
        "--suite",
        choices=("quick", "full", "estimator"),
        default="quick",
        help="which suite (empirical/suites.py): quick, full, or estimator (issue 14)",
    )
    run.add_argument("--jobs", type=int, default=1, help="parallel runs, one CPU thread each")
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

    from empirical.runner import run_stages
    from empirical.suites import Suite, check_subset, get_suite

    try:
        suite = get_suite(args.suite, args.seeds, args.scale)
        check_subset(suite, args.methods, args.benchmarks)
    except ValueError as err:
        print(f"iga experiments run: error: {err}", file=sys.stderr)
        return 2
    out = args.out or DEFAULT_ROOT / suite.name
    if (out / "suite.json").is_file():
        saved = Suite.load(out)
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
    plan = suite.plan(out, args.methods, args.benchmarks, not args.no_ablations)
    run_stages(plan, out, args.jobs, log=lambda s: print(s, flush=True))
    print(f"done in {time.perf_counter() - start:.0f} s; records under {out}/records")
    return 0


def _table(args: argparse.Namespace) -> int:
    from empirical.table import build, latex, markdown, write_json

    if not (args.records / "suite.json").is_file():
        print(
            f"iga experiments table: error: {args.records}/suite.json not found; point "
            "--records at a folder written by 'iga experiments run'.",
            file=sys.stderr,
        )
        return 2
    result = build(args.records, args.alpha)
    print(markdown(result))
    if args.json:
        write_json(result, args.json)
    if args.latex:
        args.latex.write_text(latex(result))
    return 0
