"""One look for every figure, and byte-stable files.

Fixed rcParams (no user matplotlibrc leaks in), the Agg backend, and PNG/PDF
metadata stripped of dates and version strings, so rebuilding from the same
records gives the same bytes and ``git diff`` shows only real changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; figures are plain Figure objects (no pyplot state)

from matplotlib.figure import Figure  # noqa: E402

RC = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "font.family": "DejaVu Sans",  # ships with matplotlib: no font lookup differences
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 7,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.4,
    "lines.markersize": 4,
    "pdf.fonttype": 42,  # TrueType in PDFs: editable text, no Type 3 fonts
    "svg.hashsalt": "iga",
    "path.simplify": False,
}
PNG_METADATA = {"Software": None}
PDF_METADATA = {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None}

# Method order, display names and colours: the same in every figure and table.
METHOD_LABELS = {
    "erm": "ERM-SFT",
    "irm": "IRMv1",
    "vrex": "V-REx",
    "groupdro": "GroupDRO",
    "fish": "Fish",
    "andmask": "AND-mask",
    "sandmask": "SAND-mask",
    "fishr": "Fishr",
    "ky-gradvar": "KY-GradVar",
    "pcgrad": "PCGrad",
    "iga": "IGA (ours)",
}
METHOD_COLORS = {  # tab10/tab20 hues, no two alike; ours is the only saturated red
    "erm": "#1f77b4",
    "irm": "#ff7f0e",
    "vrex": "#2ca02c",
    "groupdro": "#8c564b",
    "fish": "#9467bd",
    "andmask": "#e377c2",
    "sandmask": "#c5b0d5",
    "fishr": "#7f7f7f",
    "ky-gradvar": "#bcbd22",
    "pcgrad": "#17becf",
    "iga": "#d62728",
}
ERM_COLOR, IGA_COLOR = METHOD_COLORS["erm"], METHOD_COLORS["iga"]


def method_order(methods) -> list[str]:
    """Known methods in the registry's order (IGA last), then unknown ones sorted."""
    known = [m for m in METHOD_LABELS if m in methods]
    return known + sorted(set(methods) - set(METHOD_LABELS))


def label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def color(method: str):
    return METHOD_COLORS.get(method, "#17becf")


def new_figure(nrows: int = 1, ncols: int = 1, width: float = 6.4, height: float = 3.6, **kw):
    """A figure with fixed rcParams; returns ``(fig, axes)`` like ``plt.subplots``."""
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


@dataclass
class FigureSpec:
    """A built figure before saving: what the tests inspect.

    ``sources`` are the record files the numbers came from; ``command`` the
    command that rebuilds it. The caption file repeats both.
    """

    name: str
    fig: Figure
    caption: str
    sources: list[str] = field(default_factory=list)
    command: str = "python -m paper_figures --out figures"

    def caption_markdown(self) -> str:
        files = "\n".join(f"- `{s}`" for s in self.sources) or "- (none)"
        return (
            f"**Figure `{self.name}`.** {self.caption}\n\n"
            f"Produced by: `{self.command}`\n\nFrom the records:\n{files}\n"
        )


def save(spec: FigureSpec, out: Path) -> list[Path]:
    """Write ``NAME.png``, ``NAME.pdf`` and ``NAME.caption.md``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{spec.name}.png", out / f"{spec.name}.pdf", out / f"{spec.name}.caption.md"]
    with matplotlib.rc_context(RC):
        spec.fig.savefig(paths[0], metadata=PNG_METADATA)
        spec.fig.savefig(paths[1], metadata=PDF_METADATA)
    paths[2].write_text(spec.caption_markdown())
    return paths
