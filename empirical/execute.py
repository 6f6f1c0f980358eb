"""Executing one job: data -> cached base student + LoRA -> training loop -> evaluation.

The training loop is ``iga distill``'s training contract (iga/distill/schedule.py):
the same batches of whole isomer sets in the same seeded epoch order, the same
cosine schedule with linear warm-up (``empirical/methods/base.py``), the same
completion-only, domain-mean loss (``iga.core.losses``). Only the gradient step
differs between methods (``method.update``). Evaluation uses test sets on the
training and held-out domains and validation sets on the training domains only
(for model selection, ``empirical/selection.py``).
"""

from __future__ import annotations

import copy
import os
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from empirical.jobs import Job, families_of, shortcut_for
from empirical.records import TRAINING_CONTRACT, read_record, start_record, write_record
from iga.distill.data import IsomerCollator, IsomerDataset
from iga.distill.run import EVAL_SEED_OFFSET
from iga.distill.schedule import batch_indices
from iga.isomers import generate_sets

VAL_SEED_OFFSET = 200_000  # validation sets: disjoint from training (seed) and test (+500k)
DOMAINS_DIR = Path(__file__).parent / "domains"  # extra training domains for the K sweep
_BASE_CACHE: dict[str, tuple] = {}


def _base(job: Job):
    """(model, tokenizer) the job starts from, loaded once per process: the cached
    built-in student of ``job.base``, or the pretrained ``job.student`` (read as
    ``iga distill --student`` reads it: preset, .gguf file or local folder)."""
    from iga.distill.pretrain import load_or_build_base
    from iga.distill.run import DistillConfig, load_student_base

    key = job.student_key()
    if key not in _BASE_CACHE:
        if job.student is None:
            model, tokenizer, _ = load_or_build_base(job.base_config(), show_progress=False)
        else:
            model, tokenizer = load_student_base(DistillConfig(student=job.student), False)
        _BASE_CACHE[key] = (model, tokenizer)
    return _BASE_CACHE[key]


def _sets(job: Job, seed: int, n: int, domains: Sequence[str]):
    """``n`` sets per family of ``job.benchmark`` (every family for "all")."""
    paths = [str(DOMAINS_DIR)] if DOMAINS_DIR.is_dir() else None
    spec = shortcut_for(job.train_domains)
    return [
        s
        for family in families_of(job.benchmark)
        for s in generate_sets(
            family, list(domains), n, seed=seed, shortcut=spec, domain_paths=paths
        )
    ]


def split_by_domain(batch: dict[str, torch.Tensor], num_domains: int) -> list[dict]:
    """The K per-domain batches of a collated batch (rows of each ``domain_ids`` value)."""
    out = []
    for k in range(num_domains):
        rows = torch.nonzero(batch["domain_ids"] == k).squeeze(1)  # (B_k,)
        out.append({n: batch[n][rows] for n in ("input_ids", "attention_mask", "labels")})
    return out


def training_batches(
    dataset: IsomerDataset, collate, batch_sets: int, steps: int, seed: int
) -> Iterator[dict[str, torch.Tensor]]:
    """``steps`` collated batches of whole sets, in ``iga distill``'s seeded epoch order."""
    for chosen in batch_indices(len(dataset), batch_sets, steps, seed):
        yield collate([dataset[i] for i in chosen])


def run_device() -> torch.device:
    """Where a run trains: the GPU when one is visible, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _to(batch: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    device = next(model.parameters()).device
    return {name: t.to(device) for name, t in batch.items()}


def train_loop(method, dataset: IsomerDataset, collate, steps: int, batch_sets: int, seed: int):
    """Run ``steps`` updates of ``method``; returns the logged history (every tenth step)."""
    history = []
    batches = training_batches(dataset, collate, batch_sets, steps, seed)
    for step, batch in enumerate(batches):
        batch = _to(batch, method.model)
        stats = method.update(split_by_domain(batch, method.num_domains))
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            history.append({"step": step, **stats})
    return history


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
        chunk = _to(
            collate([dataset[j] for j in range(i, min(i + batch_sets, len(dataset)))]), model
        )
        batch = concat_domains(split_by_domain(chunk, num_domains))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        ce, mask = completion_token_losses(logits, batch["labels"])  # (B, T-1) each
        losses.append(float(per_domain_losses(ce, mask, batch["domain_ids"], num_domains).mean()))
    return sum(losses) / len(losses)


def _datasets(job: Job, tokenizer):
    """(train dataset, validation sets, validation dataset, test sets) of ``job``."""
    s = job.scale
    train_sets = _sets(job, job.seed, s.n_train_sets, job.train_domains)
    train = IsomerDataset(train_sets, job.train_domains, tokenizer, s.max_length)
    val_sets = _sets(job, VAL_SEED_OFFSET + job.seed, s.n_val_sets, job.train_domains)
    val = IsomerDataset(val_sets, job.train_domains, tokenizer, s.max_length)
    domains = [*job.train_domains, *job.heldout_domains]
    test_sets = _sets(job, EVAL_SEED_OFFSET + job.seed, s.n_test_sets, domains)
    return train, val_sets, val, test_sets


def execute(job: Job) -> dict:
    """Train and evaluate one job; returns its record (writes nothing)."""
    from empirical.methods import make_method
    from iga.distill.evaluate import evaluate
    from iga.distill.student import DEFAULT_LORA_TARGETS, attach_lora

    base, tokenizer = _base(job)
    torch.manual_seed(job.seed)
    device = run_device()
    model = attach_lora(
        copy.deepcopy(base), job.hparams["lora_rank"], DEFAULT_LORA_TARGETS, seed=job.seed
    ).to(device)
    k, s = len(job.train_domains), job.scale
    train, val_sets, val, test_sets = _datasets(job, tokenizer)
    collate = IsomerCollator(tokenizer.pad_token_id)
    method = make_method(job.method, model, k, job.hparams, s.steps, seed=job.seed)
    start = time.perf_counter()
    history = train_loop(method, train, collate, s.steps, s.batch_sets, job.seed)
    train_seconds = time.perf_counter() - start
    method.close()
    start = time.perf_counter()
    val_loss = validation_loss(model, val, collate, k, s.batch_sets)
    gen = (s.max_new_tokens, s.eval_batch_size)
    val_eval = evaluate(model, tokenizer, val_sets, job.train_domains, [], *gen)
    test = evaluate(model, tokenizer, test_sets, job.train_domains, job.heldout_domains, *gen)
    eval_seconds = time.perf_counter() - start
    return {
        "key": job.key(),
        "job": job.to_dict(),
        "base": job.student_key(),
        "num_domains": k,
        "training_contract": TRAINING_CONTRACT,
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
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run_job(job: Job, out: Path) -> dict:
    """Run ``job`` unless its folder is done; append the record and write ``done``."""
    done = read_record(out, job)
    if done is not None:
        return done
    start_record(out, job)
    record = execute(job)
    write_record(out, job, record)
    return record


def run_safely(job: Job, out: str, threads: int = 1) -> tuple[Job, dict | None, str | None]:
    """``run_job`` on ``threads`` CPU threads; an exception comes back as its traceback.

    This is what every launcher runs in its worker: one failed job must not stop a
    sweep, and its error is reported by the scheduler."""
    torch.set_num_threads(threads)
    try:
        return job, run_job(job, Path(out)), None
    except Exception:
        return job, None, traceback.format_exc()


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
