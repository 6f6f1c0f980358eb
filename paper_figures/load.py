"""Read the stored results: theory JSON, empirical JSONL records, the step benchmark.

Formats are those the writers produce:

* ``theory/cli.py --out DIR``: ``DIR/figures.json`` maps a check name
  (``k_scaling[regression]``, ``rate[linear]``, ``tightness[lora]``, ...) to its
  figure data; ``DIR/results.json`` holds the verdicts, settings and seed.
* ``empirical/records.py``: one JSON object per line of ``records/<hash>/record.jsonl``
  (``job`` = method, benchmark, seed, hparams, train/held-out domains; ``test`` =
  ``iga.distill.evaluate.EvalResult.to_dict()``; ``train.seconds_per_step``). Any
  ``*.jsonl`` under the empirical folder is read; records are deduplicated by
  ``key`` (the last one wins, as in ``empirical.records.load_records``); ``suite.json``
  beside them gives the search seed and the candidates the suite selected among.
* ``iga bench step --json PATH``: ``results[method].median_s``, ``iqr_s``,
  ``time_x_erm``.

A missing file or field raises ``MissingInput`` naming it; the build catches
that per figure, prints it and goes on. A malformed record line is skipped with
a note (a record being written while we read must not stop the build).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


class MissingInput(Exception):
    """A file or field a figure needs is not there; the message names it."""


def need(mapping, *path: str, where: str):
    """``mapping[path[0]][path[1]]...`` or ``MissingInput`` naming ``where`` and the field."""
    value = mapping
    for i, key in enumerate(path):
        if not isinstance(value, dict) or key not in value:
            dotted = ".".join(path[: i + 1])
            raise MissingInput(f"{where}: missing field {dotted!r}")
        value = value[key]
    return value


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise MissingInput(f"missing file {rel(path)}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MissingInput(f"{path}: not valid JSON ({e})") from e
    except OSError as e:
        raise MissingInput(f"{path}: unreadable ({e.strerror or e})") from e


def rel(path: Path) -> str:
    """A path as the caption shows it: relative to the working directory when it can."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------- theory
@dataclass
class Theory:
    """``figures.json`` (figure data per check) and ``results.json`` (verdicts)."""

    folder: Path
    figures: dict
    results: dict | None

    @property
    def figures_path(self) -> Path:
        return self.folder / "figures.json"

    def check(self, name: str) -> dict:
        """Figure data of check ``name``, or ``MissingInput`` naming the file and check."""
        if name not in self.figures:
            raise MissingInput(f"{rel(self.figures_path)}: no entry {name!r}")
        return self.figures[name]

    def names(self, prefix: str) -> list[str]:
        """Check names starting with ``prefix`` (``"k_scaling["``), in file order."""
        return [n for n in self.figures if n.startswith(prefix)]

    def verdict(self, name: str) -> dict | None:
        for c in (self.results or {}).get("checks", []):
            if c.get("name") == name:
                return c
        return None

    def sources(self) -> list[str]:
        files = [self.figures_path] + ([self.folder / "results.json"] if self.results else [])
        return [rel(p) for p in files]


def load_theory(folder: Path) -> Theory:
    folder = Path(folder)
    figures = _read_json(folder / "figures.json")
    results_path = folder / "results.json"
    results = _read_json(results_path) if results_path.is_file() else None
    return Theory(folder, figures, results)


# ----------------------------------------------------------------------------- empirical
@dataclass(frozen=True)
class Run:
    """One finished empirical run, flattened from its record."""

    method: str
    benchmark: str
    seed: int
    K: int
    hparams: dict = field(hash=False)
    acc_id: float | None
    acc_ood: float
    lcs: float | None
    consistency: float | None
    seconds_per_step: float | None
    per_domain: dict = field(hash=False)
    val_acc: float | None
    val_loss: float | None
    scale: str
    suite: str | None
    key: str
    source: str

    def hp(self, name: str, default=None):
        return self.hparams.get(name, default)


_SUITE_FIELDS = ("suite", "group", "tag", "ablation")


def _suite(record: dict) -> str | None:
    for where in (record, record.get("job", {})):
        for name in _SUITE_FIELDS:
            if isinstance(where.get(name), str):
                return where[name]
    return None


def parse_record(record: dict, where: str) -> Run:
    """One record -> ``Run``; ``MissingInput`` names the first required field absent."""
    job = need(record, "job", where=where)
    test = need(record, "test", where=where)
    train = record.get("train", {}) or {}
    domains = need(job, "train_domains", where=where + " job")
    return Run(
        method=str(need(job, "method", where=where + " job")),
        benchmark=str(need(job, "benchmark", where=where + " job")),
        seed=int(need(job, "seed", where=where + " job")),
        K=int(record.get("num_domains", len(domains))),
        hparams=dict(job.get("hparams") or {}),
        acc_id=test.get("accuracy_id"),
        acc_ood=float(need(test, "accuracy_ood", where=where + " test")),
        lcs=test.get("lcs"),
        consistency=test.get("answer_consistency"),
        seconds_per_step=train.get("seconds_per_step"),
        per_domain=dict(test.get("per_domain") or {}),
        val_acc=(record.get("val") or {}).get("accuracy"),
        val_loss=(record.get("val") or {}).get("loss"),
        scale=json.dumps(job.get("scale"), sort_keys=True),
        suite=_suite(record),
        key=str(record.get("key", where)),
        source=where.split(":")[0],
    )


@dataclass
class Empirical:
    folder: Path
    runs: list[Run]
    notes: list[str]
    suite: str = "full"  # the name in suite.json (the command that made the records)
    search_seed: int = 0  # the seed hparams were selected on (suite.json)
    candidates: dict | None = None  # method -> the hparams searched, in order (suite.json)

    def sources(self, runs: Iterable[Run] | None = None) -> list[str]:
        """The record files behind ``runs`` (all runs by default), collapsed per folder
        when there are many: one line per file would drown the caption."""
        files = sorted({r.source for r in (self.runs if runs is None else runs)})
        if len(files) <= 6:
            return files
        parents = sorted({str(Path(f).parent.parent) for f in files})
        return [f"{p}/*/record.jsonl ({len(files)} files)" for p in parents]


def _count_records(folder: Path) -> int:
    return sum(1 for p in folder.rglob("record.jsonl") if (p.parent / "done").is_file())


def pick_suite_folder(folder: Path) -> tuple[Path, list[str]]:
    """``results/empirical`` holds one folder per suite (``full``, ``quick``); never mix
    them: take the one with the most finished runs (``full`` on a tie), so a full suite
    takes over once it has outgrown the smoke run. Pass a suite folder to choose."""
    if (folder / "suite.json").is_file() or (folder / "runs").is_dir():
        return folder, []
    suites = sorted(p.parent for p in folder.glob("*/suite.json"))
    counts = {p: _count_records(p) for p in suites}
    if not suites or not any(counts.values()):
        return folder, []
    chosen = max(suites, key=lambda p: (counts[p], p.name == "full", p.name))
    others = [f"{p.name} ({counts[p]} runs)" for p in suites if p != chosen]
    note = f"empirical: using suite folder {rel(chosen)} ({counts[chosen]} finished runs)"
    return chosen, [note + (f"; not mixed in: {', '.join(others)}" if others else "")]


def _suite_fields(folder: Path) -> dict:
    """``suite``, ``search_seed`` and ``candidates`` (method -> hparams searched) from
    ``suite.json``; the folder's name, seed 0 (the suites' default) and none where the
    file or a field is missing."""
    try:
        saved = json.loads((folder / "suite.json").read_text())
    except (OSError, json.JSONDecodeError):
        saved = {}
    saved = saved if isinstance(saved, dict) else {}
    resolved = saved.get("resolved") if isinstance(saved.get("resolved"), dict) else {}
    candidates = resolved.get("candidates")
    return {
        "suite": str(saved.get("name", folder.name)),
        "search_seed": int(saved.get("search_seed", 0)),
        "candidates": candidates if isinstance(candidates, dict) else None,
    }


def load_empirical(folder: Path) -> Empirical:
    """Every record under ``folder`` (recursively; one suite's folder when ``folder``
    holds several), deduplicated by key, last wins; runs of another scale than the
    most common one are dropped with a note (a scaled-up rerun is another experiment)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInput(f"missing folder {rel(folder)} (no empirical records)")
    folder, notes = pick_suite_folder(folder)
    by_key: dict[str, Run] = {}
    for path in sorted(folder.rglob("*.jsonl")):
        if path.name == "record.jsonl" and not (path.parent / "done").is_file():
            continue  # a run still being written (runner writes ``done`` last)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            notes.append(f"skipped record file {rel(path)}: unreadable ({e})")
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{rel(path)}:{lineno}"
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or "job" not in record:
                    continue  # another kind of JSONL (a table dump, a log)
                run = parse_record(record, where)
            except (json.JSONDecodeError, MissingInput, TypeError, ValueError) as e:
                text = str(e) if isinstance(e, MissingInput) else f"{where}: {e}"
                notes.append(f"skipped record {text}")
                continue
            by_key[run.key] = run
    if not by_key:
        raise MissingInput(
            f"no empirical records (JSONL with 'job' and 'test') under {rel(folder)}"
        )
    runs = sorted(by_key.values(), key=lambda r: (r.method, r.benchmark, r.K, r.seed, r.key))
    scales = Counter(r.scale for r in runs)
    if len(scales) > 1:
        keep = scales.most_common(1)[0][0]
        notes.append(
            f"empirical: dropped {len(runs) - scales[keep]} runs at another scale than {keep}"
        )
        runs = [r for r in runs if r.scale == keep]
    return Empirical(folder, runs, notes, **_suite_fields(folder))


# ----------------------------------------------------------------------------- bench
@dataclass
class Bench:
    path: Path
    report: dict

    def method(self, name: str) -> dict:
        return need(self.report, "results", name, where=rel(self.path))


def load_bench(path: Path) -> Bench:
    report = _read_json(Path(path))
    need(report, "results", "erm", "median_s", where=rel(Path(path)))
    return Bench(Path(path), report)
