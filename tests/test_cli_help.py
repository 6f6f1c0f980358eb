"""Every flag of every ``iga`` subcommand explains itself (issue 19, item 1)."""

from __future__ import annotations

import argparse
import re

from iga.cli import build_parser

# help that says nothing but its default: "(default: 5)", "default: x", ""
_EMPTY = re.compile(r"^\s*\(?\s*(default:?\s*[^)]*)?\)?\s*$", re.IGNORECASE)


def _walk(parser: argparse.ArgumentParser, path: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def undocumented(parser: argparse.ArgumentParser) -> list[str]:
    bad = []
    for path, action in _walk(parser, "iga"):
        text = action.help or ""
        if text == argparse.SUPPRESS:
            continue
        if _EMPTY.match(text % {"default": action.default} if "%(" in text else text):
            bad.append(f"{path} {'/'.join(action.option_strings) or action.dest}: {text!r}")
    return bad


def test_every_flag_of_every_subcommand_has_a_real_help_text():
    bad = undocumented(build_parser())
    assert not bad, "flags without a help text:\n" + "\n".join(bad)


def test_the_walker_finds_a_flag_without_help():
    """Companion: a parser with a bare flag and a default-only flag fails the check."""
    p = argparse.ArgumentParser()
    sub = p.add_subparsers().add_parser("x")
    sub.add_argument("--bare")
    sub.add_argument("--only-default", default=3, help="(default: 3)")
    sub.add_argument("--fine", help="a real explanation (default: 3)")
    bad = undocumented(p)
    assert len(bad) == 2 and "--bare" in bad[0] and "--only-default" in bad[1]
