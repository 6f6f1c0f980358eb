"""``iga figures --out DIR`` (or ``python -m paper_figures --out DIR``): rebuild every
figure and table from the stored theory results, empirical records and step benchmark.

Defaults read the committed results (``results/theory``, ``results/empirical`` and the
step benchmark report); a figure whose inputs are missing is skipped with a note naming
the file or field, and the rest are still built.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from paper_figures.paths import DEFAULT_EMPIRICAL, DEFAULT_THEORY


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="output folder (created if needed)")
    p.add_argument(
        "--theory",
        type=Path,
        default=DEFAULT_THEORY,
        help="folder with figures.json and results.json of `iga theory --full --out` "
        "(default: results/theory)",
    )
    p.add_argument(
        "--empirical",
        type=Path,
        default=DEFAULT_EMPIRICAL,
        help="folder searched recursively for the JSONL records of `iga experiments run` "
        "(default: results/empirical)",
    )
    p.add_argument(
        "--bench",
        type=Path,
        default=None,
        help="report of `iga bench step --json PATH` (default: results/bench/step.json)",
    )
    p.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="also paste the built main table into this file, between its "
        "main-table marker comments (e.g. README.md)",
    )
    p.add_argument(
        "--strict", action="store_true", help="exit with status 1 when any figure is skipped"
    )


def main(args: argparse.Namespace) -> int:
    from iga.outputs import OutputPathError, check_output_dir
    from paper_figures.build import Sources, build, write  # matplotlib: only when building

    try:  # before the build, not after it
        check_output_dir(args.out, "--out")
        if args.readme is not None and not args.readme.is_file():
            raise OutputPathError(f"--readme {args.readme}: no such file.")
    except OutputPathError as err:
        print(f"iga figures: error: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    result = build(Sources(args.theory, args.empirical, args.bench))
    write(result, args.out)
    if args.readme is not None and not _paste(result, args.readme):
        return 2
    for note in result.notes:
        print(f"note: {note}")
    seconds = time.perf_counter() - start
    print(
        f"{len(result.figures)} figures and {len(result.tables)} tables in {args.out} "
        f"({seconds:.1f} s); skipped {len(result.skipped)}"
        + (f": {', '.join(result.skipped)}" if result.skipped else "")
    )
    return 1 if args.strict and result.skipped else 0


def _paste(result, readme: Path) -> bool:
    """Paste the built main table into ``readme``; False (with the reason) if it cannot."""
    from paper_figures.readme import paste_and_report

    table = next((t for t in result.tables if t.name == "main_table"), None)
    if table is None:
        print(f"note: no main table was built, {readme} left as it is")
        return True
    return paste_and_report(readme, table.markdown(), "main-table", "main table")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "figures",
        help="rebuild the paper figures and tables from stored results",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=main)


def standalone(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paper_figures", description=__doc__)
    add_arguments(parser)
    return main(parser.parse_args(sys.argv[1:] if argv is None else argv))
