"""The four benchmark families, registered by name (an explicit table, no lookups by magic)."""

from __future__ import annotations

from iga.isomers.families import arithmetic, deduction, ordering, rules
from iga.isomers.families.base import Family, ProgramError, Solution

_REGISTRY: dict[str, Family] = {
    family.name: family
    for family in (arithmetic.FAMILY, deduction.FAMILY, ordering.FAMILY, rules.FAMILY)
}
FAMILIES: tuple[str, ...] = tuple(_REGISTRY)


def get_family(name: str) -> Family:
    """The family called ``name``; a clear error lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r}; choose one of {list(FAMILIES)}") from None


__all__ = ["FAMILIES", "Family", "ProgramError", "Solution", "get_family"]
