"""The validator: schema, isomorphism and solver agreement, line by line.

Every line of a JSONL file is checked on its own; a bad line is reported with its file,
line number and reasons, and never stops the good lines from loading.

Checks per set: the JSON shape (:mod:`iga.isomers.schema`); a known family; the stored
skeleton hash equals the recomputed one; the independent solver reproduces the stored
answer and steps; and for every isomer: the same answer, skeleton hash and step count
as the skeleton, no unfilled ``{slot}``, a rationale whose answer line reads the set's
answer, no answer line inside the prompt, a recorded shortcut cue that matches the
prompt, and for the symbolic teacher one rationale line per step naming that step's
key values (numbers, labels, bound phrases).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iga.isomers.answers import extract_answer, is_single_token, normalize_answer
from iga.isomers.families import FAMILIES, ProgramError, get_family
from iga.isomers.render import placeholders
from iga.isomers.schema import METADATA_REQUIRED, Isomer, IsomerSet, SchemaError
from iga.isomers.shortcut import CUE_TEMPLATE
from iga.isomers.skeleton import Skeleton, skeleton_hash
from iga.isomers.solver import solve
from iga.isomers.teacher import TEACHER, rationale_step_lines


@dataclass(frozen=True)
class LineError:
    """One invalid line: where, and why."""

    path: str
    line: int  # 1-based
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class ValidationReport:
    """The outcome of validating a file: the valid sets (kept) and one error per bad line."""

    path: str
    n_lines: int = 0  # non-blank lines seen
    valid: list[IsomerSet] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        return f"{self.path}: {len(self.valid)} valid set(s), {len(self.errors)} invalid line(s)"


class IsomerFormatError(ValueError):
    """A file holds invalid sets; ``errors`` lists every one as ``file:line: reason``."""

    def __init__(self, errors: list[LineError]) -> None:
        self.errors = errors
        more = f" (and {len(errors) - 1} more invalid line(s))" if len(errors) > 1 else ""
        super().__init__(f"{errors[0]}{more}")


def check_set(data: Any) -> tuple[IsomerSet | None, list[str]]:
    """Validate one parsed JSON value; returns the set (None if invalid) and the reasons."""
    try:
        iset = IsomerSet.from_dict(data)
    except SchemaError as err:
        return None, [str(err)]
    if iset.family not in FAMILIES:
        return None, [f"unknown family {iset.family!r}; known: {list(FAMILIES)}"]
    reasons = _check_skeleton(iset.family, iset.skeleton)
    if not reasons:
        for domain, isomer in iset.isomers.items():
            reasons += [f"isomer {domain!r}: {r}" for r in _check_isomer(iset, domain, isomer)]
    return (None if reasons else iset), reasons


def _check_skeleton(family: str, skeleton: Skeleton) -> list[str]:
    expected = skeleton_hash(family, skeleton.program)
    if skeleton.hash != expected:
        return [f"skeleton.hash is {skeleton.hash!r} but the program hashes to {expected!r}"]
    try:
        solution = solve(family, skeleton.program)
    except ProgramError as err:
        return [f"skeleton.program is invalid: {err}"]
    reasons = []
    if skeleton.answer != solution.answer:
        reasons.append(
            f"skeleton.answer is {skeleton.answer!r} but the solver gives {solution.answer!r}"
        )
    if skeleton.steps != solution.steps:
        reasons.append(f"skeleton.steps differ from the solver's {len(solution.steps)} step(s)")
    if not is_single_token(skeleton.answer) or normalize_answer(skeleton.answer) != skeleton.answer:
        reasons.append(f"skeleton.answer {skeleton.answer!r} is not a canonical single token")
    return reasons


def _check_isomer(iset: IsomerSet, domain: str, isomer: Isomer) -> list[str]:
    skeleton, meta = iset.skeleton, isomer.metadata
    missing = [key for key in METADATA_REQUIRED if key not in meta]
    if missing:
        return [f"metadata lacks {missing}"]
    reasons = []
    if isomer.answer != skeleton.answer:
        reasons.append(
            f"answer {isomer.answer!r} differs from the set's answer {skeleton.answer!r}"
        )
    if meta["skeleton_hash"] != skeleton.hash:
        reasons.append(f"metadata.skeleton_hash {meta['skeleton_hash']!r} is not {skeleton.hash!r}")
    if meta["n_steps"] != skeleton.n_steps:
        reasons.append(
            f"metadata.n_steps is {meta['n_steps']!r}, the skeleton has {skeleton.n_steps}"
        )
    if meta["domain"] != domain:
        reasons.append(f"metadata.domain {meta['domain']!r} does not match the key {domain!r}")
    for name in ("prompt", "rationale"):
        if placeholders(getattr(isomer, name)):
            reasons.append(f"{name} has an unfilled template slot")
    read = extract_answer(isomer.rationale)
    if read != skeleton.answer:
        reasons.append(f"rationale's answer line reads {read!r}, expected {skeleton.answer!r}")
    if extract_answer(isomer.prompt) is not None:
        reasons.append("prompt contains an answer line")
    if meta["teacher"] == TEACHER:
        reasons += _check_symbolic_steps(iset.family, skeleton, isomer)
    return reasons + _check_cue(isomer, skeleton.answer)


def _mentions(line: str, marker: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(marker)}(?!\w)", line, re.IGNORECASE) is not None


def _check_symbolic_steps(family: str, skeleton: Skeleton, isomer: Isomer) -> list[str]:
    lines = rationale_step_lines(isomer.rationale)
    if len(lines) != skeleton.n_steps:
        return [f"rationale has {len(lines)} step line(s), the skeleton {skeleton.n_steps} step(s)"]
    bindings = isomer.metadata.get("bindings")
    markers = get_family(family).markers
    for i, (line, step) in enumerate(zip(lines, skeleton.steps), start=1):
        try:
            expected = markers(skeleton.program, step, bindings)
        except (KeyError, IndexError, TypeError) as err:
            return [f"metadata.bindings do not fit the skeleton ({type(err).__name__}: {err})"]
        absent = [m for m in expected if not _mentions(line, m)]
        if absent:
            return [f"rationale line {i} does not state {absent} (tampered step?)"]
    return []


def _check_cue(isomer: Isomer, answer: str) -> list[str]:
    cue = isomer.metadata.get("shortcut")
    if cue is None:
        return []
    if not isinstance(cue, dict) or cue.get("mode") not in ("train", "absent", "reversed"):
        return ["metadata.shortcut must be null or an object with mode train|absent|reversed"]
    if cue["mode"] == "absent":
        return [] if cue.get("cue") is None else ["metadata.shortcut: mode absent but a cue is set"]
    value = cue.get("cue")
    if not isinstance(value, str) or not isomer.prompt.endswith(CUE_TEMPLATE.format(cue=value)):
        return [f"metadata.shortcut.cue {value!r} is not the cue at the end of the prompt"]
    if cue.get("agrees") != (normalize_answer(value) == answer):
        return ["metadata.shortcut.agrees does not match the cue and the answer"]
    if cue["mode"] == "reversed" and cue["agrees"]:
        return ["metadata.shortcut: a reversed cue must disagree with the answer"]
    return []


def validate_lines(lines: Iterable[str], path: str = "<lines>") -> ValidationReport:
    """Validate JSONL text line by line (blank lines are skipped, not errors)."""
    report, seen = ValidationReport(path), {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        report.n_lines += 1
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            report.errors.append(
                LineError(path, number, f"invalid JSON: {err.msg} (column {err.colno})")
            )
            continue
        iset, reasons = check_set(data)
        if iset is not None and iset.set_id in seen:
            reasons = [f"duplicate set_id {iset.set_id!r} (first on line {seen[iset.set_id]})"]
        if reasons:
            report.errors.append(LineError(path, number, "; ".join(reasons)))
            continue
        seen[iset.set_id] = number
        report.valid.append(iset)
    return report


def validate_file(path: str | os.PathLike) -> ValidationReport:
    """Validate a JSONL file of isomer sets; unreadable files raise ``OSError``."""
    with Path(path).open(encoding="utf-8") as handle:
        return validate_lines(handle, str(path))
