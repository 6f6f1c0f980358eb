"""``iga isomers generate | validate | show`` in-process through ``iga.cli.main``."""

import json

import pytest

from iga.cli import main
from iga.isomers import FAMILIES, read_sets
from tests.test_isomers_domains import _docs_example


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_validate_show_each_family(tmp_path, capsys, family):
    out = tmp_path / f"{family}.jsonl"
    args = ["isomers", "generate", "--family", family, "--n-sets", "8", "--seed", "3"]
    assert main([*args, "--out", str(out), "--shortcut", "auto"]) == 0
    sets = read_sets(out)
    assert len(sets) == 8 and len(sets[0].isomers) == 6  # the default domains
    assert main(["isomers", "validate", str(out)]) == 0
    assert "8 valid set(s), 0 invalid line(s)" in capsys.readouterr().out
    domains = "mathematics,law,medicine,cooking"
    assert main(["isomers", "show", str(out), "--index", "2", "--domains", domains]) == 0
    text = capsys.readouterr().out
    assert all(d.upper() in text for d in domains.split(",")) and "SCIENCE" not in text
    assert sets[2].set_id in text and "Answer:" in text


def test_validate_fails_with_file_and_line(tmp_path, capsys):
    out = tmp_path / "sets.jsonl"
    assert (
        main(["isomers", "generate", "--family", "rules", "--n-sets", "4", "--out", str(out)]) == 0
    )
    lines = out.read_text().splitlines()
    data = json.loads(lines[1])
    data["isomers"]["law"]["answer"] = "maybe"
    lines[1] = json.dumps(data)
    out.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["isomers", "validate", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"{out}:2: isomer 'law': answer 'maybe'" in captured.err
    assert "3 valid set(s), 1 invalid line(s)" in captured.out
    assert main(["isomers", "show", str(out), "--index", "1"]) == 0  # valid sets still show
    assert main(["isomers", "validate", str(tmp_path / "missing.jsonl")]) == 2


def test_generate_options(tmp_path, capsys):
    out = tmp_path / "d.jsonl"
    args = ["isomers", "generate", "--family", "deduction", "--domains", "law,cooking"]
    args += ["--knob", "depth=3", "--knob", "p_yes=1.0", "--shortcut", "law=0.8"]
    assert main([*args, "--shortcut-heldout", "absent", "--n-sets", "5", "--out", str(out)]) == 0
    sets = read_sets(out)
    assert {s.skeleton.answer for s in sets} == {"yes"}
    assert {s.skeleton.n_steps for s in sets} == {3}
    assert {s.isomers["cooking"].metadata["shortcut"]["mode"] for s in sets} == {"absent"}
    assert (
        main(["isomers", "show", str(out), "--set-id", sets[4].set_id, "--format", "markdown"]) == 0
    )
    assert "| | law | cooking |" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--domains", "law,atlantis"], "unknown domain 'atlantis'"),
        (["--knob", "depht=2"], "no knob depht"),
        (["--knob", "depth"], "expected NAME=VALUE"),
        (["--shortcut", "law=2"], "must be in [0, 1]"),
    ],
)
def test_generate_errors_exit_2(tmp_path, capsys, extra, message):
    args = ["isomers", "generate", "--family", "deduction", "--out", str(tmp_path / "x.jsonl")]
    assert main([*args, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_domains_file_option(tmp_path, capsys):
    domain = tmp_path / "farming.yaml"
    domain.write_text(_docs_example())
    out = tmp_path / "f.jsonl"
    args = ["isomers", "generate", "--family", "ordering", "--domains", "law,farming"]
    assert main([*args, "--domains-file", str(domain), "--n-sets", "3", "--out", str(out)]) == 0
    assert main(["isomers", "validate", str(out)]) == 0
    assert main(["isomers", "show", str(out), "--domains", "farming,nowhere"]) == 2
    assert "no domain(s) ['nowhere']" in capsys.readouterr().err


def test_bare_isomers_prints_help(capsys):
    assert main(["isomers"]) == 2
    assert "generate" in capsys.readouterr().out
