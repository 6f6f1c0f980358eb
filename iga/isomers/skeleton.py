"""A skeleton: one problem's logical content, shared by every isomer of a set.

``program`` is the family's domain-free problem; ``answer`` and ``steps`` are what the
solver derives from it; ``hash`` identifies the problem (family + program), so every
isomer can name the skeleton it renders.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from iga.isomers.solver import solve


def canonical_json(value: Any) -> str:
    """Key-sorted, space-free JSON: equal values give equal text (hashes, determinism)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def skeleton_hash(family: str, program: dict) -> str:
    """16 hex digits of SHA-256 over the family and the canonical program."""
    text = canonical_json({"family": family, "program": program})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Skeleton:
    """The logical problem behind a set: program, solver answer, ordered steps, hash."""

    program: dict[str, Any]
    answer: str
    steps: list[dict[str, Any]]
    hash: str

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "program": self.program,
            "answer": self.answer,
            "steps": self.steps,
            "hash": self.hash,
        }


def make_skeleton(family: str, program: dict[str, Any]) -> Skeleton:
    """Solve ``program`` and wrap it; the program is normalized to plain JSON types first."""
    program = json.loads(canonical_json(program))  # tuples -> lists, so a reload compares equal
    solution = solve(family, program)
    return Skeleton(program, solution.answer, solution.steps, skeleton_hash(family, program))
