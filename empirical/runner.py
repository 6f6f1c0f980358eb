"""One run = one (method, benchmark, seed, hparams, training domains, scale) job.

data -> cached base student + LoRA -> ``method.update(per_domain_batches)`` for
``steps`` steps -> evaluation (test sets on training and held-out domains;
validation sets on training domains only, for model selection) -> one JSONL
record. A job's folder is named by the hash of its arguments; a ``done`` marker
makes finished jobs skip, so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from iga.distill.data import IsomerCollator, IsomerDataset
from iga.distill.pretrain import BaseConfig
from iga.distill.run import EVAL_SEED_OFFSET, DistillConfig
from iga.isomers import DEFAULT_HELDOUT_DOMAINS, DEFAULT_TRAIN_DOMAINS, ShortcutSpec, generate_sets

VAL_SEED_OFFSET = 200_000  # validation sets: disjoint from training (seed) and test (+500k)
DOMAINS_DIR = Path(__file__).parent / "domains"  # extra training domains for the K sweep
RECORD_VERSION = 1
# One folder per run under OUT/records/ (not "runs/": the repository ignores runs/).
RECORDS_DIR = "records"


@dataclass(frozen=True)
class Scale:
    """How big one run is; GPU users scale up with ``--scale steps=2000,n_train_sets=1000``."""

    steps: int = 120
    batch_sets: int = 8
    n_train_sets: int = 240
    n_val_sets: int = 12
    n_test_sets: int = 24
    max_new_tokens: int = 96
    eval_batch_size: int = 48
    max_length: int = 256

    @classmethod
    def parse(cls, text: str, base: Scale | None = None) -> Scale:
        """``"steps=200,n_test_sets=50"`` on top of ``base``."""
        values = asdict(base or cls())
        for item in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = item.partition("=")
            if name not in values:
                raise ValueError(f"unknown scale field {name!r}; choose from {sorted(values)}.")
            values[name] = int(value)
        return cls(**values)


def shortcut_for(train_domains: Sequence[str]) -> ShortcutSpec:
    """Answer cue of strength 0.9 .. 0.6 across the training domains, reversed when held out."""
    k = len(train_domains)
    strengths = {d: round(0.9 - 0.3 * i / max(1, k - 1), 4) for i, d in enumerate(train_domains)}
    return ShortcutSpec(strengths, heldout="reversed")


@dataclass(frozen=True)
class Job:
    method: str
    benchmark: str  # an isomer family: arithmetic, deduction, ordering, rules
    seed: int
    hparams: dict = field(hash=False)
    scale: Scale = Scale()
    train_domains: tuple[str, ...] = DEFAULT_TRAIN_DOMAINS
    heldout_domains: tuple[str, ...] = DEFAULT_HELDOUT_DOMAINS
    base: dict | None = field(default=None, hash=False)  # BaseConfig fields; None: current

    def base_config(self) -> BaseConfig:
        return base_config() if self.base is None else BaseConfig(**self.base)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["train_domains"] = list(self.train_domains)
        d["heldout_domains"] = list(self.heldout_domains)
        d["base"] = asdict(self.base_config())
        return d

    def key(self) -> str:
        """Hash of every argument (the base student by its own hash) and the record version."""
        job = {k: v for k, v in self.to_dict().items() if k != "base"}
        blob = {"job": job, "base": self.base_config().key(), "v": RECORD_VERSION}
        text = json.dumps(blob, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict) -> Job:
        d = dict(d)
        d["scale"] = Scale(**d["scale"])
        d["train_domains"], d["heldout_domains"] = (
            tuple(d["train_domains"]),
            tuple(d["heldout_domains"]),
        )
        return cls(**d)


def run_dir(out: Path, job: Job) -> Path:
    return Path(out) / RECORDS_DIR / job.key()


def is_done(out: Path, job: Job) -> bool:
    return (run_dir(out, job) / "done").is_file()


def read_record(out: Path, job: Job) -> dict | None:
    path = run_dir(out, job) / "record.jsonl"
    if not (run_dir(out, job) / "done").is_file() or not path.is_file():
        return None
    lines = path.read_text().strip().splitlines()
    return json.loads(lines[-1]) if lines else None


def load_records(out: Path, skipped: list[str] | None = None) -> list[dict]:
    """The last record of every finished run under ``out/runs``.

    With a ``skipped`` list, a corrupt record (unreadable, not JSON, fields missing) is
    noted there (``file: reason``) and left out instead of raising (issue 18).
    """
    records = []
    for folder in sorted((Path(out) / RECORDS_DIR).glob("*")):
        path = folder / "record.jsonl"
        if (folder / "done").is_file() and path.is_file():
            try:
                lines = path.read_text(encoding="utf-8").strip().splitlines()
                record = json.loads(lines[-1]) if lines else None
                if record is not None and not _is_record(record):
                    raise ValueError("not a run record (needs key, job, test, val, train)")
            except (OSError, UnicodeDecodeError, ValueError) as err:
                if skipped is None:
                    raise
                skipped.append(f"{path}: {type(err).__name__}: {err}")
                continue
            if record is not None:
                records.append(record)
    return records


def _is_record(record) -> bool:
    fields = ("job", "test", "val", "train")
    return (
        isinstance(record, dict)
        and "key" in record
        and all(isinstance(record.get(f), dict) for f in fields)
    )


# ----- one run -----------------------------------------------------------------------------
_BASE_CACHE: dict[str, tuple] = {}


def base_config():
    """The base student every method starts from: ``iga distill``'s default, read now."""
    return DistillConfig().base


def _base(config: BaseConfig):
    from iga.distill.pretrain import load_or_build_base

    if config.key() not in _BASE_CACHE:
        model, tokenizer, _ = load_or_build_base(config, show_progress=False)
        _BASE_CACHE[config.key()] = (model, tokenizer)
    return _BASE_CACHE[config.key()]


def _sets(job: Job, seed: int, n: int, domains: Sequence[str]):
    paths = [str(DOMAINS_DIR)] if DOMAINS_DIR.is_dir() else None
    spec = shortcut_for(job.train_domains)
    return generate_sets(
        job.benchmark, list(domains), n, seed=seed, shortcut=spec, domain_paths=paths
    )


def split_by_domain(batch: dict[str, torch.Tensor], num_domains: int) -> list[dict]:
    """The K per-domain batches of a collated batch (rows of each ``domain_ids`` value)."""
    out = []
    for k in range(num_domains):
        rows = torch.nonzero(batch["domain_ids"] == k).squeeze(1)
        out.append({n: batch[n][rows] for n in ("input_ids", "attention_mask", "labels")})
    return out


def _batches(dataset: IsomerDataset, collate, batch_sets: int, steps: int, seed: int):
    """``steps`` batches of whole sets, epoch by epoch in a seeded order."""
    g = torch.Generator().manual_seed(seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch_sets:
            order += torch.randperm(len(dataset), generator=g).tolist()
        chosen, order = order[:batch_sets], order[batch_sets:]
        yield collate([dataset[i] for i in chosen])


@torch.no_grad()
def validation_loss(
    model, dataset: IsomerDataset, collate, num_domains: int, batch_sets: int
) -> float:
    """Mean over batches of the domain-mean completion loss (teacher forcing)."""
    from empirical.methods.base import concat_domains
    from iga.core.losses import completion_token_losses, per_domain_losses

    model.eval()
    losses = []
    for i in range(0, len(dataset), batch_sets):
        batch = concat_domains(
            split_by_domain(
                collate([dataset[j] for j in range(i, min(i + batch_sets, len(dataset)))]),
                num_domains,
            )
        )
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        ce, mask = completion_token_losses(logits, batch["labels"])
        losses.append(float(per_domain_losses(ce, mask, batch["domain_ids"], num_domains).mean()))
    return sum(losses) / len(losses)


def execute(job: Job) -> dict:
    """Train and evaluate one job; returns its record (writes nothing)."""
    from empirical.methods import make_method
    from iga.distill.evaluate import evaluate
    from iga.distill.student import DEFAULT_LORA_TARGETS, attach_lora

    base, tokenizer = _base(job.base_config())
    torch.manual_seed(job.seed)
    model = attach_lora(
        copy.deepcopy(base), job.hparams["lora_rank"], DEFAULT_LORA_TARGETS, seed=job.seed
    )
    k, s = len(job.train_domains), job.scale
    train = IsomerDataset(
        _sets(job, job.seed, s.n_train_sets, job.train_domains),
        job.train_domains,
        tokenizer,
        s.max_length,
    )
    val_sets = _sets(job, VAL_SEED_OFFSET + job.seed, s.n_val_sets, job.train_domains)
    val = IsomerDataset(val_sets, job.train_domains, tokenizer, s.max_length)
    test_sets = _sets(
        job, EVAL_SEED_OFFSET + job.seed, s.n_test_sets, [*job.train_domains, *job.heldout_domains]
    )
    collate = IsomerCollator(tokenizer.pad_token_id)
    method = make_method(job.method, model, k, job.hparams, s.steps, seed=job.seed)
    history, start = [], time.perf_counter()
    for step, batch in enumerate(_batches(train, collate, s.batch_sets, s.steps, job.seed)):
        stats = method.update(split_by_domain(batch, k))
        if step % max(1, s.steps // 10) == 0 or step == s.steps - 1:
            history.append({"step": step, **stats})
    train_seconds = time.perf_counter() - start
    method.close()
    start = time.perf_counter()
    val_loss = validation_loss(model, val, collate, k, s.batch_sets)
    val_eval = evaluate(
        model, tokenizer, val_sets, job.train_domains, [], s.max_new_tokens, s.eval_batch_size
    )
    test = evaluate(
        model,
        tokenizer,
        test_sets,
        job.train_domains,
        job.heldout_domains,
        s.max_new_tokens,
        s.eval_batch_size,
    )
    eval_seconds = time.perf_counter() - start
    return {
        "key": job.key(),
        "job": job.to_dict(),
        "base": job.base_config().key(),
        "num_domains": k,
        "test": test.to_dict(),
        "val": {"accuracy": val_eval.accuracy, "loss": val_loss},
        "train": {
            "seconds": train_seconds,
            "seconds_per_step": train_seconds / s.steps,
            "eval_seconds": eval_seconds,
            "final_loss": history[-1].get("loss"),
            "history": history,
        },
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run_job(job: Job, out: Path) -> dict:
    """Run ``job`` unless its folder is done; append the record and write ``done``."""
    folder = run_dir(out, job)
    if (folder / "done").is_file():
        return read_record(out, job)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.json").write_text(json.dumps(job.to_dict(), indent=2, sort_keys=True))
    record = execute(job)
    with open(folder / "record.jsonl", "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    (folder / "done").write_text("ok\n")
    return record


def _worker_init() -> None:
    torch.set_num_threads(1)  # one core per job: --jobs N uses N cores


def _run_safely(job: Job, out: str) -> tuple[Job, dict | None, str | None]:
    try:
        return job, run_job(job, Path(out)), None
    except Exception:  # one failed job must not stop a sweep; its error is reported
        return job, None, traceback.format_exc()


@dataclass
class Stage:
    """A group of jobs whose list is made (``jobs()``) once the stages in ``after`` finished."""

    label: str
    jobs: Callable[[], list[Job]]
    after: tuple[str, ...] = ()


def run_jobs(jobs: Iterable[Job], out: Path, n_jobs: int = 1, log=print) -> list[dict]:
    """Run the unfinished ``jobs`` with ``n_jobs`` processes; returns the new records."""
    jobs = list(jobs)
    return run_stages([Stage("jobs", lambda: jobs)], out, n_jobs, log, announce=False)


def run_stages(
    stages: Sequence[Stage],
    out: Path,
    n_jobs: int = 1,
    log=print,
    announce: bool = True,
    executor: Executor | None = None,
) -> list[dict]:
    """Run ``stages`` on one pool of ``n_jobs`` processes; returns the new records.

    Jobs start in stage order, but a stage does not wait for the ones before it unless
    it depends on them (``after``): a core left idle by a long last run of one stage
    takes the next independent stage's jobs. A stage's job list is made only when its
    dependencies are finished (a main stage reads the search records). Finished runs
    and runs already queued by another stage are not run twice; a failed run counts as
    finished for its dependents and is reported.
    """
    labels = [st.label for st in stages]
    for st in stages:
        unknown = [a for a in st.after if a not in labels]
        if unknown:
            raise ValueError(f"stage {st.label!r} waits for unknown stages {unknown}.")
    pool = executor  # tests pass a thread pool; the CLI gets spawned processes
    if pool is None and n_jobs > 1:
        import multiprocessing as mp

        pool = ProcessPoolExecutor(
            n_jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init
        )
    elif pool is None:
        _worker_init()
    waiting = list(stages)
    finished_stages: set[str] = set()
    stage_keys: dict[str, set[str]] = {}
    rank = {label: i for i, label in enumerate(labels)}
    queue: list[tuple[int, Job]] = []  # (stage rank, job), sorted by rank
    queued: set[str] = set()  # keys queued or running, not finished
    finished: set[str] = set()
    running: dict[Future, Job] = {}
    records, failures, count = [], 0, 0

    def release() -> None:
        """Expand every stage whose dependencies are finished; mark finished stages."""
        changed = True
        while changed:
            changed = False
            for st in list(waiting):
                if not all(a in finished_stages for a in st.after):
                    continue
                waiting.remove(st)
                changed = True
                keys = set()
                todo = []
                for job in st.jobs():
                    key = job.key()
                    if key in finished or is_done(out, job):
                        continue
                    keys.add(key)
                    if key not in queued:
                        queued.add(key)
                        todo.append(job)
                # Stage order is priority: a stage released late still goes before later ones.
                queue.extend((rank[st.label], job) for job in todo)
                queue.sort(key=lambda item: item[0])  # stable: job order within a stage kept
                stage_keys[st.label] = keys
                if announce:
                    log(f"== {st.label}: {len(todo)} runs to do")
            for label, keys in stage_keys.items():
                if label not in finished_stages and keys <= finished:
                    finished_stages.add(label)
                    changed = True

    release()
    total = len(queue)
    while queue or running:
        while queue and len(running) < max(n_jobs, 1):
            _, job = queue.pop(0)
            if pool is None:
                future: Future = Future()
                future.set_result(_run_safely(job, str(out)))
            else:
                future = pool.submit(_run_safely, job, str(out))
            running[future] = job
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            del running[future]
            job, record, error = future.result()
            count += 1
            tag = (
                f"[{count}/{total}] {job.method:10s} {job.benchmark:10s} seed {job.seed} "
                f"K={len(job.train_domains)}"
            )
            if error is not None:
                failures += 1
                log(f"{tag}: FAILED\n{error}")
            else:
                records.append(record)
                t = record["test"]
                log(
                    f"{tag}: id {t['accuracy_id']:.3f} ood {t['accuracy_ood']:.3f} "
                    f"lcs {t['lcs']:.4f} val {record['val']['accuracy']:.3f} "
                    f"({record['train']['seconds_per_step']:.2f} s/step, "
                    f"eval {record['train']['eval_seconds']:.0f} s)"
                )
            queued.discard(job.key())
            finished.add(job.key())
        before = len(queue)
        release()
        total += len(queue) - before
    if pool is not None and executor is None:
        pool.shutdown()
    if waiting:
        raise ValueError(f"stages {[st.label for st in waiting]} wait on each other in a cycle.")
    if failures:
        log(f"{failures} job(s) failed; rerun to retry them (finished jobs are skipped).")
    return records


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
