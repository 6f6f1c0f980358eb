"""Sweeps: hparam draws, job hashing, resume/skip, selection, statistics, tables, one real run."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

import empirical.execute as execute_mod
import empirical.hparams as hp_mod
import empirical.jobs as jobs_mod
from empirical.cli import register
from empirical.hparams import hparams
from empirical.methods import METHODS
from empirical.runner import Job, Scale, load_records, run_jobs
from empirical.stats import holm, mean_ci, paired
from empirical.suites import SUITES, Suite, get_suite, select
from empirical.table import build, latex, markdown
from tests.test_empirical_methods import TINY_BASE

TINY_SCALE = Scale(
    steps=2, batch_sets=2, n_train_sets=4, n_val_sets=2, n_test_sets=2, max_new_tokens=8
)


def test_hparam_draws_are_seeded_per_name_and_stable_when_names_are_added(monkeypatch):
    for m in METHODS:
        assert hparams(m) == hparams(m), m
        assert hparams(m, seed=1) == hparams(m, seed=1)
    assert hparams("iga", seed=1)["tau"] != hparams("iga", seed=2)["tau"]
    before = hparams("vrex", seed=3)
    original = hp_mod.registry

    def extended(method, recipe=None):
        reg = original(method, recipe)
        return {"a_new_name": (0.0, lambda r: r.random()), **reg}

    monkeypatch.setattr(hp_mod, "registry", extended)
    after = hp_mod.hparams("vrex", seed=3)
    assert {k: after[k] for k in before} == before


def test_defaults_follow_distill_config():
    from iga.distill.run import DistillConfig

    d = DistillConfig()
    for m in METHODS:
        assert hparams(m)["lr"] == d.lr and hparams(m)["lora_rank"] == d.lora_rank
    assert hparams("iga")["tau"] == d.iga.tau


def test_job_key_depends_on_every_argument():
    job = Job("erm", "arithmetic", 0, hparams("erm"))
    assert job.key() == Job("erm", "arithmetic", 0, hparams("erm")).key()
    variants = [
        replace(job, seed=1),
        replace(job, method="iga"),
        replace(job, benchmark="rules"),
        replace(job, hparams={**job.hparams, "lr": 1e-3}),
        replace(job, scale=replace(job.scale, steps=7)),
        replace(job, train_domains=job.train_domains[:2]),
        replace(job, student="smollm2-135m"),
        replace(job, student="smollm2-135m", benchmark="all"),
    ]
    assert len({job.key(), *(v.key() for v in variants)}) == len(variants) + 1
    for j in (job, variants[-1]):
        assert Job.from_dict(json.loads(json.dumps(j.to_dict()))).key() == j.key()


def test_committed_records_keep_their_keys():
    """Every committed run folder is still named by its job's key: a new Job field (the
    pretrained ``student``) must not rename the records of the built-in student."""
    from pathlib import Path

    folders = sorted(Path(__file__).parents[1].glob("results/empirical/*/records/*/job.json"))
    assert len(folders) > 100
    for path in folders:
        assert Job.from_dict(json.loads(path.read_text())).key() == path.parent.name, path


def test_a_benchmark_is_a_family_or_all():
    from empirical.jobs import families_of
    from iga.isomers import FAMILIES

    assert families_of("all") == FAMILIES and families_of("rules") == ("rules",)
    with pytest.raises(ValueError, match="unknown benchmark 'logic'"):
        families_of("logic")


def _fake_record(job: Job, val=0.5, ood=0.4, id_=0.6, lcs=0.1) -> dict:
    return {
        "key": job.key(),
        "job": job.to_dict(),
        "val": {"accuracy": val, "loss": 1.0},
        "test": {"accuracy_id": id_, "accuracy_ood": ood, "lcs": lcs, "answer_consistency": 0.5},
        "train": {"seconds_per_step": 0.1, "eval_seconds": 1.0},
    }


def test_run_jobs_skips_finished_runs_and_duplicates(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(execute_mod, "execute", lambda job: calls.append(job) or _fake_record(job))
    jobs = [Job("erm", "arithmetic", s, hparams("erm"), TINY_SCALE) for s in (0, 1, 1)]
    assert len(run_jobs(jobs, tmp_path, log=lambda s: None)) == 2
    assert len(calls) == 2
    assert run_jobs(jobs, tmp_path, log=lambda s: None) == []
    assert len(calls) == 2
    assert all((tmp_path / "records" / j.key() / "done").is_file() for j in jobs)
    # an unfinished folder (no done marker) is rerun
    (tmp_path / "records" / jobs[0].key() / "done").unlink()
    run_jobs(jobs, tmp_path, log=lambda s: None)
    assert len(calls) == 3 and len(load_records(tmp_path)) == 2


def test_a_failing_job_does_not_stop_the_sweep(tmp_path, monkeypatch):
    def execute(job):
        if job.seed == 0:
            raise RuntimeError("boom")
        return _fake_record(job)

    monkeypatch.setattr(execute_mod, "execute", execute)
    logs = []
    jobs = [Job("erm", "arithmetic", s, hparams("erm"), TINY_SCALE) for s in (0, 1)]
    assert len(run_jobs(jobs, tmp_path, log=logs.append)) == 1
    assert any("FAILED" in line and "boom" in line for line in logs)


def test_run_stages_overlaps_independent_stages_and_waits_for_dependencies(tmp_path, monkeypatch):
    """A long last run of stage A must not idle the other worker: independent stage C
    runs meanwhile; stage B (after A) makes its job list only once A is finished."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from empirical.runner import Stage, is_done, run_stages

    release_long = threading.Event()

    def execute(job):
        if job.seed == 0:  # A's long run finishes only after C's run has finished
            assert release_long.wait(10), "stage C did not run while stage A's run was busy"
        if job.seed == 2:
            release_long.set()
        return _fake_record(job)

    monkeypatch.setattr(execute_mod, "execute", execute)
    job = lambda seed: Job("erm", "arithmetic", seed, hparams("erm"), TINY_SCALE)  # noqa: E731
    seen_when_b_expands = []

    def b_jobs():
        seen_when_b_expands.append([is_done(tmp_path, job(s)) for s in (0, 1)])
        return [job(3), job(0)]  # job(0) is A's: finished, so not rerun

    stages = [
        Stage("A", lambda: [job(0), job(1)]),
        Stage("B", b_jobs, after=("A",)),
        Stage("C", lambda: [job(2)]),
    ]
    logs = []
    with ThreadPoolExecutor(2) as pool:
        records = run_stages(stages, tmp_path, 2, logs.append, executor=pool)
    assert sorted(r["job"]["seed"] for r in records) == [0, 1, 2, 3]
    assert seen_when_b_expands == [[True, True]]
    assert [line for line in logs if line.startswith("==")] == [
        "== A: 2 runs to do",
        "== C: 1 runs to do",
        "== B: 1 runs to do",
    ]
    # Stage order is priority: B, released once A is done, runs before C's queued jobs.
    monkeypatch.setattr(execute_mod, "execute", _fake_record)
    logs = []
    stages = [
        Stage("A", lambda: [job(10), job(11)]),
        Stage("B", lambda: [job(13)], after=("A",)),
        Stage("C", lambda: [job(12), job(14)]),
    ]
    run_stages(stages, tmp_path, 1, logs.append)
    order = [int(line.split(" seed ")[1].split()[0]) for line in logs if line.startswith("[")]
    assert order == [10, 11, 13, 12, 14]
    with pytest.raises(ValueError, match="unknown stages"):
        run_stages([Stage("X", list, after=("Y",))], tmp_path)
    with pytest.raises(ValueError, match="cycle"):
        run_stages([Stage("X", list, after=("Y",)), Stage("Y", list, after=("X",))], tmp_path)


def _suite(**kw) -> Suite:
    base = Suite("t", ("arithmetic",), ("erm", "iga"), (0, 1, 2), n_draws=2, scale=TINY_SCALE)
    return replace(base, **kw)


def test_selection_uses_training_domain_validation_only(tmp_path):
    suite = _suite()
    cands = suite.candidates("iga")
    records = [
        # the best *test* (held-out) accuracy must not matter
        _fake_record(suite.job("iga", "arithmetic", 0, cands[0]), val=0.2, ood=0.99),
        _fake_record(suite.job("iga", "arithmetic", 0, cands[1]), val=0.7, ood=0.10),
        _fake_record(suite.job("iga", "arithmetic", 0, cands[2]), val=0.5, ood=0.50),
        # a seed-0 run outside the candidate list (an ablation) is ignored
        _fake_record(suite.job("iga", "arithmetic", 0, {**cands[0], "tau": 9.0}), val=1.0),
    ]
    assert select(records, suite, "iga", "arithmetic") == cands[1]
    assert select(records, suite, "erm", "arithmetic") is None
    jobs = [j for j in suite.main_jobs("arithmetic", records) if j.method == "iga"]
    assert [j.seed for j in jobs] == [0, 1, 2] and all(j.hparams == cands[1] for j in jobs)
    assert jobs[0].key() == records[1]["key"]  # the search run is reused, not rerun


def test_mean_ci_and_holm_against_hand_computation():
    mean, half, n = mean_ci([1.0, 2.0, 3.0, 6.0, None, math.nan])
    assert n == 4
    sd = np.std([1, 2, 3, 6], ddof=1)
    assert mean == 3.0 and math.isclose(half, 3.182446305284263 * sd / 2, rel_tol=1e-9)
    comps = [paired({0: 1.0, 1: 2.0}, {0: 0.0, 1: 0.0}, "ood", "b", f"m{i}") for i in range(3)]
    for c, p in zip(comps, (0.01, 0.04, 0.03)):
        c.p = p
    one_seed = paired({0: 1.0}, {0: 0.0, 1: 0.0}, "ood", "b", "m3")  # a sweep still running
    holm([*comps, one_seed])
    # Holm by hand: sorted p 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    # (the one-seed comparison is not in the family: m = 3, not 4)
    assert [round(c.p_holm, 10) for c in comps] == [0.03, 0.06, 0.06]
    assert [c.verdict for c in comps] == ["win", "tie", "tie"]
    assert one_seed.n == 1 and one_seed.verdict == "untested" and math.isnan(one_seed.p_holm)


def test_paired_comparison_sign_effect_size_and_lcs_direction():
    iga = {0: 0.5, 1: 0.6, 2: 0.7, 3: 0.65}
    base = {0: 0.4, 1: 0.55, 2: 0.5, 3: 0.6, 4: 0.9}  # seed 4 is unpaired
    c = paired(iga, base, "ood", "b", "erm")
    d = np.array([0.1, 0.05, 0.2, 0.05])
    assert c.n == 4 and math.isclose(c.diff, d.mean())
    assert math.isclose(c.cohen_dz, d.mean() / d.std(ddof=1))
    lcs = paired({0: 0.1, 1: 0.2}, {0: 0.3, 1: 0.5}, "lcs", "b", "erm")
    assert lcs.diff > 0  # lower LCS for IGA favours IGA


def test_the_pretrained_suite_is_issue_16s():
    """SmolLM2-135M, one run per (method, seed) over all four families, 100 test sets per
    family, the 12 methods with ERM and both IGA variants first, hparams around the
    pretrained recipe, and the K sweep for ERM and IGA."""
    from iga.distill.config import PRETRAINED_RECIPE

    suite = SUITES["pretrained"]
    assert suite.student == "smollm2-135m" and suite.benchmarks == ("all",)
    assert suite.methods[:3] == ("erm", "iga", "iga-batch") and len(suite.methods) == 12
    assert set(suite.methods) == set(METHODS) and len(suite.seeds) >= 3 and suite.n_draws == 1
    assert suite.scale.n_test_sets >= 100 and suite.scale.n_val_sets > 0
    for m in suite.methods:
        defaults, draw = suite.candidates(m)
        assert defaults["lr"] == PRETRAINED_RECIPE["lr"] != draw["lr"], m
        assert defaults["lora_rank"] == PRETRAINED_RECIPE["lora_rank"], m
    assert [c["estimator"] for c in suite.candidates("iga-batch")] == ["batch", "batch"]
    assert suite.candidates("iga")[0]["estimator"] == "split"
    job = suite.search_jobs("all")[0]
    assert job.student == "smollm2-135m" and job.benchmark == "all"
    names = [a.name for a in suite.ablations]
    assert "K = 2 (erm)" in names and "K = 6 (iga)" in names
    assert Suite.from_dict(json.loads(json.dumps(suite.resolve().to_dict()))) == suite.resolve()


def _per_family(job: Job, shift: float) -> dict:
    """A fake record of a run over all families: family i scores 0.1 * i + shift."""
    record = _fake_record(job)
    record["test"]["per_family"] = {
        f: {"id": 0.5 + 0.1 * i + shift, "ood": 0.1 * i + shift, "lcs": 0.2 - shift / 10,
            "answer_consistency": 0.5}
        for i, f in enumerate(("arithmetic", "deduction", "ordering", "rules"))
    }  # fmt: skip
    return record


def test_a_suite_over_all_families_is_tabled_per_family(tmp_path, monkeypatch):
    suite = _suite(benchmarks=("all",), n_draws=0)
    suite.save(tmp_path)
    rng = np.random.default_rng(1)

    def execute(job):
        return _per_family(job, (0.2 if job.method == "iga" else 0.0) + 0.01 * rng.random())

    monkeypatch.setattr(execute_mod, "execute", execute)
    for _, jobs in suite.stages(tmp_path):
        run_jobs(jobs, tmp_path, log=lambda s: None)
    result = build(tmp_path)
    assert result["benchmarks"] == ["arithmetic", "deduction", "ordering", "rules"]
    assert result["coverage"]["main_runs"] == result["coverage"]["main_expected"] == 2 * 4 * 3
    erm_ood = result["main"]["ood"]["erm"]
    assert erm_ood["ordering"]["mean"] == pytest.approx(20.0, abs=1.0)  # 0.1 * 2, in %
    assert erm_ood["ordering"]["n"] == 3
    ood = result["comparisons"]["ood"]
    assert [c["benchmark"] for c in ood] == result["benchmarks"]
    assert all(c["verdict"] == "win" for c in ood)
    assert "| method | arithmetic | deduction | ordering | rules | mean |" in markdown(result)


def test_a_run_without_per_family_scores_is_named(tmp_path, monkeypatch):
    from empirical.table import TableInputError

    suite = _suite(benchmarks=("all",), n_draws=0, seeds=(0,))
    suite.save(tmp_path)
    monkeypatch.setattr(execute_mod, "execute", _fake_record)  # no per_family
    for _, jobs in suite.stages(tmp_path):
        run_jobs(jobs, tmp_path, log=lambda s: None)
    with pytest.raises(TableInputError, match="made before per-family scoring"):
        build(tmp_path)


def _fixture(tmp_path, monkeypatch) -> Suite:
    suite = _suite(n_draws=0, ablations=SUITES["full"].ablations[:2])
    suite.save(tmp_path)
    rng = np.random.default_rng(0)

    def execute(job):
        bonus = 0.2 if job.method == "iga" else 0.0
        return _fake_record(job, ood=0.3 + bonus + 0.01 * rng.random(), lcs=0.1 - bonus / 4)

    monkeypatch.setattr(execute_mod, "execute", execute)
    for _, jobs in suite.stages(tmp_path):
        run_jobs(jobs, tmp_path, log=lambda s: None)
    return suite


def test_table_from_fixture_records(tmp_path, monkeypatch):
    _fixture(tmp_path, monkeypatch)
    result = build(tmp_path)
    assert result["coverage"]["main_runs"] == result["coverage"]["main_expected"] == 6
    assert result["main"]["ood"]["iga"]["arithmetic"]["n"] == 3
    ood = result["comparisons"]["ood"]
    assert len(ood) == 1 and ood[0]["baseline"] == "erm" and ood[0]["verdict"] == "win"
    text = markdown(result)
    assert "| iga |" in text and "1 wins, 0 ties, 0 losses" in text and "Ablations" in text
    assert "\\begin{tabular}" in latex(result)


def test_a_cell_waits_for_its_whole_search(tmp_path, monkeypatch):
    """With one of two search candidates finished, the table has no cell for it yet."""
    suite = _suite(n_draws=1, seeds=(0, 1))
    suite.save(tmp_path)
    monkeypatch.setattr(execute_mod, "execute", _fake_record)
    first = suite.job("erm", "arithmetic", 0, suite.candidates("erm")[0])
    run_jobs([first, *suite.search_jobs("arithmetic")[2:]], tmp_path, log=lambda s: None)
    result = build(tmp_path)
    assert result["main"]["ood"]["erm"]["arithmetic"]["n"] == 0
    assert result["main"]["ood"]["iga"]["arithmetic"]["n"] == 1
    run_jobs(suite.search_jobs("arithmetic"), tmp_path, log=lambda s: None)
    assert build(tmp_path)["main"]["ood"]["erm"]["arithmetic"]["n"] == 1


def test_cli_table_writes_json_and_latex(tmp_path, monkeypatch, capsys):
    import argparse

    _fixture(tmp_path, monkeypatch)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "experiments",
            "table",
            "--records",
            str(tmp_path),
            "--json",
            str(tmp_path / "t.json"),
            "--latex",
            str(tmp_path / "t.tex"),
        ]
    )
    assert args.func(args) == 0
    assert "OOD accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "t.json").read_text())["suite"] == "t"
    assert "tabular" in (tmp_path / "t.tex").read_text()


def test_ablations_follow_their_benchmark_and_subsets_only_filter(tmp_path, monkeypatch):
    suite = _suite(
        benchmarks=("arithmetic", "rules"),
        n_draws=0,
        ablations=SUITES["full"].ablations[:2],
        ablation_benchmark="arithmetic",
    )
    labels = [label for label, _ in suite.stages(tmp_path)]
    assert labels == [
        "arithmetic: search",
        "arithmetic: main",
        "ablations",
        "rules: search",
        "rules: main",
    ]
    only = dict(suite.stages(tmp_path, methods=("erm",), benchmarks=("rules",)))
    assert {j.method for jobs in only.values() for j in jobs} == {"erm"}
    assert {j.benchmark for jobs in only.values() for j in jobs} == {"rules"}
    assert "ablations" not in dict(suite.stages(tmp_path, ablations=False))

    # The CLI's subset flags run a part of the saved suite; suite.json stays the same.
    import argparse

    monkeypatch.setattr(execute_mod, "execute", _fake_record)
    monkeypatch.setattr("empirical.suites.SUITES", {"quick": suite})
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())

    def run(*flags):
        args = parser.parse_args(["experiments", "run", "--out", str(tmp_path), *flags])
        return args.func(args)

    assert run() == 0
    saved = (tmp_path / "suite.json").read_text()
    n = len(load_records(tmp_path))
    assert run("--methods", "erm", "--benchmarks", "rules", "--no-ablations") == 0
    assert (tmp_path / "suite.json").read_text() == saved
    assert len(load_records(tmp_path)) == n  # everything was already done
    assert run("--methods", "fish") == 2  # not in the suite: an error, nothing written
    assert (tmp_path / "suite.json").read_text() == saved


def test_suites_are_complete_and_scalable():
    full = SUITES["full"]
    assert set(full.methods) == set(METHODS) - {"iga-batch"} and len(full.benchmarks) == 4
    assert len(full.seeds) >= 5 and full.n_draws >= 1
    names = " ".join(a.name for a in full.ablations)
    for part in (
        "mask only",
        "projection only",
        "raw variance",
        "tau =",
        "LoRA rank",
        "factor space",
        "K = 2",
        "K = 6",
    ):
        assert part in names
    big = get_suite("full", seeds=[0, 1], scale="steps=2000,n_test_sets=200")
    assert big.scale.steps == 2000 and big.seeds == (0, 1)
    with pytest.raises(ValueError, match="unknown scale field"):
        get_suite("quick", scale="epochs=3")


@pytest.mark.parametrize("domains", [("mathematics", "law"), ("mathematics", "law", "farming")])
def test_one_real_run_end_to_end(tmp_path, monkeypatch, domains):
    monkeypatch.setenv("IGA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(jobs_mod, "base_config", lambda: TINY_BASE)
    job = Job("iga", "arithmetic", 0, hparams("iga"), replace(TINY_SCALE, max_length=512), domains)
    record = execute_mod.run_job(job, tmp_path)
    assert record["num_domains"] == len(domains)
    t = record["test"]
    assert set(t["per_domain"]) == {*domains, "cooking", "sports"}
    assert 0 <= t["accuracy_ood"] <= 1 and t["lcs"] >= 0 and record["train"]["seconds_per_step"] > 0
    assert (tmp_path / "records" / job.key() / "done").is_file()


@pytest.fixture(scope="module")
def tiny_pretrained(tmp_path_factory) -> str:
    """A random 1-layer Llama with a BPE trained on every family, saved as a local folder:
    what ``Job.student`` points at in place of SmolLM2-135M."""
    from iga.isomers import FAMILIES
    from tests.tiny_student import save_tiny_student

    return save_tiny_student(tmp_path_factory.mktemp("pretrained") / "tiny", FAMILIES, 3, 4)


def test_a_run_on_a_pretrained_student_covers_every_family(tmp_path, tiny_pretrained):
    scale = replace(TINY_SCALE, max_length=512, n_test_sets=1)
    job = Job("erm", "all", 0, hparams("erm"), scale, student=tiny_pretrained)
    record = execute_mod.run_job(job, tmp_path)
    per_family = record["test"]["per_family"]
    assert set(per_family) == {"arithmetic", "deduction", "ordering", "rules"}
    assert all({"id", "ood", "lcs", "answer_consistency"} <= set(v) for v in per_family.values())
    assert record["base"] == tiny_pretrained and record["job"]["student"] == tiny_pretrained
    assert record["device"] == "cpu"  # no GPU here; run_device() picks one where visible
    assert record["test"]["n_examples"] == 4 * 6  # one test set per family, six domains


def test_resolved_suite_keeps_its_defaults_when_the_library_changes(tmp_path, monkeypatch):
    suite = _suite(ablations=SUITES["full"].ablations[:2]).resolve()
    suite.save(tmp_path)
    keys = [j.key() for j in suite.search_jobs("arithmetic")]
    ablation_keys = [j.key() for _, j in suite.ablation_jobs()]
    original = hp_mod.registry
    monkeypatch.setattr(
        hp_mod,
        "registry",
        lambda m, recipe=None: {**original(m, recipe), "lr": (0.123, lambda r: 0.123)},
    )
    assert hparams("erm")["lr"] == 0.123
    loaded = Suite.load(tmp_path)
    assert [j.key() for j in loaded.search_jobs("arithmetic")] == keys
    assert [j.key() for _, j in loaded.ablation_jobs()] == ablation_keys
    assert [j.key() for j in replace(suite, resolved={}).search_jobs("arithmetic")] != keys


def test_cli_run_then_resume_skips_everything(tmp_path, monkeypatch, capsys):
    import argparse

    calls = []
    monkeypatch.setattr(execute_mod, "execute", lambda job: calls.append(job) or _fake_record(job))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    argv = ["experiments", "run", "--suite", "quick", "--out", str(tmp_path), "--seeds", "0,1"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    n = len(calls)
    assert n == len(SUITES["quick"].methods) * 2  # search on seed 0, then seed 1
    args = parser.parse_args(argv)
    assert args.func(args) == 0 and len(calls) == n
    assert "wins" in markdown(build(tmp_path))


def test_iga_command_registers_experiments():
    from iga.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert "experiments" in sub.choices


def test_paper_figures_finds_the_setting_the_suite_selected(tmp_path, monkeypatch):
    """One selection rule: paper_figures, reading only the records and suite.json, picks the
    suite's choice, on validation (ERM) and on a tie (IGA: the earlier candidate)."""
    from paper_figures.groups import _hkey, group_runs
    from paper_figures.load import load_empirical

    suite = _suite(n_draws=2, seeds=(0, 1)).resolve()
    suite.save(tmp_path)
    best_erm = suite.candidates("erm")[2]

    def execute(job):  # ERM: the second draw validates best; IGA: every candidate ties
        val = 0.9 if job.hparams == best_erm else (0.5 if job.method == "iga" else 0.3)
        return _fake_record(job, val=val, ood=0.9 - val)  # held-out accuracy points the other way

    monkeypatch.setattr(execute_mod, "execute", execute)
    for _, jobs in suite.stages(tmp_path):
        run_jobs(jobs, tmp_path, log=lambda s: None)
    records = load_records(tmp_path)
    assert select(records, suite, "erm", "arithmetic") == best_erm
    assert select(records, suite, "iga", "arithmetic") == suite.candidates("iga")[0]
    emp = load_empirical(tmp_path)
    groups = group_runs(emp.runs, emp.search_seed, emp.candidates)
    for m in suite.methods:
        main = [r for r in groups.main if r.method == m]
        assert {_hkey(r.hparams) for r in main} == {_hkey(select(records, suite, m, "arithmetic"))}
        assert sorted(r.seed for r in main) == [0, 1]
    # Companion: without the suite's candidate order, IGA's tie goes to a search draw that
    # ran on the search seed only, and the benchmark drops out as incomplete.
    blind = group_runs(emp.runs, emp.search_seed, None)
    assert blind.incomplete == {"arithmetic": ["iga"]}
