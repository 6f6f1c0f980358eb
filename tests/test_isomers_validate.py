"""The validator rejects each kind of corruption on the right line and keeps the rest."""

import json

import pytest

from iga.isomers import (
    IsomerFormatError,
    generate_sets,
    read_sets,
    validate_file,
    write_sets,
)
from iga.isomers.skeleton import skeleton_hash
from iga.isomers.validate import validate_lines

DOMAINS = ["mathematics", "law", "medicine", "cooking"]


def _lines(family="arithmetic", n=5, **kwargs):
    return [s.to_json() for s in generate_sets(family, DOMAINS, n, seed=11, **kwargs)]


def _edit(line, change):
    data = json.loads(line)
    change(data)
    return json.dumps(data)


def _law(data):
    return data["isomers"]["law"]


def _retamper_step(data):
    # change the result number of the first step line, leaving the answer line intact
    iso = _law(data)
    first, rest = iso["rationale"].split("\n", 1)
    after = str(data["skeleton"]["steps"][0]["after"])
    iso["rationale"] = first.replace(after, str(int(after) + 1)) + "\n" + rest


def _new_program(data):
    # a different, valid program with a consistent hash: only the solver notices
    data["skeleton"]["program"]["start"] += 1
    data["skeleton"]["hash"] = skeleton_hash("arithmetic", data["skeleton"]["program"])
    for iso in data["isomers"].values():
        iso["metadata"]["skeleton_hash"] = data["skeleton"]["hash"]


CORRUPTIONS = {
    "bad JSON": (lambda line: line[:-7], "invalid JSON"),
    "missing field": (
        lambda line: _edit(line, lambda d: _law(d).pop("rationale")),
        "missing field isomers.law.rationale",
    ),
    "missing skeleton": (
        lambda line: _edit(line, lambda d: d.pop("skeleton")),
        "missing field skeleton",
    ),
    "wrong type": (lambda line: _edit(line, lambda d: d.update(isomers=[])), "isomers must be"),
    "mismatched answer across isomers": (
        lambda line: _edit(line, lambda d: _law(d).update(answer="999")),
        "differs from the set's answer",
    ),
    "tampered answer line": (
        lambda line: _edit(line, lambda d: _law(d).update(rationale=_law(d)["rationale"] + "0")),
        "answer line reads",
    ),
    "tampered rationale step": (lambda line: _edit(line, _retamper_step), "rationale line 1"),
    "dropped rationale step": (
        lambda line: _edit(
            line, lambda d: _law(d).update(rationale=_law(d)["rationale"].split("\n", 1)[1])
        ),
        "step line(s)",
    ),
    "unfilled slot": (
        lambda line: _edit(line, lambda d: _law(d).update(prompt=_law(d)["prompt"] + " {unit}")),
        "unfilled template slot",
    ),
    "wrong skeleton hash": (
        lambda line: _edit(line, lambda d: d["skeleton"].update(hash="0" * 16)),
        "skeleton.hash",
    ),
    "solver disagrees": (lambda line: _edit(line, _new_program), "the solver gives"),
    "step count mismatch": (
        lambda line: _edit(line, lambda d: _law(d)["metadata"].update(n_steps=7)),
        "metadata.n_steps",
    ),
    "unknown family": (
        lambda line: _edit(line, lambda d: d.update(family="poetry")),
        "unknown family",
    ),
    "answer line in prompt": (
        lambda line: _edit(
            line, lambda d: _law(d).update(prompt="Answer: 3\n" + _law(d)["prompt"])
        ),
        "prompt contains an answer line",
    ),
    "schema version": (
        lambda line: _edit(line, lambda d: d.update(schema_version=2)),
        "schema_version",
    ),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_each_corruption_is_rejected_on_its_line(tmp_path, kind):
    corrupt, reason = CORRUPTIONS[kind]
    lines = _lines()
    lines[2] = corrupt(lines[2])
    path = tmp_path / "sets.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = validate_file(path)
    assert [e.line for e in report.errors] == [3], report.errors
    assert reason in report.errors[0].reason, report.errors[0].reason
    assert str(report.errors[0]).startswith(f"{path}:3: ")
    assert len(report.valid) == 4  # valid lines are never lost
    with pytest.raises(IsomerFormatError, match=f"{path}:3: "):
        read_sets(path)


def test_tampered_deduction_and_ordering_steps_are_caught():
    for family in ("deduction", "ordering", "rules"):
        line = _lines(family, n=1)[0]
        data = json.loads(line)
        iso = _law(data)
        steps = iso["rationale"].split("\n")
        steps[0] = "Something else entirely happens here."
        iso["rationale"] = "\n".join(steps)
        report = validate_lines([json.dumps(data)])
        assert report.errors and "rationale line 1" in report.errors[0].reason, family


def test_shortcut_cue_must_match_metadata():
    line = _lines(shortcut="auto", n=1)[0]
    data = json.loads(line)
    _law(data)["metadata"]["shortcut"]["cue"] = "12345"
    report = validate_lines([json.dumps(data)])
    assert "metadata.shortcut.cue" in report.errors[0].reason


def test_blank_lines_are_skipped_and_line_numbers_stay_true(tmp_path):
    lines = _lines(n=2)
    path = tmp_path / "sets.jsonl"
    path.write_text(f"\n{lines[0]}\n\n{{broken\n{lines[1]}\n")
    report = validate_file(path)
    assert [e.line for e in report.errors] == [4]
    assert report.n_lines == 3 and len(report.valid) == 2


def test_duplicate_set_ids_are_rejected():
    line = _lines(n=1)[0]
    report = validate_lines([line, line], path="dup.jsonl")
    assert [e.line for e in report.errors] == [2]
    assert "duplicate set_id" in report.errors[0].reason and "line 1" in report.errors[0].reason


def test_every_error_of_a_file_is_reported(tmp_path):
    lines = _lines()
    lines[0], lines[4] = "nope", lines[4].replace('"answer"', '"answr"', 1)
    path = tmp_path / "sets.jsonl"
    path.write_text("\n".join(lines))
    report = validate_file(path)
    assert [e.line for e in report.errors] == [1, 5] and len(report.valid) == 3
    with pytest.raises(IsomerFormatError, match="and 1 more"):
        read_sets(path)


def test_write_then_read_round_trip(tmp_path):
    sets = generate_sets("rules", DOMAINS, 6, seed=2, shortcut="auto")
    path = write_sets(tmp_path / "sub" / "rules.jsonl", sets)
    assert read_sets(path) == sets
    assert not list(path.parent.glob(".*tmp*"))


def test_handwritten_set_without_teacher_steps_is_checked_by_answer_only():
    data = json.loads(_lines(n=1)[0])
    iso = _law(data)
    iso["metadata"]["teacher"] = "hf:/models/teacher"
    iso["rationale"] = "Work it out in one go.\nAnswer: " + data["skeleton"]["answer"]
    assert validate_lines([json.dumps(data)]).ok
