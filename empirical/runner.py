"""One run = one (method, benchmark, seed, hparams, training domains, scale) job.

data -> cached base student + LoRA -> ``method.update(per_domain_batches)`` for
``steps`` steps -> evaluation (test sets on training and held-out domains;
validation sets on training domains only, for model selection) -> one JSONL
record. A job's folder is named by the hash of its arguments; a ``done`` marker
makes finished jobs skip, so an interrupted sweep resumes where it stopped.

The pieces live in their own modules; this one names them in one place:
``empirical.jobs`` (``Job``, ``Scale``), ``empirical.records`` (folders, markers,
reading), ``empirical.execute`` (one run, the training loop), ``empirical.launchers``
(local processes or submitit) and ``empirical.scheduler`` (stages and their order).
"""

from empirical.execute import (
    DOMAINS_DIR,
    VAL_SEED_OFFSET,
    execute,
    run_job,
    split_by_domain,
    train_loop,
    validation_loss,
)
from empirical.jobs import RECORD_VERSION, Job, Scale, base_config, shortcut_for
from empirical.launchers import LauncherConfig, LocalLauncher, SubmititLauncher, make_launcher
from empirical.records import RECORDS_DIR, is_done, load_records, read_record, run_dir
from empirical.scheduler import Scheduler, Stage, run_jobs, run_stages

__all__ = [
    "DOMAINS_DIR",
    "RECORDS_DIR",
    "RECORD_VERSION",
    "VAL_SEED_OFFSET",
    "Job",
    "LauncherConfig",
    "LocalLauncher",
    "Scale",
    "Scheduler",
    "Stage",
    "SubmititLauncher",
    "base_config",
    "execute",
    "is_done",
    "load_records",
    "make_launcher",
    "read_record",
    "run_dir",
    "run_job",
    "run_jobs",
    "run_stages",
    "shortcut_for",
    "split_by_domain",
    "train_loop",
    "validation_loss",
]
