"""``iga isomers``: generate, validate and show Logical Isomer Sets.

    iga isomers generate --family deduction --domains law,medicine,cooking \\
        --n-sets 200 --seed 0 --out data/deduction.jsonl [--shortcut auto] [--knob depth=3]
    iga isomers validate data/deduction.jsonl        # exit 1 on any invalid line
    iga isomers show data/deduction.jsonl --index 3  # one set, domains side by side
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from iga.isomers.domains import DEFAULT_HELDOUT_DOMAINS, DEFAULT_TRAIN_DOMAINS, DomainError
from iga.isomers.families import FAMILIES, get_family
from iga.isomers.generate import generate_sets
from iga.isomers.io import write_sets
from iga.isomers.shortcut import HELDOUT_MODES, parse_shortcut
from iga.isomers.show import markdown_table, side_by_side
from iga.isomers.validate import validate_file
from iga.outputs import check_output_file


def _knobs_help() -> str:
    lines = ["family knobs (--knob NAME=VALUE):"]
    for name in FAMILIES:
        fields = dataclasses.fields(get_family(name).knobs)
        lines.append(f"  {name}: " + ", ".join(f"{f.name}={f.default!r}" for f in fields))
    return "\n".join(lines)


def _parse_knob(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"bad --knob {text!r}: expected NAME=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = tuple(raw.split(",")) if "," in raw else raw
    return name.strip(), value


def _generate(args: argparse.Namespace) -> int:
    domains = [d.strip() for d in args.domains.split(",") if d.strip()] if args.domains else None
    names = domains or [*DEFAULT_TRAIN_DOMAINS, *DEFAULT_HELDOUT_DOMAINS]
    try:
        if args.n_sets < 1:
            raise ValueError(f"--n-sets must be >= 1, got {args.n_sets}.")
        check_output_file(Path(args.out), "--out", make_parents=True)
        knobs = dict(_parse_knob(k) for k in args.knob)
        shortcut = (
            parse_shortcut(args.shortcut, names, args.shortcut_heldout) if args.shortcut else None
        )
        sets = generate_sets(
            args.family,
            names,
            args.n_sets,
            args.seed,
            shortcut=shortcut,
            domain_paths=args.domains_file,
            **knobs,
        )
    except (ValueError, TypeError, DomainError) as err:
        print(f"iga isomers generate: error: {err}", file=sys.stderr)
        return 2
    try:
        path = write_sets(args.out, sets)
    except OSError as err:
        print(f"iga isomers generate: error: --out {args.out}: {err.strerror}", file=sys.stderr)
        return 2
    print(
        f"wrote {len(sets)} {args.family} set(s) x {len(names)} domain(s) "
        f"({', '.join(names)}) to {path}"
    )
    return 0


def _read_error(err: Exception) -> str:
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text (byte {err.start}: {err.reason}); isomer files are UTF-8 JSONL"
    return str(err.strerror or err) if isinstance(err, OSError) else str(err)


def _validate(args: argparse.Namespace) -> int:
    status = 0
    for path in args.files:
        try:
            report = validate_file(path)
        except (OSError, UnicodeDecodeError) as err:
            print(f"{path}: cannot read: {_read_error(err)}", file=sys.stderr)
            status = 2
            continue
        for error in report.errors[: args.max_errors]:
            print(error, file=sys.stderr)
        if len(report.errors) > args.max_errors:
            print(f"{path}: ... {len(report.errors) - args.max_errors} more", file=sys.stderr)
        print(report.summary())
        if not report.ok:
            status = max(status, 1)
    return status


def _show(args: argparse.Namespace) -> int:
    try:
        report = validate_file(args.file)
    except (OSError, UnicodeDecodeError) as err:
        print(f"{args.file}: cannot read: {_read_error(err)}", file=sys.stderr)
        return 2
    if report.errors:
        print(f"note: {report.summary()}; showing valid sets only", file=sys.stderr)
    sets = report.valid
    if args.set_id is not None:
        sets = [s for s in sets if s.set_id == args.set_id]
        index = 0
    else:
        index = args.index
    if not 0 <= index < len(sets):
        print(
            f"{args.file}: no such set (index {index}, {len(sets)} valid set(s))", file=sys.stderr
        )
        return 2
    domains = [d.strip() for d in args.domains.split(",") if d.strip()] if args.domains else None
    try:
        if args.format == "markdown":
            print(markdown_table(sets[index], domains))
        else:
            print(side_by_side(sets[index], domains, args.width))
    except ValueError as err:
        print(f"iga isomers show: error: {err}", file=sys.stderr)
        return 2
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``iga isomers {generate,validate,show}``."""
    # Long on purpose (over 50 lines): argparse declarations of three subcommands, no logic.
    parser = subparsers.add_parser(
        "isomers",
        help="Logical Isomer Sets: generate, validate, show",
        description="Logical Isomer Sets: one logical skeleton rendered in several domains.",
    )
    parser.set_defaults(func=lambda _args: parser.print_help() or 2)
    actions = parser.add_subparsers(dest="isomers_action", metavar="ACTION")

    gen = actions.add_parser(
        "generate",
        help="write seeded isomer sets as JSONL",
        epilog=_knobs_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument(
        "--family", required=True, choices=FAMILIES, help="which isomer family to generate"
    )
    gen.add_argument(
        "--domains",
        help="comma-separated domain names (default: "
        + ",".join([*DEFAULT_TRAIN_DOMAINS, *DEFAULT_HELDOUT_DOMAINS])
        + ")",
    )
    gen.add_argument("--n-sets", type=int, default=100, help="number of isomer sets to write")
    gen.add_argument(
        "--seed", type=int, default=0, help="seed of the generator (same seed, same sets)"
    )
    gen.add_argument("--out", required=True, help="output JSONL file")
    gen.add_argument(
        "--knob",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a family's difficulty knob (repeatable; the knobs are listed below)",
    )
    gen.add_argument(
        "--shortcut",
        metavar="auto|DOMAIN=STRENGTH,...",
        help="plant an answer cue; STRENGTH = P(cue is the answer); 'auto' spreads 0.9..0.6 "
        "over the non-held-out domains; domains without a strength get --shortcut-heldout",
    )
    gen.add_argument(
        "--shortcut-heldout",
        choices=HELDOUT_MODES,
        default="reversed",
        help="what the answer cue does in domains without a --shortcut strength",
    )
    gen.add_argument(
        "--domains-file",
        action="append",
        default=[],
        metavar="PATH",
        help="extra domain file or directory (repeatable; also $IGA_DOMAINS_PATH)",
    )
    gen.set_defaults(func=_generate)

    val = actions.add_parser("validate", help="check JSONL files; exit 1 on any invalid line")
    val.add_argument("files", nargs="+", metavar="FILE", help="isomer JSONL files to check")
    val.add_argument("--max-errors", type=int, default=50, help="errors printed per file")
    val.set_defaults(func=_validate)

    show = actions.add_parser("show", help="one set across domains, side by side")
    show.add_argument("file", metavar="FILE", help="isomer JSONL file")
    show.add_argument("--index", type=int, default=0, help="which valid set (0-based)")
    show.add_argument("--set-id", help="pick the set by id instead")
    show.add_argument("--domains", help="comma-separated subset of domains")
    show.add_argument(
        "--width",
        type=int,
        default=shutil.get_terminal_size((140, 24)).columns,
        help="text width of the side-by-side view (default: the terminal's)",
    )
    show.add_argument(
        "--format",
        choices=("text", "markdown"),
        default="text",
        help="plain text columns or a markdown table",
    )
    show.set_defaults(func=_show)
