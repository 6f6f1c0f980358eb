"""The estimator ablation's table and figure read the records they are given."""

from __future__ import annotations

import math

from paper_figures.estimator_figs import figure, late_mask_mean, select, table


def _record(est: str, k: int, seed: int, mask: float, ood: float, val: float) -> dict:
    history = [{"step": s, "mask_mean": 1.0 if s < 60 else mask} for s in range(0, 120, 12)]
    history.append({"step": 119, "mask_mean": mask, **({"snr": 0.5} if est == "split" else {})})
    return {
        "job": {"method": "iga", "seed": seed, "hparams": {"estimator": est, "tau": 5.0}},
        "num_domains": k,
        "test": {"accuracy_ood": ood, "accuracy_id": ood},
        "val": {"accuracy": val},
        "train": {"history": history},
    }


RECORDS = [
    *(_record("batch", 4, s, 0.1, 0.6, 0.2) for s in range(3)),  # best OOD, worst validation
    *(_record("split", 4, s, 0.7, 0.3, 0.5) for s in range(3)),
    _record("split", 2, 0, 0.8, 0.4, 0.5),
]


def test_late_mask_mean_reads_the_second_half_only():
    assert abs(late_mask_mean(RECORDS[0]) - 0.1) < 1e-12


def test_table_has_one_row_per_cell_with_the_noise_reference():
    text = table(RECORDS)
    assert "| batch | 5 | 4 | 0.100 ± 0.000 | 0.024 | 60.0 ± 0.0 |" in text
    assert f"| split | 5 | 2 | 0.800 | {math.exp(-2.5):.3f} |" in text
    assert text.count("\n") == 2 + 3


def test_selection_uses_validation_not_heldout_accuracy():
    (est, tau), val = select(RECORDS)
    assert (est, tau, val) == ("split", 5.0, 0.5)
    assert (
        est != max(RECORDS, key=lambda r: r["test"]["accuracy_ood"])["job"]["hparams"]["estimator"]
    )


def test_figure_has_both_panels():
    fig = figure(RECORDS)
    assert len(fig.axes) == 2 and fig.axes[0].get_lines()
