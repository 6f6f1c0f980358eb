"""The ``iga`` command: one subcommand per concept, each defined in its own module.

Each module listed in ``SUBCOMMANDS`` exposes ``register(subparsers)``, which adds
its parser and sets ``func`` (a callable taking the parsed namespace and returning
an exit code). Imports are lazy per module so ``iga --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Subcommand name -> module that registers it. Order is the order of ``iga --help``.
SUBCOMMANDS: dict[str, str] = {
    "demo": "iga.demo",
    "isomers": "iga.isomers.cli",
    "bench": "iga.bench",
    "theory": "theory.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iga",
        description="Invariant Gradient Alignment for robust reasoning distillation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS.values():
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
