"""``iga theory``: run the numerical checks of THEOREMS.md and print their verdicts.

``iga theory sweep --problem ... --K 2,4,8`` tabulates the bound and the OOD risk of
ERM and IGA over a grid (``theory.sweep``).

``--quick`` (default, under a minute on two cores) runs every claim check at
small sizes; ``--full`` runs larger sizes plus the regime rows (the paper's
claims in settings where our theorems predict they fail, or barely hold) and, with
``--out DIR``, writes ``results.json`` and ``figures.json`` (the data behind the
paper figures). The exit status is non-zero when a claim check fails.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

from theory import sweep
from theory.checks import OOD_CONFIG, RATE_CONFIG, CheckResult, Settings, run_checks
from theory.common import JOINT_CONFIGS
from theory.sabotage import SABOTAGES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "theory",
        help="check the OOD bound and the SGD-rate convergence on synthetic problems",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        dest="mode",
        action="store_const",
        const="quick",
        help="small sizes, every claim check (default)",
    )
    mode.add_argument(
        "--full",
        dest="mode",
        action="store_const",
        const="full",
        help="larger sizes plus the regime checks",
    )
    p.add_argument("--json", type=Path, help="write the results (without figure data) to this file")
    p.add_argument("--out", type=Path, help="write results.json and figures.json to this directory")
    p.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    p.add_argument(
        "--sabotage",
        choices=SABOTAGES,
        help="break one iga operator on purpose; the matching checks must then fail",
    )
    p.set_defaults(func=main, mode="quick")
    sweep.register(p.add_subparsers(dest="theory_action", metavar="ACTION"))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _verdict(r: CheckResult) -> str:
    if r.role == "claim":
        return "PASS" if r.passed else "FAIL"
    if r.role == "joint":
        return "holds" if r.passed else "fails"
    if r.outcome is not None:  # a regime row: was its prediction confirmed by a test?
        return r.outcome if r.outcome == "confirmed" else r.outcome.upper()
    outcome = "passes" if r.passed else "fails"
    return f"{outcome} (predicted)" if r.as_expected else f"{outcome.upper()} (unpredicted)"


def format_table(results: list[CheckResult]) -> str:
    """One block per check: name, verdict, key numbers, intervals, test and p-value."""
    lines = []
    width = max(len(r.name) for r in results) + 2
    header = f"{'check':<{width}}{'verdict':<20}{'time':>7}  figures"
    lines += [header, "-" * max(len(header), 100)]
    for r in results:
        figures = ", ".join(f"{k}={_cell(v)}" for k, v in r.numbers.items())
        lines.append(f"{r.name:<{width}}{_verdict(r):<20}{r.seconds:>6.1f}s  {figures}")
        pad = " " * (width + 29)
        if r.ci:
            cis = ", ".join(f"{k} [{_cell(lo)}, {_cell(hi)}]" for k, (lo, hi) in r.ci.items())
            lines.append(f"{pad}CI {cis}")
        p = "" if r.p_value is None else f"  (p = {r.p_value:.3g})"
        lines.append(f"{pad}{r.theorem}: {r.test}{p}")
        lines.append(f"{pad}{r.detail}")
    return "\n".join(lines)


def _payload(results, settings: Settings, args, seconds: float, with_data: bool) -> dict:
    import numpy
    import statsmodels
    import torch

    import iga

    return {
        "mode": settings.mode,
        "seed": args.seed,
        "sabotage": args.sabotage,
        "seconds": round(seconds, 2),
        "all_claims_pass": all(r.passed for r in results if r.role == "claim"),
        "settings": asdict(settings),
        "iga_configs": {
            "ood": OOD_CONFIG.to_dict(),
            "rate": RATE_CONFIG.to_dict(),
            **{f"joint[{k}]": c.to_dict() for k, c in JOINT_CONFIGS.items()},
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": numpy.__version__,
            "statsmodels": statsmodels.__version__,
            "iga": iga.__version__,
        },
        "checks": [r.to_dict(with_data=with_data) for r in results],
    }


def main(args: argparse.Namespace) -> int:
    from iga.outputs import OutputPathError, check_output_dir, check_output_file

    try:  # before the checks run, not after
        if args.json:
            check_output_file(args.json, "--json", make_parents=True)
        if args.out:
            check_output_dir(args.out, "--out")
    except OutputPathError as err:
        print(f"iga theory: error: {err}", file=sys.stderr)
        return 2
    settings = Settings.full() if args.mode == "full" else Settings.quick()
    start = time.perf_counter()
    results = run_checks(
        settings, seed=args.seed, sabotage=args.sabotage, progress=args.mode == "full"
    )
    seconds = time.perf_counter() - start
    print(format_table(results))
    claims = [r for r in results if r.role == "claim"]
    failed = [r.name for r in claims if not r.passed]
    print(
        f"\n{len(claims) - len(failed)}/{len(claims)} claim checks pass"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
        + f"  ({settings.mode}, seed {args.seed}, {seconds:.1f} s)"
    )
    joint = [r for r in results if r.role == "joint"]
    if joint:
        print(
            f"{sum(r.passed for r in joint)}/{len(joint)} joint rows hold (both claims, "
            "same IGA setting: THEOREMS.md 4)"
        )
    regimes = [r for r in results if r.role == "regime"]
    if regimes:
        matched = sum(r.as_expected for r in regimes)
        print(f"{matched}/{len(regimes)} regime predictions confirmed by a test (THEOREMS.md 5)")
    if args.sabotage:
        print(f"sabotage {args.sabotage!r} was active: failures above are the point.")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(_payload(results, settings, args, seconds, False), indent=1)
        )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(
            json.dumps(_payload(results, settings, args, seconds, False), indent=1)
        )
        figures = {r.name: r.data for r in results if r.data}
        (args.out / "figures.json").write_text(json.dumps(figures, separators=(",", ":")))
    return 1 if failed else 0


def standalone(argv: list[str] | None = None) -> int:
    """``python -m theory [--quick|--full] ...``: the same as ``iga theory``."""
    parser = argparse.ArgumentParser(prog="python -m theory")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["theory", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))
