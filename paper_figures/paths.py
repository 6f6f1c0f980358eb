"""Where the stored results live by default (kept apart so ``iga --help`` stays fast:
the command line imports this, not matplotlib)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_THEORY = REPO / "results" / "theory"
# One folder per suite below this one; the loader takes "full" when it has runs.
DEFAULT_EMPIRICAL = REPO / "results" / "empirical"
# The step benchmark's committed report (`iga bench step --json results/bench/step.json`).
DEFAULT_BENCH = (REPO / "results" / "bench" / "step.json",)
