"""The one model-selection rule: training-domain validation (DomainBed's default oracle-free rule).

Among candidate hyperparameter settings, each scored by its runs on the search
seed, the selected one has the highest mean *training-domain* validation accuracy;
ties go to the lower mean validation loss, then to the earlier candidate. Held-out
domains are never looked at (empirical/PROTOCOL.md). ``empirical.suites.select``
uses it to choose which setting the main stage runs on every seed, and
``paper_figures`` uses it to find that setting again among the records.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")


def _mean(values: Sequence[float | None]) -> float:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def validation_score(accuracies: Sequence[float | None], losses: Sequence[float | None]) -> tuple:
    """Sort key of one candidate (smaller is better): (-mean accuracy, mean loss).

    A candidate without a validation accuracy (or loss) sorts after every one with it."""
    acc, loss = _mean(accuracies), _mean(losses)
    return (math.inf if math.isnan(acc) else -acc, math.inf if math.isnan(loss) else loss)


def select_best(candidates: Iterable[tuple[T, Sequence[float | None], Sequence[float | None]]]):
    """The best of ``(item, validation accuracies, validation losses)`` in candidate order.

    Returns the winning ``item`` (None for no candidates); ties on both scores go to
    the earliest candidate."""
    best, best_key = None, None
    for position, (item, accuracies, losses) in enumerate(candidates):
        key = (*validation_score(accuracies, losses), position)
        if best_key is None or key < best_key:
            best, best_key = item, key
    return best
