"""The ``iga`` command dispatches to every registered subcommand."""

import subprocess
import sys

import pytest

from iga.cli import SUBCOMMANDS, main


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


def test_no_subcommand_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_demo_runs_and_compares_methods(capsys):
    assert main(["demo", "--tau", "100"]) == 0
    out = capsys.readouterr().out
    assert "erm" in out and "iga tau=100" in out


def test_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "iga", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: iga" in out.stdout
