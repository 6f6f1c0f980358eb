"""The independent solver: answer and reasoning steps from a skeleton program alone.

It never looks at rendered text, so the validator can use it to check any stored set,
including sets written by hand or by another generator.
"""

from __future__ import annotations

from typing import Any

from iga.isomers.families import ProgramError, Solution, get_family


def solve(family: str, program: Any) -> Solution:
    """Solve ``program`` of ``family``; a malformed program raises :class:`ProgramError`."""
    solver = get_family(family).solve
    if not isinstance(program, dict):
        raise ProgramError(
            f"a {family} program must be a JSON object, got {type(program).__name__}"
        )
    try:
        return solver(program)
    except ProgramError:
        raise
    except (TypeError, KeyError, IndexError, AttributeError, ValueError) as err:
        # Hand-written programs can be wrong in ways the checks did not foresee.
        raise ProgramError(f"malformed {family} program ({type(err).__name__}: {err})") from None
