"""``iga theory sweep``: the table, the files, and one-line errors for bad input."""

import csv
import json

import pytest

from iga.cli import main


def test_sweep_writes_csv_json_and_figure(tmp_path, capsys):
    out = tmp_path / "sw"
    argv = [
        "theory",
        "sweep",
        "--problem",
        "regression",
        "--K",
        "2,8",
        "--dim",
        "6",
        "--tau",
        "5",
        "--noise",
        "0.5",
        "--n",
        "50",
        "--reps",
        "4",
        "--steps",
        "40",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [int(r["K"]) for r in rows] == [2, 8]
    for r in rows:
        for m in ("erm", "iga"):
            assert float(r[f"bound_{m}"]) >= float(r[f"train_{m}"])
            assert f"slack_{m}" in r and f"ood_{m}" in r
        assert float(r["trivial"]) > 0
    assert json.loads((out / "sweep.json").read_text())["rows"][1]["K"] == 8
    assert (out / "sweep.png").stat().st_size > 1000
    assert "bound ERM" in capsys.readouterr().out


@pytest.mark.parametrize("problem", ["lora", "rotated", "classification"])
def test_sweep_runs_every_problem(problem, tmp_path):
    path = tmp_path / "s.json"
    argv = [
        "theory",
        "sweep",
        "--problem",
        problem,
        "--K",
        "3",
        "--dim",
        "6",
        "--n",
        "20",
        "--reps",
        "2",
        "--steps",
        "5",
        "--json",
        str(path),
    ]
    assert main(argv) == 0
    (row,) = json.loads(path.read_text())["rows"]
    assert row["problem"] == problem and row["K"] == 3


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--K", "2,x"),
        ("--K", "1"),
        ("--dim", "40"),
        ("--tau", "-1"),
        ("--n", "1"),
        ("--noise", "abc"),
        ("--reps", "1"),
        ("--variance", "median"),
        ("--problem", "mnist"),
        ("--steps", "0"),
    ],
)
def test_bad_input_is_one_line_naming_the_flag(flag, value, capsys):
    assert main(["theory", "sweep", flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err, err


def test_theory_help_lists_sweep(capsys):
    with pytest.raises(SystemExit):
        main(["theory", "--help"])
    assert "sweep" in capsys.readouterr().out
