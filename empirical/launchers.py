"""Where a sweep's runs execute: local processes, or a cluster through ``submitit``.

A launcher only moves ``execute.run_safely(job, out, threads)`` to a worker and
hands back its result; the worker writes the record and the ``done`` marker into
``OUT/records/<key>/`` itself (``empirical/records.py``). So job hashing, the
markers and resume are the same for every launcher, and a sweep started with one
can be resumed with another. ``submitit`` needs ``OUT`` on a file system that the
cluster's nodes share, and the same Python environment there (its workers unpickle
``run_safely`` by reference); it is an optional extra (``pip install iga[cluster]``).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from empirical.execute import run_safely
from empirical.jobs import Job

Outcome = tuple[Job, dict | None, str | None]  # (job, record or None, error text or None)
LAUNCHERS = ("local", "submitit")
CLUSTERS = ("slurm", "local", "debug")


@dataclass(frozen=True)
class LauncherConfig:
    """How ``iga experiments run`` executes runs; every field is one of its flags.

    No GPU option: the empirical loop trains and evaluates on CPU (``empirical/execute.py``
    never moves the model), so a GPU per run would sit idle."""

    launcher: str = field(
        default="local",
        metadata={
            "help": "where runs execute: 'local' processes (--jobs of them) or a cluster "
            "through submitit (pip install 'iga[cluster]')",
            "choices": LAUNCHERS,
        },
    )
    cluster: str | None = field(
        default=None,
        metadata={
            "help": "submitit only: 'slurm', 'local' (subprocesses on this machine) or "
            "'debug' (in this process); none: slurm where sbatch exists, else local",
            "choices": CLUSTERS,
        },
    )
    partition: str | None = field(
        default=None, metadata={"help": "submitit only: Slurm partition to submit to"}
    )
    timeout_min: int = field(
        default=240,
        metadata={"help": "submitit only: wall-clock limit of one run, in minutes"},
    )
    cpus_per_task: int = field(
        default=1,
        metadata={"help": "submitit only: CPU cores (and torch threads) of one run"},
    )
    mem_gb: int | None = field(
        default=None, metadata={"help": "submitit only: memory of one run in GB"}
    )
    poll_s: float = field(
        default=10.0,
        metadata={"help": "submitit only: seconds between checks of the submitted runs"},
    )
    logs: str | None = field(
        default=None,
        metadata={"help": "submitit only: folder for its job files and logs (none: OUT/submitit)"},
    )

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"--launcher {self.launcher!r} is unknown; choose {LAUNCHERS}.")
        if self.cluster is not None and self.cluster not in CLUSTERS:
            raise ValueError(f"--cluster {self.cluster!r} is unknown; choose {CLUSTERS}.")
        for name in ("timeout_min", "cpus_per_task"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be >= 1, got {getattr(self, name)}.")
        if self.mem_gb is not None and self.mem_gb < 1:
            raise ValueError(f"--mem-gb must be >= 1, got {self.mem_gb}.")
        if self.poll_s <= 0:
            raise ValueError(f"--poll-s must be > 0, got {self.poll_s}.")
        if self.launcher == "local":
            given = [n for n in ("cluster", "partition", "mem_gb", "logs") if getattr(self, n)]
            if given:
                flags = ", ".join("--" + n.replace("_", "-") for n in given)
                raise ValueError(f"{flags} only apply to --launcher submitit.")


class Launcher(ABC):
    """Runs up to ``slots`` jobs at once; ``wait`` returns the outcomes of finished ones."""

    slots: int = 1

    @abstractmethod
    def submit(self, job: Job, out: Path) -> None: ...

    @abstractmethod
    def wait(self) -> list[Outcome]:
        """Block until at least one submitted job has finished; return every finished one."""

    @property
    @abstractmethod
    def busy(self) -> int:
        """How many submitted jobs have not been returned by ``wait`` yet."""

    def close(self) -> None:  # noqa: B027 (a no-op by default: most launchers hold nothing)
        """Release the workers (a no-op where there are none)."""


class LocalLauncher(Launcher):
    """``n_jobs`` spawned processes, one CPU thread each; one job runs in this process.

    ``executor`` replaces the pool (tests pass a thread pool); it is not shut down here.
    """

    def __init__(self, n_jobs: int = 1, executor: Executor | None = None) -> None:
        self.slots = max(1, n_jobs)
        self.pool, self.own_pool = executor, False
        if executor is None and n_jobs > 1:
            import multiprocessing as mp

            self.pool = ProcessPoolExecutor(n_jobs, mp_context=mp.get_context("spawn"))
            self.own_pool = True
        self.running: set[Future] = set()

    def submit(self, job: Job, out: Path) -> None:
        if self.pool is None:  # one job at a time: run it here, no process to start
            future: Future = Future()
            future.set_result(run_safely(job, str(out)))
        else:
            future = self.pool.submit(run_safely, job, str(out))
        self.running.add(future)

    def wait(self) -> list[Outcome]:
        done, self.running = wait(self.running, return_when=FIRST_COMPLETED)
        return [f.result() for f in done]

    @property
    def busy(self) -> int:
        return len(self.running)

    def close(self) -> None:
        if self.own_pool:
            self.pool.shutdown()


class SubmititLauncher(Launcher):
    """One submitit job per run (Slurm, or submitit's local executor), ``slots`` in flight.

    A run that fails inside ``run_safely`` comes back with its traceback; a submitit job
    that dies around it (time limit, node failure, cancelled) comes back with submitit's
    error. Either way no ``done`` marker was written, so the next sweep reruns it.
    """

    def __init__(self, config: LauncherConfig, out: Path, slots: int = 1) -> None:
        try:
            import submitit
        except ImportError as err:
            raise RuntimeError(
                "--launcher submitit needs the submitit package: pip install 'iga[cluster]' "
                "(or pip install 'submitit>=1.5')."
            ) from err
        self.config, self.slots = config, max(1, slots)
        folder = Path(config.logs) if config.logs else Path(out) / "submitit"
        self.executor = submitit.AutoExecutor(folder=folder / "%j", cluster=config.cluster)
        params = {
            "timeout_min": config.timeout_min,
            "cpus_per_task": config.cpus_per_task,
            "mem_gb": config.mem_gb,
            "name": "iga-experiments",
        }
        if config.partition:
            params["slurm_partition"] = config.partition
        self.executor.update_parameters(**params)
        self.running: list[tuple[object, Job]] = []

    def submit(self, job: Job, out: Path) -> None:
        handle = self.executor.submit(run_safely, job, str(out), self.config.cpus_per_task)
        self.running.append((handle, job))

    def wait(self) -> list[Outcome]:
        while True:
            finished = [(h, j) for h, j in self.running if h.done()]
            if finished:
                break
            time.sleep(self.config.poll_s)
        returned = {id(h) for h, _ in finished}
        self.running = [(h, j) for h, j in self.running if id(h) not in returned]
        return [self._outcome(h, j) for h, j in finished]

    @staticmethod
    def _outcome(handle, job: Job) -> Outcome:
        try:
            return handle.result()
        except Exception as err:  # the submitit job itself failed, not the run inside it
            return job, None, f"submitit job {handle.job_id} failed: {type(err).__name__}: {err}"

    @property
    def busy(self) -> int:
        return len(self.running)


def make_launcher(config: LauncherConfig, out: Path, n_jobs: int) -> Launcher:
    """The launcher ``config`` names, running ``n_jobs`` runs at once."""
    if config.launcher == "submitit":
        return SubmititLauncher(config, out, n_jobs)
    return LocalLauncher(n_jobs)
