"""Logical Isomer Sets: one logical skeleton rendered in several semantic domains.

Four families (``arithmetic``, ``deduction``, ``ordering``, ``rules``) are the project's
benchmarks; each set holds one skeleton (program, solver answer, reasoning steps) and one
isomer per domain (prompt, symbolic-teacher rationale ending in ``Answer: <token>``,
answer, metadata). See ``docs/isomers.md`` for the JSONL schema and how to add a domain.

    >>> from iga.isomers import generate_sets
    >>> sets = generate_sets("deduction", ["law", "medicine"], n_sets=2, seed=0)
    >>> sets[0].isomers["law"].answer == sets[0].isomers["medicine"].answer
    True
"""

from iga.isomers.answers import ANSWER_PREFIX, extract_answer, format_answer_line, normalize_answer
from iga.isomers.domains import (
    DEFAULT_HELDOUT_DOMAINS,
    DEFAULT_TRAIN_DOMAINS,
    DOMAINS_ENV,
    Domain,
    DomainError,
    available_domains,
    get_domain,
    load_domain_file,
)
from iga.isomers.families import FAMILIES, ProgramError
from iga.isomers.generate import generate_sets
from iga.isomers.io import read_sets, write_sets
from iga.isomers.schema import SCHEMA_VERSION, Isomer, IsomerSet, SchemaError
from iga.isomers.shortcut import ShortcutSpec
from iga.isomers.skeleton import Skeleton
from iga.isomers.solver import solve
from iga.isomers.validate import IsomerFormatError, LineError, ValidationReport, validate_file

__all__ = [
    "ANSWER_PREFIX",
    "DEFAULT_HELDOUT_DOMAINS",
    "DEFAULT_TRAIN_DOMAINS",
    "DOMAINS_ENV",
    "FAMILIES",
    "SCHEMA_VERSION",
    "Domain",
    "DomainError",
    "Isomer",
    "IsomerFormatError",
    "IsomerSet",
    "LineError",
    "ProgramError",
    "SchemaError",
    "ShortcutSpec",
    "Skeleton",
    "ValidationReport",
    "available_domains",
    "extract_answer",
    "format_answer_line",
    "generate_sets",
    "get_domain",
    "load_domain_file",
    "normalize_answer",
    "read_sets",
    "solve",
    "validate_file",
    "write_sets",
]
