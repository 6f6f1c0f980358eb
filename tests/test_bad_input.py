"""Bad input, as a new user gives it, through every command in-process (issue 18).

Each row builds its input in a fresh folder and runs ``iga ...``; every row must exit
with 2, print no traceback, name the file or flag in its message, and leave every
file under its folder (inputs, outputs, the run folders it points at) as it was.
Rows fail before any training, so the table runs in seconds.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from iga.cli import main
from iga.distill import rundir
from iga.distill.pretrain import cache_root
from iga.distill.run import DistillConfig, distill
from tests.test_distill import TINY

# Cheap base phase for rows that get as far as loading the default student.
CHEAP_BASE = ["--base-steps", "1", "--base-sets", "1", "--base-facts", "0"]
FAST_FLAGS = ["--families", "deduction", "--n-sets", "2", "--steps", "1", "--no-eval"]


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IGA_CACHE", str(tmp_path_factory.getbasetemp() / "iga-cache"))
        yield


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished tiny run: 4 steps, a checkpoint every 2, evaluated on one set."""
    out = tmp_path_factory.mktemp("bad-input") / "run"
    sizes = {"steps": 4, "save_steps": 2, "n_eval_sets": 1}
    distill(DistillConfig(method="erm", out=str(out), **{**TINY, **sizes}), show_progress=False)
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _file(w: Path, name: str, data: bytes | str) -> Path:
    path = w / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _run_copy(w: Path, run: Path, name: str = "run") -> Path:
    shutil.copytree(run, w / name)
    return w / name


def _sets_file(w: Path, name: str, n: int = 2) -> Path:
    from iga.isomers import generate_sets, write_sets

    domains = ["mathematics", "law", "medicine", "science", "cooking", "sports"]
    return write_sets(w / name, generate_sets("deduction", domains, n, seed=0))


def _model_folder(w: Path, weights: bool, tokenizer: bool) -> Path:
    """A tiny HF folder with config.json and, if asked, weights and tokenizer files."""
    from iga.distill.pretrain import load_or_build_base
    from tests.test_distill import TINY_BASE

    model, tok, _ = load_or_build_base(TINY_BASE, show_progress=False)
    folder = w / "model"
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    if not weights:
        (folder / "model.safetensors").unlink()
    if not tokenizer:
        for p in folder.glob("tokenizer*"):
            p.unlink()
        (folder / "special_tokens_map.json").unlink(missing_ok=True)
    return folder


def _distill(w: Path, *flags: str) -> list[str]:
    return ["distill", "--out", str(w / "out"), *flags]


def _corrupt_cache_entry(w: Path, run: Path, mp) -> None:
    """A copy of the run's base cache entry under a fresh $IGA_CACHE, weights garbled."""
    config = DistillConfig.from_dict(json.loads((run / rundir.CONFIG_FILE).read_text()))
    entry = cache_root() / "base" / config.base.key()
    mp.setenv("IGA_CACHE", str(w / "cache"))
    copy = w / "cache" / "base" / config.base.key()
    shutil.copytree(entry, copy)
    (copy / "model.safetensors").write_bytes(b"not safetensors")


def _all_checkpoints_broken(w: Path, run: Path) -> Path:
    out = _run_copy(w, run)
    for name in ("summary.json", "eval.json"):
        (out / name).unlink()
    shutil.rmtree(out / "adapter")
    for ckpt in out.glob("checkpoint-*"):
        (ckpt / "optimizer.pt").write_bytes(b"")
    return out


@contextlib.contextmanager
def _held(out: Path):
    with rundir.RunLock(out):
        yield


# id -> setup(w, run, mp) returning (argv, words the message must hold[, context manager])
Case = Callable[..., tuple]
CASES: dict[str, Case] = {
    # --- iga distill: sizes and values of flags
    "steps-zero": lambda w, r, mp: (_distill(w, "--steps", "0"), ["--steps"]),
    "n-sets-zero": lambda w, r, mp: (_distill(w, "--n-sets", "0"), ["--n-sets"]),
    "batch-sets-negative": lambda w, r, mp: (_distill(w, "--batch-sets", "-1"), ["--batch-sets"]),
    "lora-rank-zero": lambda w, r, mp: (_distill(w, "--lora-rank", "0"), ["--lora-rank"]),
    "save-steps-zero": lambda w, r, mp: (_distill(w, "--save-steps", "0"), ["--save-steps"]),
    "lr-negative": lambda w, r, mp: (_distill(w, "--lr", "-1"), ["--lr"]),
    "lr-nan": lambda w, r, mp: (_distill(w, "--lr", "nan"), ["--lr"]),
    "max-length-zero": lambda w, r, mp: (_distill(w, "--max-length", "0"), ["--max-length"]),
    "n-eval-sets-zero": lambda w, r, mp: (_distill(w, "--n-eval-sets", "0"), ["--n-eval-sets"]),
    "kd-weight-above-one": lambda w, r, mp: (_distill(w, "--kd-weight", "2"), ["--kd-weight"]),
    "kd-without-teacher": lambda w, r, mp: (_distill(w, "--kd-weight", "0.5"), ["--teacher"]),
    "tau-negative": lambda w, r, mp: (_distill(w, "--tau", "-1"), ["--tau"]),
    "variance-unknown": lambda w, r, mp: (_distill(w, "--variance", "abs"), ["--variance"]),
    "method-unknown": lambda w, r, mp: (_distill(w, "--method", "sgd"), ["--method"]),
    "family-unknown": lambda w, r, mp: (_distill(w, "--families", "nosuch"), ["--families"]),
    "one-training-domain": lambda w, r, mp: (
        _distill(w, "--train-domains", "law"),
        ["--train-domains"],
    ),
    "domain-train-and-heldout": lambda w, r, mp: (
        _distill(w, "--train-domains", "law,cooking"),
        ["--heldout-domains"],
    ),
    "base-sets-zero": lambda w, r, mp: (_distill(w, "--base-sets", "0"), ["--base-sets"]),
    "base-steps-negative": lambda w, r, mp: (_distill(w, "--base-steps", "-1"), ["--base-steps"]),
    # --- iga distill: input files
    "sets-missing-file": lambda w, r, mp: (_distill(w, "--sets", str(w / "nope.jsonl")), ["nope"]),
    "sets-is-a-folder": lambda w, r, mp: (
        _distill(w, "--sets", str((w / "adir").mkdir() or w / "adir")),
        ["adir", "folder"],
    ),
    "sets-not-utf8": lambda w, r, mp: (
        _distill(w, "--sets", str(_file(w, "latin.jsonl", b"\xff\xfe{}\n"))),
        ["latin.jsonl", "UTF-8"],
    ),
    "sets-bad-json-line": lambda w, r, mp: (
        _distill(w, "--sets", str(_file(w, "bad.jsonl", '{"not": "a set"\n'))),
        ["bad.jsonl:1"],
    ),
    "sets-given-twice": lambda w, r, mp: (
        _distill(w, "--sets", f"{_sets_file(w, 'a.jsonl')},{w / 'a.jsonl'}"),
        ["a.jsonl:1"],
    ),
    # --- iga distill: output folder
    "out-under-a-file": lambda w, r, mp: (
        ["distill", "--out", str(_file(w, "afile", "x") / "run")],
        ["--out", "afile"],
    ),
    "out-is-a-file": lambda w, r, mp: (
        ["distill", "--out", str(_file(w, "afile", "x"))],
        ["--out", "afile"],
    ),
    "out-holds-finished-run": lambda w, r, mp: (
        ["distill", "--out", str(_run_copy(w, r))],
        ["finished run", "--resume"],
    ),
    "out-locked-by-another-run": lambda w, r, mp: (
        _distill(w, *FAST_FLAGS),
        ["being written by process"],
        _held(w / "out"),
    ),
    "resume-with-other-flags": lambda w, r, mp: (
        ["distill", "--resume", "--out", str(_run_copy(w, r)), "--families", "rules"],
        ["families: stored", "distill_config.json"],
    ),
    "resume-corrupt-config": lambda w, r, mp: (
        ["distill", "--resume", "--out", str(_file(w, "run/distill_config.json", "{oops").parent)],
        ["distill_config.json"],
    ),
    "resume-all-checkpoints-broken": lambda w, r, mp: (
        ["distill", "--resume", "--out", str(_all_checkpoints_broken(w, r))],
        ["optimizer.pt", "checkpoint-4"],
    ),
    # --- iga distill: model folders
    "student-not-a-model-folder": lambda w, r, mp: (
        _distill(w, "--student", str((w / "empty").mkdir() or w / "empty")),
        ["--student", "empty", "config.json"],
    ),
    "student-without-weights": lambda w, r, mp: (
        _distill(w, *FAST_FLAGS, "--student", str(_model_folder(w, False, True))),
        ["--student", "model", "weights"],
    ),
    "student-without-tokenizer": lambda w, r, mp: (
        _distill(w, *FAST_FLAGS, "--student", str(_model_folder(w, True, False))),
        ["--student", "model", "tokenizer"],
    ),
    "teacher-missing": lambda w, r, mp: (
        _distill(w, "--teacher", str(w / "noteacher")),
        ["--teacher", "noteacher"],
    ),
    "lora-targets-unknown": lambda w, r, mp: (
        _distill(w, *FAST_FLAGS, *CHEAP_BASE, "--lora-targets", "nosuch"),
        ["--lora-targets", "nosuch"],
    ),
    # --- iga eval
    "eval-missing-folder": lambda w, r, mp: (["eval", str(w / "norun")], ["norun"]),
    "eval-not-a-run": lambda w, r, mp: (
        ["eval", str((w / "empty").mkdir() or w / "empty")],
        ["empty", "distill_config.json"],
    ),
    "eval-corrupt-config": lambda w, r, mp: (
        ["eval", str(_file(w, "run/distill_config.json", b"\x00\x01garbage").parent)],
        ["distill_config.json"],
    ),
    "eval-config-unknown-key": lambda w, r, mp: (
        ["eval", str(_file(w, "run/distill_config.json", '{"stepz": 3}').parent)],
        ["distill_config.json", "stepz"],
    ),
    "eval-run-without-adapter": lambda w, r, mp: (
        ["eval", str(_without(_run_copy(w, r), "adapter"))],
        ["adapter", "--resume"],
    ),
    "eval-json-under-a-file": lambda w, r, mp: (
        ["eval", str(r), "--json", str(_file(w, "afile", "x") / "e.json")],
        ["--json", "afile"],
    ),
    "eval-json-is-a-folder": lambda w, r, mp: (
        ["eval", str(r), "--json", str(w)],
        ["--json", "folder"],
    ),
    "eval-sets-missing": lambda w, r, mp: (
        ["eval", str(r), "--sets", str(w / "nope.jsonl")],
        ["nope.jsonl"],
    ),
    "eval-max-new-tokens-zero": lambda w, r, mp: (
        ["eval", str(r), "--max-new-tokens", "0"],
        ["--max-new-tokens"],
    ),
    "eval-batch-size-zero": lambda w, r, mp: (
        ["eval", str(r), "--batch-size", "0"],
        ["--batch-size"],
    ),
    "eval-corrupt-cache-entry": lambda w, r, mp: (
        _corrupt_cache_entry(w, r, mp) or ["eval", str(r)],
        ["cached base student", "delete that folder"],
    ),
    # --- iga demo
    "demo-steps-zero": lambda w, r, mp: (
        ["demo", "--steps", "0", "--out", str(w / "demo")],
        ["--steps"],
    ),
    "demo-out-under-a-file": lambda w, r, mp: (
        ["demo", "--out", str(_file(w, "afile", "x") / "demo")],
        ["--out", "afile"],
    ),
    # --- the other commands
    "isomers-validate-not-utf8": lambda w, r, mp: (
        ["isomers", "validate", str(_file(w, "latin.jsonl", b"\xff\xfe"))],
        ["latin.jsonl", "UTF-8"],
    ),
    "isomers-show-not-utf8": lambda w, r, mp: (
        ["isomers", "show", str(_file(w, "latin.jsonl", b"\xff\xfe"))],
        ["latin.jsonl", "UTF-8"],
    ),
    "isomers-generate-zero-sets": lambda w, r, mp: (
        ["isomers", "generate", "--family", "rules", "--n-sets", "0", "--out", str(w / "x")],
        ["--n-sets"],
    ),
    "isomers-generate-out-under-a-file": lambda w, r, mp: (
        ["isomers", "generate", "--family", "rules", "--out", str(_file(w, "f", "x") / "y")],
        ["--out"],
    ),
    "experiments-table-corrupt-suite": lambda w, r, mp: (
        ["experiments", "table", "--records", str(_file(w, "rec/suite.json", "{").parent)],
        ["suite.json", "corrupt"],
    ),
    "experiments-table-json-under-a-file": lambda w, r, mp: (
        ["experiments", "table", "--records", str(w), "--json", str(_file(w, "f", "x") / "t")],
        ["--json"],
    ),
    "bench-json-under-a-file": lambda w, r, mp: (
        ["bench", "step", "--json", str(_file(w, "f", "x") / "b.json")],
        ["--json"],
    ),
    "figures-out-under-a-file": lambda w, r, mp: (
        ["figures", "--out", str(_file(w, "f", "x") / "figs")],
        ["--out"],
    ),
    "theory-out-under-a-file": lambda w, r, mp: (
        ["theory", "--quick", "--out", str(_file(w, "f", "x") / "th")],
        ["--out"],
    ),
}


def _without(folder: Path, name: str) -> Path:
    shutil.rmtree(folder / name)
    return folder


def test_the_table_covers_at_least_30_kinds():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_a_one_line_message(case, finished_run, tmp_path, capsys, monkeypatch):
    w = tmp_path / "w"
    w.mkdir()
    shared = snapshot(finished_run)
    setup = CASES[case](w, finished_run, monkeypatch)
    argv, words = setup[0], setup[1]
    context = setup[2] if len(setup) > 2 else contextlib.nullcontext()
    with context:
        before = snapshot(w)
        capsys.readouterr()
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's own usage errors (a bad choice) exit 2
            code = exit_.code
        err = capsys.readouterr().err
        after = snapshot(w)
    assert code == 2, (case, err)
    assert "Traceback" not in err, err
    for word in words:
        assert word in err, (case, word, err)
    assert after == before, f"{case} changed {sorted(set(after) ^ set(before))}"
    assert snapshot(finished_run) == shared
    # The error is one line (progress bars or notes of loaded libraries may come beside it).
    errors = [line for line in err.splitlines() if "error:" in line or "cannot read:" in line]
    assert len(errors) == 1, err


def test_a_corrupt_record_is_skipped_and_named_not_fatal(tmp_path, capsys):
    """`iga experiments table` builds from the rest and says what it skipped."""
    src = Path(__file__).resolve().parents[1] / "results" / "empirical" / "quick"
    if not (src / "suite.json").is_file():
        pytest.skip("no committed quick-suite records")
    records = tmp_path / "quick"
    shutil.copytree(src, records)
    first = next(p for p in sorted((records / "records").glob("*/record.jsonl")))
    first.write_text('{"key": "cut short')
    assert main(["experiments", "table", "--records", str(records)]) == 0
    captured = capsys.readouterr()
    assert str(first) in captured.err and "skipped corrupt record" in captured.err
    assert "Skipped 1 corrupt record" in captured.out
