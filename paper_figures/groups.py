"""Which empirical runs answer which question: main comparison, ablations, K sweep.

Records carry no suite label, so the roles are read off the jobs, the way
``empirical/suites.py`` builds them:

* **Defaults** per method: the hparams of its K-sweep runs (the sweep runs every
  method at its defaults), else ``empirical.hparams.hparams(method)``.
* **Main**: per (method, benchmark) at the usual K, the hparams setting the suite
  selected, found again with the suite's own rule (``empirical.selection``: best
  training-domain validation accuracy on the search seed, then the lower validation
  loss; never a held-out number), with its runs on every seed.
* **Ablations**: IGA runs at the usual K whose hparams differ from IGA's defaults
  only in one studied knob (tau, variance, projection, space, LoRA rank).
* **K sweep**: each method at its defaults, grouped by K, on every benchmark
  that has more than one K.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from empirical.selection import select_best
from paper_figures.load import Run

ABLATION_KNOBS = frozenset({"tau", "variance", "projection", "space", "lora_rank"})
# A benchmark enters the main comparison once every method has this many seeds on it;
# before that (a sweep still in its search stage) its cells would mix one-seed search
# runs with finished ones, and means over benchmarks would mix methods' coverage.
MIN_MAIN_SEEDS = 2


def _hkey(hp: dict) -> str:
    return json.dumps(hp, sort_keys=True, default=str)


def _diff(hp: dict, base: dict) -> dict:
    """Fields of ``hp`` that differ from ``base`` (missing fields count as different)."""
    keys = set(hp) | set(base)
    return {k: hp.get(k) for k in keys if hp.get(k) != base.get(k)}


def ablation_label(diff: dict, hp: dict) -> tuple[str, str] | None:
    """(kind, label) of an IGA run (hparams ``hp``) differing from the defaults by ``diff``."""
    if not set(diff) <= ABLATION_KNOBS:
        return None
    if not diff:
        return "defaults", "IGA defaults"
    if diff.get("variance") == "raw" and set(diff) <= {"variance", "tau"}:
        return "variant", f"raw variance, tau = {hp.get('tau', float('nan')):g}"
    if set(diff) == {"tau"}:
        if diff["tau"] == 0:
            return "variant", "projection only (tau = 0)"
        return "tau", f"tau = {diff['tau']:g}"
    if set(diff) == {"projection"}:
        name = {"none": "mask only (no projection)", "tangent": "tangent projection"}
        return "variant", name.get(diff["projection"], f"projection = {diff['projection']}")
    if set(diff) == {"space"}:
        return "variant", f"{diff['space']} space"
    if set(diff) == {"lora_rank"}:
        return "rank", f"LoRA rank {diff['lora_rank']}"
    return None


@dataclass
class Groups:
    k_default: int
    defaults: dict[str, dict]
    main: list[Run] = field(default_factory=list)
    ablations: dict[str, list[Run]] = field(default_factory=dict)  # kind -> runs
    k_sweep: list[Run] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # run key -> ablation label
    # benchmark -> methods with fewer than MIN_MAIN_SEEDS seeds (left out of `main`)
    incomplete: dict[str, list[str]] = field(default_factory=dict)

    def benchmarks(self) -> list[str]:
        return sorted({r.benchmark for r in self.main})

    def methods(self) -> list[str]:
        return sorted({r.method for r in self.main})


def _defaults(runs: Sequence[Run], k_default: int) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for method in sorted({r.method for r in runs}):
        swept = Counter(_hkey(r.hparams) for r in runs if r.method == method and r.K != k_default)
        if swept:
            out[method] = json.loads(swept.most_common(1)[0][0])
            continue
        try:  # no K sweep yet: the registry's defaults (as the suite read them)
            from empirical.hparams import hparams

            out[method] = hparams(method)
        except (ImportError, ValueError):
            continue
    return out


def _select_main(runs: Iterable[Run], search_seed: int, candidates: list[dict] | None) -> list[Run]:
    """The runs of the setting the suite selected: ``empirical.selection.select_best`` on the
    search-seed runs of the suite's ``candidates`` in its order (from suite.json); without
    them, of every setting present, ordered by its sorted hparams."""
    by_setting: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by_setting[_hkey(r.hparams)].append(r)
    if candidates is None:
        order = sorted(by_setting)
    else:
        order = [k for k in (_hkey(hp) for hp in candidates) if k in by_setting]
    searched = []
    for key in order:
        rs = by_setting[key]
        search = [r for r in rs if r.seed == search_seed]
        searched.append((rs, [r.val_acc for r in search], [r.val_loss for r in search]))
    return select_best(searched) or []


def group_runs(
    runs: Sequence[Run], search_seed: int = 0, candidates: dict[str, list[dict]] | None = None
) -> Groups:
    """The roles of ``runs`` (module doc); ``search_seed`` and ``candidates`` (method -> the
    hparams searched, in order) are the suite's, from its suite.json where it has them."""
    k_default = Counter(r.K for r in runs).most_common(1)[0][0]
    groups = Groups(k_default, _defaults(runs, k_default))
    cells: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for r in runs:
        if r.K == k_default:
            cells[(r.method, r.benchmark)].append(r)
    iga_default = groups.defaults.get("iga")
    variants: dict[str, list[tuple[str, str, Run]]] = defaultdict(list)  # benchmark -> runs
    if iga_default is not None:
        for r in cells_runs(cells, "iga"):
            found = ablation_label(_diff(r.hparams, iga_default), r.hparams)
            if found:
                variants[r.benchmark].append((*found, r))
    # An ablation benchmark is one with a studied variant; a variant is never a main run.
    for found in variants.values():
        seeds = {r.seed for kind, _, r in found if kind != "defaults"}
        if seeds:  # the defaults on the ablation's seeds only: every bar averages the same
            for kind, name, r in found:
                if kind == "defaults" and r.seed not in seeds:
                    continue
                groups.ablations.setdefault(kind, []).append(r)
                groups.labels[r.key] = name
    studied = {r.key for kind, rs in groups.ablations.items() if kind != "defaults" for r in rs}
    for (method, _), rs in sorted(cells.items()):
        searched = (candidates or {}).get(method)
        groups.main += _select_main([r for r in rs if r.key not in studied], search_seed, searched)
    _drop_incomplete(groups)
    groups.k_sweep = _k_sweep(runs, groups)
    return groups


def _drop_incomplete(groups: Groups) -> None:
    """Leave out of ``groups.main`` every benchmark on which some method has fewer than
    MIN_MAIN_SEEDS seeds; ``groups.incomplete`` says which and why (for the captions)."""
    methods = {r.method for r in groups.main}
    for bench in sorted({r.benchmark for r in groups.main}):
        seeds = {
            m: {r.seed for r in groups.main if (r.method, r.benchmark) == (m, bench)}
            for m in methods
        }
        short = sorted(m for m, s in seeds.items() if len(s) < MIN_MAIN_SEEDS)
        if short:
            groups.incomplete[bench] = short
    groups.main = [r for r in groups.main if r.benchmark not in groups.incomplete]


def incomplete_note(groups: Groups) -> str:
    """A caption sentence naming the benchmarks left out of the main comparison, or ''."""
    if not groups.incomplete:
        return ""
    parts = [
        f"{b} ({len(ms)} method{'s' if len(ms) > 1 else ''} with fewer than {MIN_MAIN_SEEDS} seeds)"
        for b, ms in groups.incomplete.items()
    ]
    return " Not shown, their runs still in progress: " + "; ".join(parts) + "."


def _k_sweep(runs: Sequence[Run], groups: Groups) -> list[Run]:
    """Methods run at other K than the usual one, at their defaults; the usual-K point
    keeps only the sweep's seeds, so every point averages the same seeds."""
    swept = [r for r in runs if r.K != groups.k_default]
    cells = {(r.method, r.benchmark) for r in swept}
    seeds = {(r.method, r.benchmark): set() for r in swept}
    for r in swept:
        seeds[(r.method, r.benchmark)].add(r.seed)
    return [
        r
        for r in runs
        if (r.method, r.benchmark) in cells
        and r.hparams == groups.defaults.get(r.method)
        and (r.K != groups.k_default or r.seed in seeds[(r.method, r.benchmark)])
    ]


def cells_runs(cells: dict, method: str) -> list[Run]:
    return [r for (m, _), rs in sorted(cells.items()) if m == method for r in rs]


def by(runs: Iterable[Run], *fields_: str) -> dict[tuple, list[Run]]:
    """Runs grouped by the values of ``fields_`` (attribute names), keys sorted."""
    out: dict[tuple, list[Run]] = defaultdict(list)
    for r in runs:
        out[tuple(getattr(r, f) for f in fields_)].append(r)
    return dict(sorted(out.items(), key=lambda kv: tuple(str(k) for k in kv[0])))


def ablation_names(groups: Groups, runs: list) -> list[str]:
    """Labels in reading order: defaults, variants, then tau and rank by value."""
    kinds = {r.key: k for k, rs in groups.ablations.items() for r in rs}
    order = ("defaults", "variant", "tau", "rank")
    first = {}
    for r in runs:
        value = r.hp("tau") if kinds[r.key] == "tau" else r.hp("lora_rank", 0)
        first.setdefault(groups.labels[r.key], (order.index(kinds[r.key]), float(value or 0)))
    return sorted(first, key=lambda n: (*first[n], n))
