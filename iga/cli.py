"""The ``iga`` command: subcommands grouped by concept, each group in its own module.

Each module listed in ``SUBCOMMAND_MODULES`` exposes ``register(subparsers)``,
which adds its parsers and sets ``func`` on each (a callable taking the parsed
namespace and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that register subcommands, in the order of ``iga --help``.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "iga.distill.cli",  # demo (the main job), distill, eval
    "iga.isomers.cli",  # isomers generate|validate|show
    "theory.cli",  # theory
    "iga.bench",  # bench step
    "paper_figures.cli",  # figures
    "empirical.cli",  # experiments run|table
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iga",
        description="Invariant Gradient Alignment for robust reasoning distillation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
