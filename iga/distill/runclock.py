"""Training time over a whole run, across kills and resumes (issue 18, item 8).

A ``TrainerCallback`` that is also an ``ExportableState``: HF's Trainer stores its
``state()`` in every checkpoint's ``trainer_state.json``, so a resumed run starts the
clock from the time the checkpoint's steps took. Kept apart from ``rundir`` because it
imports transformers (seconds), which ``iga --help`` must not pay for.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState


class RunClock(TrainerCallback, ExportableState):
    """Training seconds over the whole run, stored in every checkpoint's trainer state.

    ``seconds`` holds the time of the steps before this session (read from the
    checkpoint resumed from); time spent after the last checkpoint of a killed session
    is lost with its steps, so the total counts exactly the steps the run kept.
    """

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = float(seconds)
        self._start: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())

    def total(self) -> float:
        now = time.perf_counter()
        return self.seconds + (now - self._start if self._start is not None else 0.0)

    def state(self) -> dict:
        return {"args": {"seconds": self.total()}, "attributes": {}}

    @classmethod
    def stored_seconds(cls, checkpoint: str | None) -> float:
        """Seconds recorded in ``checkpoint``'s trainer state (0 without one)."""
        if checkpoint is None:
            return 0.0
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
        entry = (state.get("stateful_callbacks") or {}).get(cls.__name__) or {}
        return float((entry.get("args") or {}).get("seconds", 0.0))
