"""``iga theory sweep``: Theorem 1's bound and the true OOD risk over a grid of settings.

Every point of the product of the ``--K``, ``--dim``, ``--tau``, ``--noise`` and ``--n``
lists trains ERM and IGA on the same R draws (``theory.pairs.train_pair``) and records,
for each method, the mean and standard error of the bound ``Rhat_K + Dev_K``, the
true OOD risk ``R_Q``, the OOD excess, the slack ``(R_Q - Rhat_K) / Dev_K`` and the
trivial predictor's certificate. Output: ``sweep.csv``, ``sweep.json`` and
``sweep.png`` (bound and OOD risk against K) in ``--out``.
"""

from __future__ import annotations

import csv
import itertools
import json
import sys
from dataclasses import replace
from pathlib import Path

import iga
from theory.common import Settings, classification_problem, lora_problem, regression_problem
from theory.pairs import mean_se, random_rotation, train_pair

PROBLEMS = ("regression", "classification", "lora", "rotated")
FIELDS = ("bound", "ood", "ood_excess", "deviation", "train")


class SweepError(ValueError):
    """Bad command-line input: ``flag`` names the option."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag


def parse_list(flag: str, text: str, kind: type, low: float, high: float | None = None):
    """``"2,4,8"`` -> ``[2, 4, 8]``; every value of type ``kind`` in ``[low, high]``."""
    values = []
    for part in str(text).split(","):
        try:
            value = kind(part.strip())
        except ValueError:
            raise SweepError(flag, f"{part.strip()!r} is not a {kind.__name__}") from None
        if not (value >= low and (high is None or value <= high)):
            bound = f">= {low}" + ("" if high is None else f" and <= {high}")
            raise SweepError(flag, f"every value must be {bound}, got {value!r}")
        values.append(value)
    if not values:
        raise SweepError(flag, "give at least one value")
    return values


def make_problem(name: str, dim: int, noise: float):
    """The problem at input dimension ``dim`` with noise level ``noise``.

    Linear problems: ``d_inv = dim - dim // 2`` invariant and ``d_spu = dim // 2``
    shortcut features; ``noise`` is the label noise (regression) or the shortcut
    features' noise (classification). LoRA: ``in_dim = dim``, label noise ``noise``.
    """
    if name == "lora":
        return lora_problem(in_dim=dim, noise_y=noise)
    spu = dim // 2
    if name == "classification":
        return classification_problem(d_inv=dim - spu, d_spu=spu, noise_spu=noise)
    return regression_problem(d_inv=dim - spu, d_spu=spu, noise_y=noise)


def sweep(args) -> list[dict]:
    """One row per grid point (module docstring)."""
    rows = []
    grid = itertools.product(args.dim, args.tau, args.noise, args.n, args.K)
    for dim, tau, noise, n, K in grid:
        config = iga.IGAConfig(tau=tau, variance=args.variance, projection="svd")
        problem = make_problem(args.problem, dim, noise)
        s = replace(
            Settings.quick(),
            n_per_domain=n,
            n_classification=n,
            train_steps=args.steps,
            lora_steps=args.steps,
        )
        kw = (
            {"rotation": random_rotation(problem.d, args.seed + 17)}
            if args.problem == "rotated"
            else {}
        )
        name = "regression" if args.problem == "rotated" else args.problem
        pair = train_pair(name, problem, K, args.reps, s, args.seed, config, **kw)
        point = {
            "problem": args.problem,
            "K": K,
            "dim": dim,
            "tau": tau,
            "noise": noise,
            "n": n,
            "variance": args.variance,
            "reps": args.reps,
        }
        rows.append({**point, **mean_se(pair)})
    return rows


def write_outputs(rows: list[dict], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "sweep.csv", out / "sweep.json", out / "sweep.png"]
    with paths[0].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    paths[1].write_text(json.dumps({"rows": rows}, indent=1))
    plot(rows, paths[2])
    return paths


def plot(rows: list[dict], path: Path) -> None:
    """Bound (solid) and OOD risk (dashed) against K, one colour per method and setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    key = lambda r: (r["dim"], r["tau"], r["noise"], r["n"])  # noqa: E731
    for setting in sorted({key(r) for r in rows}):
        pts = sorted((r for r in rows if key(r) == setting), key=lambda r: r["K"])
        ks = [r["K"] for r in pts]
        label = "dim {} tau {:g} noise {:g} n {}".format(*setting)
        for m, colour in (("erm", "tab:grey"), ("iga", "tab:blue")):
            ax.errorbar(
                ks,
                [r[f"bound_{m}"] for r in pts],
                [r[f"bound_{m}_se"] for r in pts],
                color=colour,
                label=f"{m.upper()} bound, {label}",
            )
            ax.errorbar(
                ks,
                [r[f"ood_{m}"] for r in pts],
                [r[f"ood_{m}_se"] for r in pts],
                color=colour,
                linestyle="--",
                label=f"{m.upper()} OOD risk",
            )
        ax.plot(ks, [r["trivial"] for r in pts], color="k", linestyle=":", label="trivial")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")  # bounds and OOD risks differ by an order of magnitude
    ax.set_xlabel("K (training domains)")
    ax.set_ylabel("risk")
    ax.set_title(f"Theorem 1 on {rows[0]['problem']}")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def validate(args) -> None:
    """Turn the raw strings into lists; raise ``SweepError`` naming the flag."""
    if args.problem not in PROBLEMS:
        raise SweepError("--problem", f"choose one of {', '.join(PROBLEMS)}")
    args.K = parse_list("--K", args.K, int, 2)
    lo_dim, hi_dim = (3, None) if args.problem == "lora" else (2, 24)
    args.dim = parse_list("--dim", args.dim, int, lo_dim, hi_dim)
    args.tau = parse_list("--tau", args.tau, float, 0.0)
    args.noise = parse_list("--noise", args.noise, float, 0.0)
    args.n = parse_list("--n", args.n, int, 2)
    if args.variance not in ("relative", "raw"):
        raise SweepError("--variance", f"choose 'relative' or 'raw', got {args.variance!r}")
    for flag, low in (("--reps", 2), ("--steps", 1), ("--seed", 0)):
        name = flag[2:]
        values = parse_list(flag, getattr(args, name), int, low)
        if len(values) != 1:
            raise SweepError(flag, "give one value")
        setattr(args, name, values[0])
    if args.problem == "classification" and min(args.noise) <= 0:
        raise SweepError("--noise", "classification needs noise > 0 (the error is a ratio)")


def main(args) -> int:
    try:
        validate(args)
    except SweepError as e:
        print(f"iga theory sweep: error: {e}", file=sys.stderr)
        return 2
    rows = sweep(args)
    for r in rows:
        print(
            f"K={r['K']:<3} dim={r['dim']:<3} tau={r['tau']:<5g} noise={r['noise']:<5g} "
            f"n={r['n']:<5} bound ERM {r['bound_erm']:.4g} IGA {r['bound_iga']:.4g} | "
            f"OOD ERM {r['ood_erm']:.4g} IGA {r['ood_iga']:.4g} | slack ERM "
            f"{r['slack_erm']:.3g} IGA {r['slack_iga']:.3g} | trivial {r['trivial']:.4g}"
        )
    if args.out:
        for path in write_outputs(rows, args.out):
            print(f"wrote {path}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows}, indent=1))
    return 0


def register(sub) -> None:
    """Add ``sweep`` to the ``iga theory`` subcommands."""
    p = sub.add_parser(
        "sweep", help="bound and OOD risk of ERM and IGA over a grid", description=__doc__
    )
    p.add_argument("--problem", default="regression", help=f"one of {', '.join(PROBLEMS)}")
    p.add_argument("--K", default="2,4,8,16,32", help="training domains, comma-separated")
    p.add_argument("--dim", default="8", help="input dimension(s) (linear: 2-24, half shortcut)")
    p.add_argument("--tau", default="5", help="mask temperature(s)")
    p.add_argument("--noise", default="0.5", help="noise level(s) (see make_problem)")
    p.add_argument("--n", default="200", help="examples per domain")
    p.add_argument("--variance", default="relative", help="'relative' or 'raw'")
    p.add_argument("--reps", default="20", help="independent draws per point")
    p.add_argument("--steps", default="300", help="full-batch GD steps")
    p.add_argument("--seed", default="0", help="master seed of the problem draws")
    p.add_argument("--out", type=Path, help="write sweep.csv, sweep.json and sweep.png here")
    p.add_argument("--json", type=Path, help="write the rows to this JSON file")
    p.set_defaults(func=main)
