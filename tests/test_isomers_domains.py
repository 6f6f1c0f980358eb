"""Domains: built-ins, held-out lexicon separation, user data files, and clear errors."""

import json
import re
from pathlib import Path

import pytest
import yaml

from iga.isomers import (
    DEFAULT_HELDOUT_DOMAINS,
    DEFAULT_TRAIN_DOMAINS,
    DOMAINS_ENV,
    FAMILIES,
    DomainError,
    available_domains,
    generate_sets,
    get_domain,
    load_domain_file,
)
from iga.isomers.domains import STOPWORDS, default_templates, lexicon_words
from iga.isomers.families import get_family
from iga.isomers.show import markdown_table
from iga.isomers.validate import check_set

DOCS = Path(__file__).resolve().parents[1] / "docs" / "isomers.md"


def _docs_example() -> str:
    text = DOCS.read_text()
    match = re.search(r"<!-- example-domain: farming.yaml -->\s*```yaml\n(.*?)```", text, re.S)
    assert match, "docs/isomers.md lost its worked example"
    return match.group(1)


def test_defaults_cover_required_domains():
    assert {"mathematics", "law", "medicine", "science"} <= set(DEFAULT_TRAIN_DOMAINS)
    assert len(DEFAULT_HELDOUT_DOMAINS) >= 2
    assert not set(DEFAULT_TRAIN_DOMAINS) & set(DEFAULT_HELDOUT_DOMAINS)
    names = available_domains()
    assert len(names) >= 6 and set(DEFAULT_TRAIN_DOMAINS + DEFAULT_HELDOUT_DOMAINS) <= set(names)
    for name in names:
        assert all(get_domain(name).supports(f) for f in FAMILIES), name


def test_heldout_domains_share_no_lexicon_word_with_training_domains():
    train = set().union(*(lexicon_words(get_domain(d)) for d in DEFAULT_TRAIN_DOMAINS))
    for name in DEFAULT_HELDOUT_DOMAINS:
        words = lexicon_words(get_domain(name))
        assert len(words) > 40  # a real lexicon, not emptied by the stopword list
        assert not words & train, f"{name} shares {sorted(words & train)} with training domains"


def test_stopwords_are_function_words_only():
    # the separation test above is only as strong as this list is short
    assert len(STOPWORDS) < 60 and all(len(w) <= 5 for w in STOPWORDS)


def test_every_domain_has_several_templates_somewhere():
    for name in available_domains():
        domain = get_domain(name)
        for family in FAMILIES:
            templates = domain.templates[family]
            assert set(templates) == set(get_family(family).templates)
            assert sum(len(v) > 1 for v in templates.values()) >= 2, (name, family)


def test_default_templates_are_complete():
    for family in FAMILIES:
        assert set(default_templates()[family]) == set(get_family(family).templates)


def test_docs_table_lists_every_template_key():
    text = DOCS.read_text()
    for family in FAMILIES:
        for key in get_family(family).templates:
            assert f"`{key}`" in text, key


def test_docs_example_set_is_reproducible():
    domains = ["mathematics", "law", "medicine", "cooking"]
    table = markdown_table(generate_sets("deduction", domains, 5, seed=0)[1])
    assert table in DOCS.read_text()


@pytest.fixture
def farming(tmp_path):
    path = tmp_path / "farming.yaml"
    path.write_text(_docs_example())
    return path


@pytest.mark.parametrize("family", FAMILIES)
def test_worked_example_domain_generates_valid_sets(farming, family):
    sets = generate_sets(family, ["law", "farming"], 5, seed=0, domain_paths=[farming])
    for iset in sets:
        assert check_set(json.loads(iset.to_json()))[1] == []
        assert iset.isomers["farming"].metadata["domain"] == "farming"


def test_env_var_adds_domains(farming, monkeypatch):
    assert "farming" not in available_domains()
    monkeypatch.setenv(DOMAINS_ENV, str(farming.parent))
    assert "farming" in available_domains()
    assert get_domain("farming").source == str(farming)


def test_json_domain_file_works(farming, tmp_path):
    path = tmp_path / "json" / "farming2.json"
    path.parent.mkdir()
    data = yaml.safe_load(farming.read_text()) | {"name": "farming2"}
    path.write_text(json.dumps(data))
    assert load_domain_file(path).lexicon == load_domain_file(farming).lexicon


def test_partial_domain_supports_only_its_families(tmp_path):
    data = yaml.safe_load(_docs_example())
    data["lexicon"] = {"ordering": data["lexicon"]["ordering"]}
    data["templates"] = {}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    assert "farming" in available_domains("ordering", paths=[path])
    assert "farming" not in available_domains("rules", paths=[path])
    with pytest.raises(DomainError, match="no rules lexicon"):
        generate_sets("rules", ["farming"], 1, seed=0, domain_paths=[path])


def _break(path, change):
    data = yaml.safe_load(_docs_example())
    change(data)
    path.write_text(yaml.safe_dump(data))
    return path


BROKEN = {
    "missing lexicon key": (
        lambda d: d["lexicon"]["arithmetic"].pop("units"),
        "lexicon.arithmetic: must be an object with exactly the keys",
    ),
    "too few entries": (
        lambda d: d["lexicon"]["deduction"].update(predicates=["wilts"]),
        "lexicon.deduction.predicates: needs a list of at least 6",
    ),
    "unknown slot": (
        lambda d: d["templates"]["arithmetic"].update(add=["{holder} gets {y}."]),
        "templates.arithmetic.add[0]: unknown slot(s) ['y']",
    ),
    "missing required slot": (
        lambda d: d["templates"]["arithmetic"].update(add=["{holder} grows."]),
        "must use the slot(s) ['x']",
    ),
    "format spec in slot": (
        lambda d: d["templates"]["arithmetic"].update(add=["{holder} gets {x:>3}."]),
        "plain name",
    ),
    "braces in an entry": (
        lambda d: d["lexicon"]["arithmetic"].update(units=["{unit}s"]),
        "lexicon.arithmetic.units[0]",
    ),
    "scale missing a field": (
        lambda d: d["lexicon"]["ordering"]["scales"][0].pop("least"),
        "lexicon.ordering.scales[0]: must be an object with exactly the fields",
    ),
    "unknown family": (lambda d: d["lexicon"].update(poetry={}), "unknown family 'poetry'"),
    "bad name": (lambda d: d.update(name="Farming Land"), "'name' must match"),
    "unknown template key": (
        lambda d: d["templates"]["arithmetic"].update(plus=["{x}"]),
        "unknown template key 'plus'",
    ),
    "typo at top level": (lambda d: d.update(lexikon={}), "unknown top-level field"),
    "duplicate entries": (
        lambda d: d["lexicon"]["arithmetic"].update(units=["apples", "apples"]),
        "entries must be distinct",
    ),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_malformed_domain_files_name_file_and_field(tmp_path, kind):
    change, message = BROKEN[kind]
    path = _break(tmp_path / "farming.yaml", change)
    with pytest.raises(DomainError) as info:
        load_domain_file(path)
    assert str(path) in str(info.value) and message in str(info.value), str(info.value)


def test_unreadable_yaml_is_a_domain_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(DomainError, match="cannot read domain file"):
        load_domain_file(path)


def test_duplicate_domain_names_are_refused(farming, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "copy.yaml").write_text(farming.read_text())
    with pytest.raises(DomainError, match="already defined"):
        available_domains(paths=[farming, other])
    clash = _break(tmp_path / "law.yaml", lambda d: d.update(name="law"))
    with pytest.raises(DomainError, match="already defined"):
        available_domains(paths=[clash])


def test_unknown_domain_and_capacity_errors_are_clear(farming):
    with pytest.raises(DomainError, match="unknown domain 'atlantis'; available"):
        generate_sets("rules", ["atlantis"], 1, seed=0)
    with pytest.raises(DomainError, match="lexicon.deduction.predicates has 12 entries"):
        generate_sets("deduction", ["law"], 1, seed=0, depth=8, distractors=3)
    with pytest.raises(DomainError, match="no such domain file"):
        available_domains(paths=[farming.parent / "missing.yaml"])


def test_bad_knobs_are_clear():
    with pytest.raises(TypeError, match="no knob depht; its knobs are"):
        generate_sets("deduction", ["law"], 1, seed=0, depht=3)
    with pytest.raises(ValueError, match="depth must be in"):
        generate_sets("deduction", ["law"], 1, seed=0, depth=0)
    with pytest.raises(ValueError, match="unknown family"):
        generate_sets("poetry", ["law"], 1, seed=0)
