"""Where a run's record lives and how it is written and read back.

``OUT/records/<Job.key()>/`` holds ``job.json`` (the arguments), ``record.jsonl`` (one
JSON object per finished execution, appended) and ``done``, written last: a folder
without ``done`` is an unfinished run and is run again; one with it is skipped.
Every launcher (local processes, submitit) writes through ``write_record``, so the
markers and the resume behave the same wherever the run executed.
"""

from __future__ import annotations

import json
from pathlib import Path

from empirical.jobs import Job

# One folder per run under OUT/records/ (not "runs/": the repository ignores runs/).
RECORDS_DIR = "records"
# Version of the training loop that made a record (``record["training_contract"]``).
# 2: iga/distill/schedule.py's schedule and batching, identical to ``iga distill``.
# Records without the field (every record committed before it) were made by the earlier
# loop: warm-up (s + 1) / w instead of s / w, and batches that ran across epoch ends.
TRAINING_CONTRACT = 2


def run_dir(out: Path, job: Job) -> Path:
    return Path(out) / RECORDS_DIR / job.key()


def is_done(out: Path, job: Job) -> bool:
    return (run_dir(out, job) / "done").is_file()


def _last_record(folder: Path) -> dict | None:
    path = folder / "record.jsonl"
    if not (folder / "done").is_file() or not path.is_file():
        return None
    lines = path.read_text().strip().splitlines()
    return json.loads(lines[-1]) if lines else None


def read_record(out: Path, job: Job) -> dict | None:
    """The last record of ``job`` if it finished, else None."""
    return _last_record(run_dir(out, job))


def load_records(out: Path, skipped: list[str] | None = None) -> list[dict]:
    """The last record of every finished run under ``out/records``.

    With a ``skipped`` list, a corrupt record (unreadable, not JSON, fields missing) is
    noted there (``file: reason``) and left out instead of raising (issue 18).
    """
    found = []
    for folder in sorted((Path(out) / RECORDS_DIR).glob("*")):
        try:
            record = _last_record(folder)
            if record is not None and not _is_record(record):
                raise ValueError("not a run record (needs key, job, test, val, train)")
        except (OSError, UnicodeDecodeError, ValueError) as err:
            if skipped is None:
                raise
            skipped.append(f"{folder / 'record.jsonl'}: {type(err).__name__}: {err}")
            continue
        if record is not None:
            found.append(record)
    return found


def _is_record(record) -> bool:
    fields = ("job", "test", "val", "train")
    return (
        isinstance(record, dict)
        and "key" in record
        and all(isinstance(record.get(f), dict) for f in fields)
    )


def start_record(out: Path, job: Job) -> Path:
    """Create the job's folder and write ``job.json``; returns the folder."""
    folder = run_dir(out, job)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.json").write_text(json.dumps(job.to_dict(), indent=2, sort_keys=True))
    return folder


def write_record(out: Path, job: Job, record: dict) -> None:
    """Append ``record`` to the job's ``record.jsonl``, then write the ``done`` marker."""
    folder = run_dir(out, job)
    with open(folder / "record.jsonl", "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    (folder / "done").write_text("ok\n")


def old_contract_count(records: list[dict]) -> int:
    """How many of ``records`` were made by a training loop before ``TRAINING_CONTRACT``."""
    return sum(1 for r in records if r.get("training_contract", 1) < TRAINING_CONTRACT)
