"""The symbolic teacher: a skeleton's reasoning steps written out in one domain's words.

A rationale is one short sentence per step, one step per line, then the answer line
(``Answer: <token>``, see :mod:`iga.isomers.answers`). The student is trained on the
whole rationale, answer line included; the prompt is masked from its loss.
"""

from __future__ import annotations

from iga.isomers.answers import ANSWER_PREFIX, format_answer_line
from iga.isomers.families import Family
from iga.isomers.families.base import Bindings
from iga.isomers.render import TemplatePicker
from iga.isomers.skeleton import Skeleton

TEACHER = "symbolic"


def symbolic_rationale(
    family: Family, skeleton: Skeleton, bindings: Bindings, pick: TemplatePicker
) -> str:
    """Step sentences, one per line, ending in the answer line."""
    lines = family.step_lines(skeleton.program, skeleton.steps, bindings, pick)
    return "\n".join([*lines, format_answer_line(skeleton.answer)])


def rationale_step_lines(rationale: str) -> list[str]:
    """The non-empty lines before the first answer line (a symbolic rationale's steps)."""
    lines = []
    for line in rationale.splitlines():
        if line.strip().lower().startswith(ANSWER_PREFIX.lower()):
            break
        if line.strip():
            lines.append(line.strip())
    return lines
