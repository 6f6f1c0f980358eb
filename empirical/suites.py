"""The quick and full suites: which jobs run, in which order, and how hparams are selected.

A suite runs in stages. For each benchmark: (1) the search stage runs every method
on the search seed with its defaults and ``n_draws`` seeded random draws; (2) the
main stage picks, per method, the candidate with the best *training-domain
validation* accuracy (ties: lower validation loss, then the earlier candidate;
held-out domains are never looked at) and runs it on every seed (the search seed's
run is reused: same arguments, same folder). Then (3) the ablations: IGA settings
(and ERM for the K sweep) on one benchmark, from IGA's defaults, on a few seeds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from empirical.hparams import hparams
from empirical.jobs import ALL_FAMILIES
from empirical.methods import METHODS
from empirical.runner import Job, Scale, Stage, base_config, load_records
from empirical.selection import select_best
from iga.distill.config import PRETRAINED_RECIPE
from iga.isomers import DEFAULT_HELDOUT_DOMAINS, DEFAULT_TRAIN_DOMAINS

# Training domains for the K sweep: the four defaults, then two extra domains from
# empirical/domains/ (the library ships six, two of them held out).
K_SWEEP_DOMAINS = (*DEFAULT_TRAIN_DOMAINS, "farming", "music")


@dataclass(frozen=True)
class Ablation:
    name: str
    method: str = "iga"
    overrides: dict = field(default_factory=dict, hash=False)
    train_domains: tuple[str, ...] = DEFAULT_TRAIN_DOMAINS


def default_ablations() -> tuple[Ablation, ...]:
    out = [
        Ablation("iga (defaults)"),
        Ablation("mask only (no projection)", overrides={"projection": "none"}),
        Ablation("projection only (tau = 0)", overrides={"tau": 0.0}),
        Ablation("tangent projection", overrides={"projection": "tangent"}),
        Ablation("raw variance, tau = 1", overrides={"variance": "raw", "tau": 1.0}),
        Ablation("raw variance, tau = 1e4", overrides={"variance": "raw", "tau": 1e4}),
        *(Ablation(f"tau = {t:g}", overrides={"tau": t}) for t in (0.1, 3.0, 10.0, 100.0)),
        *(Ablation(f"LoRA rank {r}", overrides={"lora_rank": r}) for r in (2, 4, 16)),
        Ablation("factor space", overrides={"space": "factor"}),
    ]
    for k in range(2, len(K_SWEEP_DOMAINS) + 1):
        for method in ("erm", "iga"):
            out.append(Ablation(f"K = {k} ({method})", method, {}, K_SWEEP_DOMAINS[:k]))
    return tuple(out)


ESTIMATOR_TAUS = (1.0, 25.0, 125.0)  # with tau = 5 (the default) a log-range sweep


def estimator_ablations() -> tuple[Ablation, ...]:
    """Issue 14, item 7: batch vs split vs ema across K, then tau for the split estimator.

    In priority order, so a sweep stopped early leaves the most useful settings done:
    the three estimators at K = 4 (the default domains; defaults otherwise), then at
    K = 2, the tau sweep of ``split`` at K = 4, K = 6 (the most expensive runs), and
    K = 3 and K = 5 last, which fill in the curve. Left out to save CPU time: a tau
    sweep of ``ema``.
    """

    def k_sweep(k: int, order=("batch", "split", "ema")) -> list[Ablation]:
        return [
            Ablation(f"K = {k} ({est})", "iga", {"estimator": est}, K_SWEEP_DOMAINS[:k])
            for est in order
        ]

    taus = [
        Ablation(f"split, tau = {t:g}", "iga", {"estimator": "split", "tau": t})
        for t in ESTIMATOR_TAUS
    ]
    # K = 6 last, split first: the full suite has batch at K = 6 (mask 0.024, OOD 0 %).
    return (
        *k_sweep(4),
        *k_sweep(2),
        *taus,
        *k_sweep(6, ("split", "batch", "ema")),
        *k_sweep(3),
        *k_sweep(5),
    )


@dataclass(frozen=True)
class Suite:
    name: str
    benchmarks: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    search_seed: int = 0
    n_draws: int = 0  # random hparam draws per method and benchmark, besides the defaults
    scale: Scale = Scale()
    ablations: tuple[Ablation, ...] = ()
    ablation_benchmark: str = "arithmetic"
    ablation_seeds: tuple[int, ...] = (0, 1, 2)
    # A pretrained student (``Job.student``) and the DistillConfig fields its hparam
    # defaults come from (``empirical.hparams.registry``); None / {}: the built-in student.
    student: str | None = None
    recipe: dict = field(default_factory=dict)
    # Library defaults as they were when the sweep started (hparam candidates, ablation
    # settings, base student), saved in suite.json: later sittings and tables use these,
    # so a default tuned in the meantime never splits one sweep into two.
    resolved: dict = field(default_factory=dict, compare=False)

    def resolve(self) -> Suite:
        """This suite with the current library defaults frozen in (no-op if done already)."""
        if self.resolved:
            return self
        live = replace(self, resolved={})
        return replace(
            self,
            resolved={
                "candidates": {m: live.candidates(m) for m in self.methods},
                "ablations": {a.name: live.ablation_hparams(a) for a in self.ablations},
                "base": asdict(base_config()),
            },
        )

    def candidates(self, method: str) -> list[dict]:
        """The search space actually run: defaults, then draws 1..n_draws."""
        if self.resolved:
            return self.resolved["candidates"][method]
        draws = range(1, self.n_draws + 1)
        r = self.recipe or None
        return [hparams(method, recipe=r), *(hparams(method, seed=d, recipe=r) for d in draws)]

    def ablation_hparams(self, a: Ablation) -> dict:
        if self.resolved:
            return self.resolved["ablations"][a.name]
        return {**hparams(a.method, recipe=self.recipe or None), **a.overrides}

    def job(self, method: str, benchmark: str, seed: int, hp: dict, domains=None) -> Job:
        return Job(
            method,
            benchmark,
            seed,
            hp,
            self.scale,
            tuple(domains or DEFAULT_TRAIN_DOMAINS),
            DEFAULT_HELDOUT_DOMAINS,
            self.resolved.get("base"),
            self.student,
        )

    def search_jobs(self, benchmark: str) -> list[Job]:
        return [
            self.job(m, benchmark, self.search_seed, hp)
            for m in self.methods
            for hp in self.candidates(m)
        ]

    def main_jobs(self, benchmark: str, records: list[dict]) -> list[Job]:
        """Seed by seed (all methods on a seed, then the next seed), so that a sweep stopped
        half-way leaves complete pairs for the paired comparisons."""
        selected = {m: select(records, self, m, benchmark) for m in self.methods}
        return [
            self.job(m, benchmark, s, hp)
            for s in self.seeds
            for m, hp in selected.items()
            if hp is not None
        ]

    def ablation_jobs(self) -> list[tuple[Ablation, Job]]:
        out = []
        for a in self.ablations:
            hp = self.ablation_hparams(a)
            for s in self.ablation_seeds:
                out.append((a, self.job(a.method, self.ablation_benchmark, s, hp, a.train_domains)))
        return out

    def plan(self, out: Path, methods=None, benchmarks=None, ablations: bool = True) -> list[Stage]:
        """The suite's stages in priority order, for ``runner.run_stages``.

        A benchmark's main stage waits for its search stage (it reads the search
        records when it starts); everything else is independent. The ablations come
        right after the main stage of their benchmark, so a sweep run in several
        sittings completes one benchmark with its ablations before the next.
        ``methods`` / ``benchmarks`` / ``ablations=False`` only filter the jobs: the
        suite itself (and what ``suite.json`` says it is) does not change.
        """

        def keep(jobs: list[Job]) -> list[Job]:
            return [
                j
                for j in jobs
                if (methods is None or j.method in methods)
                and (benchmarks is None or j.benchmark in benchmarks)
            ]

        order = list(self.benchmarks)
        if self.ablations and self.ablation_benchmark not in order:
            order.append(self.ablation_benchmark)
        out_stages = []
        for b in order:
            if b in self.benchmarks:
                search, main = f"{b}: search", f"{b}: main"
                out_stages.append(Stage(search, lambda b=b: keep(self.search_jobs(b))))
                out_stages.append(
                    Stage(
                        main,
                        lambda b=b: keep(self.main_jobs(b, load_records(out))),
                        after=(search,),
                    )
                )
            if ablations and self.ablations and b == self.ablation_benchmark:
                out_stages.append(
                    Stage("ablations", lambda: keep([j for _, j in self.ablation_jobs()]))
                )
        return out_stages

    def stages(self, out: Path, **filters) -> Iterator[tuple[str, list[Job]]]:
        """(label, jobs) per stage, one after the other (``plan`` without the overlap)."""
        for st in self.plan(out, **filters):
            yield st.label, st.jobs()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Suite:
        d = dict(d)
        d["scale"] = Scale(**d["scale"])
        d["ablations"] = tuple(
            Ablation(a["name"], a["method"], a["overrides"], tuple(a["train_domains"]))
            for a in d["ablations"]
        )
        for name in ("benchmarks", "methods", "seeds", "ablation_seeds"):
            d[name] = tuple(d[name])
        return cls(**d)

    def save(self, out: Path) -> None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "suite.json").write_text(json.dumps(self.to_dict(), indent=2, default=str))

    @classmethod
    def load(cls, out: Path) -> Suite:
        return cls.from_dict(json.loads((Path(out) / "suite.json").read_text()))


def select(
    records: list[dict], suite: Suite, method: str, benchmark: str, complete: bool = False
) -> dict | None:
    """The candidate hparams with the best training-domain validation score, or None
    (the rule: ``empirical.selection.select_best`` on the search seed's runs).

    With ``complete``, None until every candidate has finished: while a sweep is still
    in its search stage, the best finished candidate is not yet the selected one.
    """
    keys = {
        suite.job(method, benchmark, suite.search_seed, hp).key(): i
        for i, hp in enumerate(suite.candidates(method))
    }
    found = [(r, keys[r["key"]]) for r in records if r["key"] in keys]
    if not found or (complete and len({i for _, i in found}) < len(keys)):
        return None
    found.sort(key=lambda ri: ri[1])  # candidate order: ties go to the earlier candidate
    best = select_best((r, [r["val"]["accuracy"]], [r["val"]["loss"]]) for r, _ in found)
    return best["job"]["hparams"]


# The from-scratch suites' methods: every registered one but the minibatch-IGA variant,
# which the pretrained suite added (their suite.json files froze the list they ran).
FROM_SCRATCH_METHODS = tuple(m for m in METHODS if m != "iga-batch")
# Issue 16: ERM and both IGA variants first, then the baselines in the order of their
# held-out rank in the from-scratch suite, so a budget that runs out cuts the tail.
PRETRAINED_METHODS = (
    "erm", "iga", "iga-batch", "fish", "andmask", "sandmask", "groupdro", "pcgrad", "fishr",
    "vrex", "irm", "ky-gradvar",
)  # fmt: skip


def pretrained_ablations() -> tuple[Ablation, ...]:
    """The K sweep (2 to 6 training domains) for ERM and IGA on the pretrained student."""
    return tuple(
        Ablation(f"K = {k} ({method})", method, {}, K_SWEEP_DOMAINS[:k])
        for k in range(2, len(K_SWEEP_DOMAINS) + 1)
        for method in ("erm", "iga")
    )


SUITES = {
    # The pipeline end to end at the full suite's scale: four methods (ERM, a loss penalty,
    # a gradient mask, IGA), one benchmark, two seeds, defaults (no search).
    "quick": Suite(
        "quick",
        benchmarks=("deduction",),
        methods=("erm", "irm", "andmask", "iga"),
        seeds=(0, 1),
    ),
    # The paper's comparison: every method x 4 benchmarks x 5 seeds, 1 draw + defaults
    # searched on seed 0, and the ablations on deduction x 3 seeds. Benchmarks run in
    # the order below so that a partial run first completes the benchmarks on which the
    # small CPU student learns something under ERM (arithmetic stays near 0% at this size).
    "full": Suite(
        "full",
        benchmarks=("deduction", "ordering", "rules", "arithmetic"),
        methods=FROM_SCRATCH_METHODS,
        seeds=(0, 1, 2, 3, 4),
        n_draws=1,
        scale=Scale(),
        ablations=default_ablations(),
        ablation_benchmark="deduction",
    ),
    # Issue 16: the comparison on SmolLM2-135M, where ERM learns the tasks. One run trains
    # on all four families (as iga distill does) and is scored per family; 100 test sets
    # per family in all six domains; the recipe of the learning curves (PRETRAINED_RECIPE:
    # lr 5e-4, rank 16, 4 sets per step, 500 sets per family); empirical/PROTOCOL.md gives
    # its cost and the order to run it in.
    "pretrained": Suite(
        "pretrained",
        benchmarks=(ALL_FAMILIES,),
        methods=PRETRAINED_METHODS,
        seeds=(0, 1, 2),
        n_draws=1,
        scale=Scale(
            steps=PRETRAINED_RECIPE["steps"],
            batch_sets=PRETRAINED_RECIPE["batch_sets"],
            n_train_sets=PRETRAINED_RECIPE["n_sets"],
            n_val_sets=16,
            n_test_sets=100,
            eval_batch_size=64,
        ),
        student="smollm2-135m",
        recipe=dict(PRETRAINED_RECIPE),
        ablations=pretrained_ablations(),
        ablation_benchmark=ALL_FAMILIES,
    ),
    # Issue 14's ablation alone (no main comparison): estimators x K, tau for split.
    "estimator": Suite(
        "estimator",
        benchmarks=(),
        methods=("iga",),
        seeds=(0, 1, 2),
        ablations=estimator_ablations(),
        ablation_benchmark="deduction",
    ),
}


def get_suite(name: str, seeds=None, scale: str = "") -> Suite:
    """A named suite, optionally with other seeds or another scale (a different sweep)."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose one of {sorted(SUITES)}.")
    suite = SUITES[name]
    changes: dict = {}
    if seeds:
        changes["seeds"] = tuple(seeds)
    if scale:
        changes["scale"] = Scale.parse(scale, suite.scale)
    return replace(suite, **changes)


def check_subset(suite: Suite, methods=None, benchmarks=None) -> None:
    """Raise ValueError naming any method or benchmark that ``suite`` does not run."""
    for what, asked, known in (
        ("methods", methods, suite.methods),
        ("benchmarks", benchmarks, (*suite.benchmarks, suite.ablation_benchmark)),
    ):
        unknown = [x for x in asked or () if x not in known]
        if unknown:
            choices = sorted(set(known))
            raise ValueError(f"{what} {unknown} are not in suite {suite.name!r}; choose {choices}.")
