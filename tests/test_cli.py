"""The ``iga`` command dispatches to every registered subcommand."""

import subprocess
import sys

import pytest

from iga.cli import build_parser, main

EXPECTED = ("demo", "distill", "eval", "isomers", "theory", "bench")


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in EXPECTED:
        assert name in out
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(EXPECTED) <= set(sub.choices)


def test_no_subcommand_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "iga", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: iga" in out.stdout


def test_public_names_of_the_design():
    import iga

    for name in (
        "conflict_variance",
        "conflict_mask",
        "project_low_rank",
        "IGAConfig",
        "IGATrainer",
        "IGATrainingArguments",
    ):
        assert getattr(iga, name) is not None
    assert iga.IGATrainer.__name__ == "IGATrainer"
    with pytest.raises(AttributeError, match="no attribute"):
        iga.NotAThing  # noqa: B018
