"""A run folder is a unit (issue 18): one writer at a time, never mixed, clobbered or
mislabelled.

* ``RunLock``: an ``flock`` on ``OUT/.lock`` held for the whole run; a second writer
  gets an error naming the holder (pid, host, start time). The kernel drops the lock
  when its process dies (even by SIGKILL), so a killed run never leaves a stale lock.
* ``inspect_run``: what the folder holds (nothing, an interrupted run, a finished one)
  and whether the requested run may write there: a fresh run never deletes another
  run's checkpoints, ``--resume`` only continues a run whose stored config equals the
  new one (except ``RESUMABLE`` fields), and a finished run resumed is a no-op.
* ``newest_checkpoint``: the newest checkpoint whose files are whole; a broken one
  is named and skipped for the previous complete one.
* ``whole_run_loss`` (and ``iga.distill.runclock.RunClock``): summaries after a resume
  report the whole run (loss and time over all steps), from the trainer state stored
  in each checkpoint.

Every file here is written atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from iga.core.configio import differences
from iga.outputs import check_output_dir, check_output_file  # noqa: F401 (re-exported)

CONFIG_FILE = "distill_config.json"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lock"
# Fields that may change on --resume: whether the end of the run evaluates changes no
# weight. `out` is the folder itself (it may be spelt differently). Everything else
# (data, model, schedule, method) must match, or the run would be relabelled.
RESUMABLE = ("out", "evaluate")
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
# What HF's Trainer writes into a checkpoint of a peft model, each needed to resume.
CHECKPOINT_FILES = ("trainer_state.json", "adapter_model.safetensors", "optimizer.pt")


class RunFolderError(ValueError):
    """The run folder cannot take this run; the message says why and what to do."""


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class RunLock:
    """Exclusive lock on a run folder for one writer; ``RunFolderError`` names the holder.

    The folder (and its parents) are created if needed; on release the lock file is
    removed, and so is the folder if this lock created it and nothing else was written.
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / LOCK_FILE
        self._fd: int | None = None
        self._made: list[Path] = []

    def __enter__(self) -> RunLock:
        check_output_dir(self.out, "--out")
        missing = [p for p in (self.out, *self.out.parents) if not p.exists()]
        self.out.mkdir(parents=True, exist_ok=True)
        self._made = missing  # innermost first
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                self._cleanup()
                raise RunFolderError(
                    f"{self.out} is being written by {holder}; two runs must not share one "
                    "folder. Wait for that run to end, or choose another --out."
                ) from None
            # The holder may have removed the file between our open and flock: retry then.
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                break
            os.close(fd)
        started = datetime.datetime.now().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()} since {started}".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.unlink(self.path)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        self._cleanup()

    def _cleanup(self) -> None:
        for folder in self._made:  # innermost first; stops at the first non-empty one
            try:
                folder.rmdir()
            except OSError:
                break
        self._made = []


def checkpoint_folders(out: Path) -> list[Path]:
    """``checkpoint-N`` folders of ``out``, oldest first (other names are ignored)."""
    found = [p for p in Path(out).glob("checkpoint-*") if _CHECKPOINT.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(_CHECKPOINT.fullmatch(p.name).group(1)))


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from (a file missing or unreadable), or None."""
    for name in CHECKPOINT_FILES:
        if not (folder / name).is_file() or (folder / name).stat().st_size == 0:
            return f"{folder / name} is missing or empty"
    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        int(state["global_step"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        return f"{folder / 'trainer_state.json'} is unreadable ({type(err).__name__}: {err})"
    try:
        from safetensors import safe_open

        with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
            f.keys()
    except Exception as err:  # safetensors raises its own error types
        return f"{folder / 'adapter_model.safetensors'} is unreadable ({err})"
    return None


def newest_checkpoint(out: Path) -> tuple[str | None, list[str]]:
    """The newest complete checkpoint of ``out`` (or None) and notes on broken ones.

    A checkpoint without ``trainer_state.json`` was cut short by a kill while saving and
    is skipped quietly; one with every file but an unreadable one is named in a note.
    ``RunFolderError`` if checkpoints exist and none is complete.
    """
    notes, folders = [], checkpoint_folders(out)
    for folder in reversed(folders):
        problem = checkpoint_problem(folder)
        if problem is None:
            return str(folder), notes
        if (folder / "trainer_state.json").is_file():
            notes.append(f"skipping broken checkpoint {folder.name}: {problem}")
    if folders:
        newest = folders[-1]
        raise RunFolderError(
            f"no complete checkpoint to resume from in {out}: {checkpoint_problem(newest)}. "
            f"Delete the broken checkpoint folder(s) ({', '.join(p.name for p in folders)}) "
            "to restart the run from step 0, or choose another --out."
        )
    return None, notes


@dataclass
class RunFolder:
    """What ``inspect_run`` found: where to start, or a finished run's summary."""

    checkpoint: str | None = None
    finished: dict | None = None
    notes: list[str] = field(default_factory=list)


def read_json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFolderError(
            f"{path} is unreadable ({type(err).__name__}: {err}); the run folder is damaged. "
            "Restore the file or choose another --out."
        ) from err
    if not isinstance(data, dict):
        raise RunFolderError(f"{path} does not hold a JSON object; the run folder is damaged.")
    return data


def inspect_run(out: Path, config: dict, resume: bool) -> RunFolder:
    """Decide whether the run described by ``config`` (``to_dict``) may use ``out``."""
    out = Path(out)
    check_output_dir(out, "--out")
    stored_path, summary_path = out / CONFIG_FILE, out / SUMMARY_FILE
    stored = read_json_object(stored_path) if stored_path.is_file() else None
    checkpoints = checkpoint_folders(out)
    if not resume:
        if summary_path.exists():
            raise RunFolderError(
                f"{out} already holds a finished run; pass --resume to continue it "
                "or choose another --out."
            )
        if checkpoints:
            raise RunFolderError(
                f"{out} holds an interrupted run ({', '.join(p.name for p in checkpoints)}); "
                "a fresh run would delete its checkpoints. Pass --resume to continue it, "
                "or choose another --out."
            )
    if stored is not None:
        diff = differences(stored, config, RESUMABLE)
        if diff:
            verb = "resume" if resume else "start"
            raise RunFolderError(
                f"{stored_path} describes another run, so this one cannot {verb} there; "
                f"differences: {'; '.join(diff)}. Repeat the run's flags (only --no-eval "
                "may change on --resume), or choose another --out."
            )
    elif resume and (checkpoints or summary_path.exists()):
        raise RunFolderError(
            f"{out} holds checkpoints but no {CONFIG_FILE}, so --resume cannot check that "
            "they belong to this run; choose another --out."
        )
    if resume and summary_path.exists():
        return RunFolder(finished=read_json_object(summary_path))
    checkpoint, notes = newest_checkpoint(out) if resume else (None, [])
    return RunFolder(checkpoint=checkpoint, notes=notes)


def whole_run_loss(
    log_history: list[dict], start_step: int, session_loss: float, global_step: int
) -> float:
    """The mean training loss over all ``global_step`` steps of a (resumed) run.

    HF's ``training_loss`` averages only this session's steps (from ``start_step``).
    The steps before it are in the logged losses restored from the checkpoint: each
    ``loss`` entry is the mean over its logging window, and the windows cover steps
    ``1..start_step`` exactly because ``logging_steps`` divides ``save_steps``.
    """
    before, last = 0.0, 0
    for entry in log_history:
        if "loss" in entry and entry["step"] <= start_step:
            before += entry["loss"] * (entry["step"] - last)
            last = entry["step"]
    if last != start_step:
        raise RuntimeError(
            f"logged losses cover steps 1..{last}, not 1..{start_step}: logging_steps "
            "must divide save_steps."
        )
    return (before + session_loss * (global_step - start_step)) / max(global_step, 1)
