"""The data model of isomer sets and its JSON form (one set per JSONL line).

Structure only: field presence and types. Whether a set is *correct* (hashes, solver
agreement, isomorphism across domains) is :mod:`iga.isomers.validate`'s job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from iga.isomers.skeleton import Skeleton

SCHEMA_VERSION = 1
METADATA_REQUIRED = ("domain", "skeleton_hash", "n_steps", "teacher")


class SchemaError(ValueError):
    """A JSON value does not have the shape of an isomer set; the message names the field."""


@dataclass
class Isomer:
    """One domain's rendering of a skeleton. The student's target is ``rationale``,
    which ends in the answer line."""

    prompt: str
    rationale: str
    answer: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def completion(self) -> str:
        """The supervised text (rationale and answer line)."""
        return self.rationale

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "rationale": self.rationale,
            "answer": self.answer,
            "metadata": self.metadata,
        }


@dataclass
class IsomerSet:
    """One skeleton rendered in several domains: ``isomers`` maps domain -> :class:`Isomer`."""

    set_id: str
    family: str
    skeleton: Skeleton
    isomers: dict[str, Isomer]

    @property
    def domains(self) -> list[str]:
        return list(self.isomers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "set_id": self.set_id,
            "family": self.family,
            "skeleton": self.skeleton.to_dict(),
            "isomers": {domain: iso.to_dict() for domain, iso in self.isomers.items()},
        }

    def to_json(self) -> str:
        """One JSONL line (no trailing newline)."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Any) -> IsomerSet:
        """Build from parsed JSON; raises :class:`SchemaError` naming the bad field."""
        _expect(data, dict, "the line")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise SchemaError(
                f"schema_version must be {SCHEMA_VERSION}, got {data.get('schema_version')!r}"
            )
        set_id = _field(data, "set_id", str, "")
        if not set_id.strip():
            raise SchemaError("set_id must be a non-empty string")
        family = _field(data, "family", str, "")
        raw = _field(data, "skeleton", dict, "")
        skeleton = Skeleton(
            program=_field(raw, "program", dict, "skeleton."),
            answer=_field(raw, "answer", str, "skeleton."),
            steps=_field(raw, "steps", list, "skeleton."),
            hash=_field(raw, "hash", str, "skeleton."),
        )
        raw_isomers = _field(data, "isomers", dict, "")
        if not raw_isomers:
            raise SchemaError("isomers must hold at least one domain")
        isomers = {domain: _isomer(domain, value) for domain, value in raw_isomers.items()}
        return cls(set_id, family, skeleton, isomers)

    @classmethod
    def from_json(cls, line: str) -> IsomerSet:
        """Parse one JSONL line; bad JSON or shape raises :class:`SchemaError`."""
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            raise SchemaError(f"invalid JSON: {err.msg} at column {err.colno}") from None
        return cls.from_dict(data)


def _isomer(domain: str, value: Any) -> Isomer:
    where = f"isomers.{domain}."
    _expect(value, dict, where.rstrip("."))
    return Isomer(
        prompt=_field(value, "prompt", str, where),
        rationale=_field(value, "rationale", str, where),
        answer=_field(value, "answer", str, where),
        metadata=_field(value, "metadata", dict, where),
    )


def _expect(value: Any, kind: type, where: str) -> None:
    if not isinstance(value, kind):
        raise SchemaError(f"{where} must be a JSON {_JSON_NAME[kind]}, got {type(value).__name__}")


def _field(data: dict, key: str, kind: type, prefix: str) -> Any:
    if key not in data:
        raise SchemaError(f"missing field {prefix}{key}")
    _expect(data[key], kind, f"{prefix}{key}")
    return data[key]


_JSON_NAME = {dict: "object", list: "array", str: "string"}
