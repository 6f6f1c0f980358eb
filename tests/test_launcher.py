"""``iga experiments run --launcher local|submitit``: same job hashing, ``done`` markers and resume
whichever launcher ran a job; submitit's local executor runs a real tiny job on CPU."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace

import pytest

import empirical.execute as execute_mod
from empirical.cli import register
from empirical.hparams import hparams
from empirical.jobs import Job
from empirical.launchers import LauncherConfig, SubmititLauncher
from empirical.records import is_done, load_records, run_dir
from empirical.scheduler import Stage, run_stages
from empirical.suites import SUITES
from tests.test_empirical_methods import TINY_BASE
from tests.test_empirical_sweep import TINY_SCALE, _fake_record

submitit = pytest.importorskip("submitit")  # in the dev extra; optional for users


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser


def _run_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    experiments = next(a for a in parser._actions if a.dest != "help").choices["experiments"]
    sub = next(a for a in experiments._actions if a.dest == "experiments_command")
    return sub.choices["run"]


def flags_without_help(parser: argparse.ArgumentParser) -> list[str]:
    return [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]


def test_every_run_flag_says_what_it_does():
    run = _run_parser(_parser())
    assert flags_without_help(run) == []
    flags = {a.option_strings[-1]: a for a in run._actions if a.option_strings}
    assert flags["--launcher"].choices == ("local", "submitit")
    assert flags["--cluster"].choices == ("slurm", "local", "debug")
    assert flags["--timeout-min"].type is int and flags["--poll-s"].type is float
    companion = argparse.ArgumentParser()
    companion.add_argument("--silent")
    assert flags_without_help(companion) == ["--silent"]


def test_launcher_config_rejects_bad_values_naming_the_flag():
    for kwargs, message in (
        ({"launcher": "pbs"}, "--launcher 'pbs' is unknown"),
        ({"launcher": "submitit", "cluster": "lsf"}, "--cluster 'lsf' is unknown"),
        ({"launcher": "submitit", "timeout_min": 0}, "--timeout-min must be >= 1"),
        ({"launcher": "submitit", "poll_s": 0.0}, "--poll-s must be > 0"),
        ({"partition": "gpu"}, "--partition only apply to --launcher submitit"),
    ):
        with pytest.raises(ValueError, match=message):
            LauncherConfig(**kwargs)


def test_cli_errors_write_nothing(tmp_path, capsys):
    parser = _parser()
    args = parser.parse_args(["experiments", "run", "--out", str(tmp_path), "--mem-gb", "8"])
    assert args.func(args) == 2
    assert "--mem-gb only apply to --launcher submitit" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_submitit_and_local_share_hashing_markers_and_resume(tmp_path, monkeypatch):
    """submitit's debug executor (in this process) runs the quick suite; the local launcher
    then finds every run done; a run whose marker is gone is rerun by submitit alone."""
    calls = []
    monkeypatch.setattr(execute_mod, "execute", lambda job: calls.append(job) or _fake_record(job))
    parser = _parser()
    base = ["experiments", "run", "--suite", "quick", "--seeds", "0", "--out", str(tmp_path)]
    on_submitit = [*base, "--launcher", "submitit", "--cluster", "debug", "--poll-s", "0.01"]

    def run(argv):
        args = parser.parse_args(argv)
        return args.func(args)

    assert run(on_submitit) == 0
    n = len(SUITES["quick"].methods)
    assert len(calls) == n and len(load_records(tmp_path)) == n
    assert (tmp_path / "submitit").is_dir()
    assert run([*base, "--launcher", "local"]) == 0
    assert len(calls) == n, "the local launcher reran runs that submitit finished"
    (run_dir(tmp_path, calls[0]) / "done").unlink()
    assert run(on_submitit) == 0
    assert len(calls) == n + 1 and calls[-1].key() == calls[0].key()


class _DeadHandle:
    job_id = "4242"

    def result(self):
        raise RuntimeError("job 4242 was killed by the time limit")


def test_a_dead_submitit_job_is_reported_not_raised():
    job = Job("erm", "arithmetic", 0, hparams("erm"), TINY_SCALE)
    same, record, error = SubmititLauncher._outcome(_DeadHandle(), job)
    assert same is job and record is None
    assert "submitit job 4242 failed" in error and "time limit" in error


def test_submitit_local_executor_runs_a_tiny_job_then_resumes(tmp_path, monkeypatch):
    """A real run in a subprocess of submitit's LocalExecutor (timeout 3 min, so the test ends
    by itself); a failing run is reported and left without a marker; a second sweep skips
    the finished run; its record equals the same job executed in this process."""
    monkeypatch.setenv("IGA_CACHE", str(tmp_path / "cache"))
    scale = replace(TINY_SCALE, max_length=512)
    good = Job(
        "erm",
        "arithmetic",
        0,
        hparams("erm"),
        scale,
        ("mathematics", "law"),
        base=asdict(TINY_BASE),
    )
    bad = replace(good, method="no-such-method")
    config = LauncherConfig(launcher="submitit", cluster="local", timeout_min=3, poll_s=0.5)
    logs: list[str] = []
    out = tmp_path / "out"
    stages = [Stage("tiny", lambda: [good, bad])]
    records = run_stages(stages, out, log=logs.append, launcher=SubmititLauncher(config, out, 2))
    assert [r["key"] for r in records] == [good.key()], "\n".join(logs)
    assert is_done(out, good) and not is_done(out, bad)
    assert any("FAILED" in line and "unknown method 'no-such-method'" in line for line in logs)
    assert any((out / "submitit").rglob("*_result.pkl"))
    before = sorted(p.name for p in (out / "submitit").iterdir())
    logs.clear()
    again = run_stages(
        [Stage("tiny", lambda: [good])],
        out,
        log=logs.append,
        launcher=SubmititLauncher(config, out),
    )
    assert again == [] and logs == ["== tiny: 0 runs to do"]
    assert sorted(p.name for p in (out / "submitit").iterdir()) == before, "a job was submitted"
    here = execute_mod.execute(good)
    saved = json.loads((run_dir(out, good) / "record.jsonl").read_text().splitlines()[-1])
    for name in ("accuracy_id", "accuracy_ood", "answer_consistency"):
        assert saved["test"][name] == here["test"][name], name
    assert saved["test"]["lcs"] == pytest.approx(here["test"]["lcs"], rel=1e-5)
    assert saved["training_contract"] == here["training_contract"] == 2


def test_records_of_the_loop_before_the_contract_are_noted(tmp_path, monkeypatch, capsys):
    from empirical.cli import _note_old_records
    from empirical.scheduler import run_jobs

    jobs = [Job("erm", "arithmetic", s, hparams("erm"), TINY_SCALE) for s in (0, 1)]
    new = lambda job: {**_fake_record(job), "training_contract": 2}  # noqa: E731
    monkeypatch.setattr(execute_mod, "execute", new)
    run_jobs(jobs[:1], tmp_path, log=lambda s: None)
    _note_old_records(tmp_path)
    assert capsys.readouterr().err == ""  # companion: current records, no note
    monkeypatch.setattr(execute_mod, "execute", _fake_record)  # no field: the old loop
    run_jobs(jobs, tmp_path, log=lambda s: None)
    _note_old_records(tmp_path)
    assert "note: 1 finished runs" in capsys.readouterr().err


def test_submitit_missing_is_a_clear_error_that_writes_nothing(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "submitit", None)  # as if it were not installed
    parser = _parser()
    args = parser.parse_args(
        ["experiments", "run", "--out", str(tmp_path / "out"), "--launcher", "submitit"]
    )
    assert args.func(args) == 2
    assert "pip install 'iga[cluster]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
