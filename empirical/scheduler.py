"""The sweep scheduler: stages of jobs on one launcher; dependencies waited for, finished runs
skipped.

Jobs start in stage order, but a stage does not wait for the ones before it unless
it depends on them (``Stage.after``): a worker left idle by a long last run of one
stage takes the next independent stage's jobs. A stage's job list is made only
when its dependencies are finished (a main stage reads the search records). Finished
runs (``done`` marker) and runs already queued by another stage are not run twice; a
failed run counts as finished for its dependents and is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from empirical.jobs import Job
from empirical.launchers import Launcher, LocalLauncher
from empirical.records import is_done


@dataclass
class Stage:
    """A group of jobs whose list is made (``jobs()``) once the stages in ``after`` finished."""

    label: str
    jobs: Callable[[], list[Job]]
    after: tuple[str, ...] = ()


class Scheduler:
    """Runs ``stages`` on ``launcher``; ``run()`` returns the records of the new runs."""

    def __init__(
        self,
        stages: Sequence[Stage],
        out: Path,
        launcher: Launcher,
        log: Callable[[str], None] = print,
        announce: bool = True,
    ) -> None:
        labels = [st.label for st in stages]
        for st in stages:
            unknown = [a for a in st.after if a not in labels]
            if unknown:
                raise ValueError(f"stage {st.label!r} waits for unknown stages {unknown}.")
        self.out, self.launcher, self.log, self.announce = Path(out), launcher, log, announce
        self.rank = {label: i for i, label in enumerate(labels)}
        self.waiting = list(stages)
        self.finished_stages: set[str] = set()
        self.stage_keys: dict[str, set[str]] = {}
        self.queue: list[tuple[int, Job]] = []  # (stage rank, job), sorted by rank
        self.queued: set[str] = set()  # keys queued or running, not finished
        self.finished: set[str] = set()
        self.records: list[dict] = []
        self.failures = self.count = self.total = 0

    def run(self) -> list[dict]:
        self._release()
        self.total = len(self.queue)
        while self.queue or self.launcher.busy:
            while self.queue and self.launcher.busy < self.launcher.slots:
                _, job = self.queue.pop(0)
                self.launcher.submit(job, self.out)
            for job, record, error in self.launcher.wait():
                self._finish(job, record, error)
            before = len(self.queue)
            self._release()
            self.total += len(self.queue) - before
        if self.waiting:
            stuck = [st.label for st in self.waiting]
            raise ValueError(f"stages {stuck} wait on each other in a cycle.")
        if self.failures:
            self.log(
                f"{self.failures} job(s) failed; rerun to retry them (finished jobs are skipped)."
            )
        return self.records

    def _release(self) -> None:
        """Expand every stage whose dependencies are finished; mark finished stages."""
        changed = True
        while changed:
            changed = False
            for st in list(self.waiting):
                if all(a in self.finished_stages for a in st.after):
                    self.waiting.remove(st)
                    self._expand(st)
                    changed = True
            for label, keys in self.stage_keys.items():
                if label not in self.finished_stages and keys <= self.finished:
                    self.finished_stages.add(label)
                    changed = True

    def _expand(self, st: Stage) -> None:
        """Queue the unfinished jobs of ``st`` that no other stage queued already."""
        keys, todo = set(), []
        for job in st.jobs():
            key = job.key()
            if key in self.finished or is_done(self.out, job):
                continue
            keys.add(key)
            if key not in self.queued:
                self.queued.add(key)
                todo.append(job)
        # Stage order is priority: a stage released late still goes before later ones.
        self.queue.extend((self.rank[st.label], job) for job in todo)
        self.queue.sort(key=lambda item: item[0])  # stable: job order within a stage kept
        self.stage_keys[st.label] = keys
        if self.announce:
            self.log(f"== {st.label}: {len(todo)} runs to do")

    def _finish(self, job: Job, record: dict | None, error: str | None) -> None:
        self.count += 1
        tag = f"[{self.count}/{self.total}] {job.label()}"
        if error is not None:
            self.failures += 1
            self.log(f"{tag}: FAILED\n{error}")
        else:
            self.records.append(record)
            t, train = record["test"], record["train"]
            self.log(
                f"{tag}: id {t['accuracy_id']:.3f} ood {t['accuracy_ood']:.3f} "
                f"lcs {t['lcs']:.4f} val {record['val']['accuracy']:.3f} "
                f"({train['seconds_per_step']:.2f} s/step, "
                f"eval {train['eval_seconds']:.0f} s)"
            )
        self.queued.discard(job.key())
        self.finished.add(job.key())


def run_stages(
    stages: Sequence[Stage],
    out: Path,
    n_jobs: int = 1,
    log: Callable[[str], None] = print,
    announce: bool = True,
    executor: Executor | None = None,
    launcher: Launcher | None = None,
) -> list[dict]:
    """Run ``stages`` with ``n_jobs`` runs at once; returns the new records.

    ``launcher`` (e.g. a ``SubmititLauncher``) takes the runs; without it they run in
    ``n_jobs`` local processes (or on ``executor``, which tests set to a thread pool)."""
    if launcher is None:
        launcher = LocalLauncher(n_jobs, executor)
    try:
        scheduler = Scheduler(stages, out, launcher, log, announce)
        return scheduler.run()
    finally:
        launcher.close()


def run_jobs(
    jobs: Iterable[Job], out: Path, n_jobs: int = 1, log: Callable[[str], None] = print
) -> list[dict]:
    """Run the unfinished ``jobs`` with ``n_jobs`` processes; returns the new records."""
    jobs = list(jobs)
    return run_stages([Stage("jobs", lambda: jobs)], out, n_jobs, log, announce=False)
