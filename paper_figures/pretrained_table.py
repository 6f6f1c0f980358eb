"""The pretrained student's test table (issue 15, item 3): curve points scored on the
run's test sets by ``scripts/learning_curve.py --test-at STEP``.

``python -m paper_figures.pretrained_table --curves results/pretrained/curves --out
figures --readme README.md`` reads every ``<curve>/test/step-<n>/summary.json`` and
``eval.json`` and writes ``pretrained_test.md`` (also pasted into the README's
pretrained-table block): one row per scored point, each family's in-domain and
held-out accuracy, their means with a 95 % interval over isomer sets, the Logical
Consistency Score, answer consistency and the training time to that step.

Under the table, a line per point splits each family's in-domain prompts by whether
the completion's first line is the teacher's first line (the first step of its
chain), with the accuracy of each part: where a chain goes wrong at its first step,
this says so. The teacher's rationales are rebuilt from the curve's
``curve_config.json`` (its test sets: ``iga.distill.run.load_eval_sets``), in the
rationale style of its training sets (a curve trained on ordering sets made with
``rationale=restate`` is compared with the restated teacher); a curve without a
``curve_config.json`` gets no such line.

The interval treats an isomer set as the unit: the domains of a set share one answer
(and mostly one chain), so they are not independent draws. The half-width is the
t-interval of the per-set accuracies (each the mean over that set's domains).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from empirical.stats import mean_ci, paired
from paper_figures.readme import paste_and_report

REQUIRED = {"method", "steps", "schedule_steps", "train_seconds", "seconds_per_step", "eval"}


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err}); score the point again.") from err


def load_points(curves: Path) -> list[dict]:
    """Every scored point under ``curves``: its summary plus ``curve`` (the folder name)
    and ``examples`` (from ``eval.json``), sorted by step, then curve."""
    if not curves.is_dir():
        raise FileNotFoundError(f"--curves {curves}: no such folder.")
    points, first_lines = [], {}
    for path in sorted(curves.glob("*/test/step-*/summary.json")):
        ev_path = path.with_name("eval.json")
        if not ev_path.is_file():
            raise FileNotFoundError(f"{ev_path}: missing beside {path.name}; score it again.")
        summary, ev = _read(path), _read(ev_path)
        missing = sorted(REQUIRED - set(summary))
        if missing:
            raise ValueError(f"{path}: not a --test-at summary (no {', '.join(missing)}).")
        examples = ev.get("examples", [])
        curve = path.parents[2]
        if curve not in first_lines:  # once per curve, not per scored point
            first_lines[curve] = teacher_first_lines(curve / "curve_config.json")
        points.append({
            **summary, "curve": curve.name, "examples": examples,
            "first_lines": first_lines[curve],
        })  # fmt: skip
    if not points:
        raise FileNotFoundError(
            f"{curves}: no scored points (*/test/step-*/summary.json); run "
            "scripts/learning_curve.py --name NAME --test-at STEP first."
        )
    return sorted(points, key=lambda p: (p["steps"], p["curve"]))


def teacher_first_lines(path: Path) -> dict[tuple[str, str], str] | None:
    """(set id, domain) -> first line of the teacher's rationale on the test sets of the
    curve whose ``curve_config.json`` is ``path``; None when there is no such file."""
    if not path.is_file():
        return None
    from iga.distill.config import DistillConfig
    from iga.distill.run import load_eval_sets

    stored = _read(path)
    if not isinstance(stored, dict) or not isinstance(stored.get("distill"), dict):
        raise ValueError(f"{path}: no 'distill' object; not a curve_config.json.")
    config = DistillConfig.from_dict(stored["distill"], where=str(path))
    # trained on another teacher style: render the test sets' teacher so too
    styles = rationale_styles(config.sets, path)
    sets = load_eval_sets(config, {f: {"rationale": style} for f, style in styles.items()})
    return {
        (s.set_id, d): iso.rationale.split("\n")[0] for s in sets for d, iso in s.isomers.items()
    }


def rationale_styles(files, where: Path) -> dict[str, str]:
    """family -> the ``rationale`` knob its training sets in ``files`` were made with
    (programs that store one, as ordering's ``restate`` does); one style per family."""
    from iga.isomers.io import read_sets

    seen: dict[str, set] = defaultdict(set)
    for file in files:
        if not Path(file).is_file():
            raise FileNotFoundError(
                f"{where}: training set file {file} not found (paths are relative to the "
                "folder the curve ran in, the repository root)."
            )
        for s in read_sets(file):
            seen[s.family].add(s.skeleton.program.get("rationale", "chain"))
    mixed = sorted(f for f, v in seen.items() if len(v) > 1)
    if mixed:
        raise ValueError(f"{where}: the training sets of {mixed} mix rationale styles.")
    return {f: v.pop() for f, v in seen.items() if v != {"chain"}}


def first_line_split(examples: list[dict], first_lines: dict, domains: set[str]) -> dict:
    """family -> ((prompts, accuracy) whose first completion line is the teacher's,
    (prompts, accuracy) whose first line is not), over ``domains``."""
    parts: dict[str, tuple[list[bool], list[bool]]] = defaultdict(lambda: ([], []))
    for e in examples:
        if e["domain"] not in domains:
            continue
        key = (e["set_id"], e["domain"])
        if key not in first_lines:
            raise ValueError(
                f"test example {key} is not among the curve's test sets; was it scored "
                "with another curve_config.json?"
            )
        same = e["completion"].split("\n")[0].strip() == first_lines[key].strip()
        parts[e["family"]][0 if same else 1].append(bool(e["correct"]))

    def share(v: list[bool]) -> tuple[int, float | None]:
        return len(v), (sum(v) / len(v) if v else None)

    return {f: (share(a), share(b)) for f, (a, b) in sorted(parts.items())}


def set_interval(examples: list[dict], domains: set[str]) -> tuple[float, float, int]:
    """(mean, 95 % t half-width, sets) of per-set accuracy over ``domains``
    (``empirical.stats.mean_ci``, the project's one interval)."""
    return tuple(mean_ci(list(per_set_accuracy(examples, domains).values())))


def by_question_kind(examples: list[dict], family: str, domains: set[str]) -> dict:
    """kind -> (accuracy, prompts) of ``family`` over ``domains``, where the kind is read
    from the gold answer: "yes/no" for a yes or no answer, "which one" for any other
    (ordering asks both: is A above B, and which one is the top of the chain)."""
    kinds: dict[str, list[bool]] = defaultdict(list)
    for e in examples:
        if e["family"] == family and e["domain"] in domains:
            kind = "yes/no" if e["answer"] in ("yes", "no") else "which one"
            kinds[kind].append(bool(e["correct"]))
    return {k: (sum(v) / len(v), len(v)) for k, v in sorted(kinds.items())}


def per_set_accuracy(examples: list[dict], domains: set[str], family=None) -> dict[str, float]:
    """set id -> accuracy over its isomers in ``domains`` (of ``family`` only if given)."""
    by_set: dict[str, list[bool]] = defaultdict(list)
    for e in examples:
        if e["domain"] in domains and (family is None or e["family"] == family):
            by_set[e["set_id"]].append(bool(e["correct"]))
    return {k: sum(v) / len(v) for k, v in by_set.items()}


def paired_difference(a: list[dict], b: list[dict], domains: set[str], family=None):
    """(mean of a - b, 95 % t half-width, p of the paired t-test, sets) over the isomer
    sets both scored (``empirical.stats.paired`` with sets in place of seeds): the same
    test prompts, so the pairing removes the sets' own difficulty. One run per method:
    it compares these two runs, not two methods."""
    x, y = per_set_accuracy(a, domains, family), per_set_accuracy(b, domains, family)
    c = paired(x, y, "accuracy", family or "all", "b")
    return c.diff, c.ci, c.p, c.n


def paired_lines(points: list[dict]) -> list[str]:
    """For every step scored for ERM and another method: ERM minus that method."""
    lines = []
    for p in points:
        if p["method"] == "erm":
            continue
        erm = [q for q in points if q["method"] == "erm" and q["steps"] == p["steps"]]
        if not erm:
            continue
        ev = p["eval"]
        cells = []
        for label, domains in (
            ("in-domain", ev["train_domains"]),
            ("held-out", ev["heldout_domains"]),
        ):
            m, h, pv, n = paired_difference(erm[0]["examples"], p["examples"], set(domains))
            cells.append(f"{label} {100 * m:+.1f} ± {100 * h:.1f} (p {pv:.3f}, {n} sets)")
        fams = []
        for f in sorted(ev["per_family"]):
            m, h, pv, _ = paired_difference(
                erm[0]["examples"], p["examples"], set(ev["train_domains"]), f
            )
            fams.append(f"{f} {100 * m:+.1f} ± {100 * h:.1f}")
        lines.append(
            f"ERM minus {p['method']} at step {p['steps']}, paired over test sets: "
            + "; ".join(cells)
            + "; in-domain per family: "
            + ", ".join(fams)
            + "."
        )
    return lines


def table(points: list[dict]) -> str:
    families = sorted({f for p in points for f in p["eval"]["per_family"]})
    head = ["curve", "method", "step", *families, "ID mean", "held-out mean"]
    head += ["LCS", "answer consistency", "train h", "s/step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def pct(v) -> str:
        return "—" if v is None else f"{100 * v:.1f}"

    n_sets = set()
    for p in points:
        ev = p["eval"]
        cells = [p["curve"], p["method"], f"{p['steps']} of {p['schedule_steps']}"]
        for f in families:
            fam = ev["per_family"].get(f, {})
            cells.append(f"{pct(fam.get('id'))} / {pct(fam.get('ood'))}")
        for domains in (ev["train_domains"], ev["heldout_domains"]):
            mean, half, n = set_interval(p["examples"], set(domains))
            n_sets.add(n)
            cells.append(f"{100 * mean:.1f} ± {100 * half:.1f}")
        cells += [f"{ev['lcs']:.4f}", f"{ev['answer_consistency']:.3f}"]
        cells += [f"{p['train_seconds'] / 3600:.2f}", f"{p['seconds_per_step']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    kinds = []
    for p in points:
        split = by_question_kind(p["examples"], "ordering", set(p["eval"]["train_domains"]))
        if len(split) > 1:
            cells = ", ".join(f"{k} {100 * a:.1f} % of {n}" for k, (a, n) in split.items())
            kinds.append(f"{p['curve']} step {p['steps']}: {cells}")
    firsts = []
    for p in points:
        if p.get("first_lines") is None:
            continue
        split = first_line_split(p["examples"], p["first_lines"], set(p["eval"]["train_domains"]))
        cells = []
        for f, ((n_same, a_same), (n_other, a_other)) in split.items():
            cell = f"{f} {n_same} of {n_same + n_other}"
            if n_same:
                cell += f" ({100 * a_same:.0f} % right"
                cell += f"; the others {100 * a_other:.0f} %)" if n_other else ")"
            elif n_other:
                cell += f" (the others {100 * a_other:.0f} % right)"
            cells.append(cell)
        firsts.append(f"{p['curve']} step {p['steps']}: " + ", ".join(cells))
    n_examples = sorted({p["eval"]["n_examples"] for p in points})
    note = (
        f"\nTest sets: {', '.join(map(str, n_examples))} prompts per point; each family "
        "cell is in-domain / held-out accuracy (%); the means carry a 95 % t-interval over "
        f"the {', '.join(map(str, sorted(n_sets)))} isomer sets they average. LCS: lower is "
        "better. Training time is the curve's recorded s/step (evaluations excluded).\n"
    )
    if kinds:
        note += "\nOrdering in-domain by question kind: " + "; ".join(kinds) + ".\n"
    if firsts:
        note += (
            "\nIn-domain prompts whose completion starts with the teacher's first line "
            "(accuracy of those, and of the others): " + "; ".join(firsts) + ".\n"
        )
    for line in paired_lines(points):
        note += "\n" + line + "\n"
    return "\n".join(lines) + "\n" + note


def build(curves: Path, out: Path) -> Path:
    text = table(load_points(curves))  # first: a bad record writes nothing
    md = out / "pretrained_test.md"
    out.mkdir(parents=True, exist_ok=True)
    md.write_text(text)
    return md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--curves",
        type=Path,
        default=Path("results/pretrained/curves"),
        help="folder of curves written by scripts/learning_curve.py",
    )
    p.add_argument("--out", type=Path, default=Path("figures"), help="where the table goes")
    p.add_argument(
        "--readme",
        type=Path,
        help="also paste the table into this file's pretrained-table block (e.g. README.md)",
    )
    args = p.parse_args(argv)
    if args.readme is not None and not args.readme.is_file():
        print(f"error: --readme {args.readme}: no such file.", file=sys.stderr)
        return 2
    try:
        md = build(args.curves, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(md)
    if args.readme is not None:
        if not paste_and_report(args.readme, md.read_text(), "pretrained-table", "test table"):
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
