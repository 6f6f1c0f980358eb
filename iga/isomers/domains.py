"""Semantic domains: a lexicon and templates per family, loaded from JSON or YAML files.

A domain is data, never code. Built-in domains live in ``iga/isomers/domains/``; more
are found in the files or directories listed in the ``IGA_DOMAINS_PATH`` environment
variable (``os.pathsep``-separated) and in ``paths`` arguments (the CLI's
``--domains-file``). ``domains/_defaults.yaml`` holds the templates a domain file may
leave out. The file schema is documented in ``docs/isomers.md``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from iga.isomers.families import FAMILIES, get_family
from iga.isomers.render import TemplateError, template_slots

DOMAINS_ENV = "IGA_DOMAINS_PATH"
BUILTIN_DIR = Path(__file__).parent / "domains"
DEFAULTS_FILE = BUILTIN_DIR / "_defaults.yaml"
DEFAULT_TRAIN_DOMAINS: tuple[str, ...] = ("mathematics", "law", "medicine", "science")
DEFAULT_HELDOUT_DOMAINS: tuple[str, ...] = ("cooking", "sports")
_SUFFIXES = (".json", ".yaml", ".yml")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_WORD = re.compile(r"[a-z]+")

# Function words every domain may use; any other lexicon word is domain-specific.
STOPWORDS = frozenset(
    "a an the is are was were be been has have had does do did not no of to in on at for "
    "with by from than and or if then so it its as that this per into more less most least".split()
)


class DomainError(ValueError):
    """A domain file is malformed, missing, or too small for the requested problems."""


@dataclass(frozen=True)
class Domain:
    """One semantic surface: per family, lexicon lists and template alternatives."""

    name: str
    description: str
    lexicon: dict[str, dict[str, list]]  # family -> lexicon key -> entries
    templates: dict[str, dict[str, list[str]]]  # family -> template key -> alternatives
    source: str
    version: str  # 12 hex digits over lexicon + templates, recorded in each isomer

    def supports(self, family: str) -> bool:
        return family in self.lexicon

    def check_capacity(self, family: str, needs: dict[str, int]) -> None:
        """Raise unless the lexicon has enough distinct entries for ``needs``."""
        if not self.supports(family):
            raise DomainError(f"domain {self.name!r} ({self.source}) has no {family} lexicon")
        for key, count in needs.items():
            have = len(self.lexicon[family][key])
            if have < count:
                raise DomainError(
                    f"domain {self.name!r} ({self.source}): lexicon.{family}.{key} has {have} "
                    f"entries but these knobs need {count}; add entries or lower the knobs"
                )


def lexicon_words(domain: Domain) -> set[str]:
    """Lower-case words of every lexicon entry of ``domain``, minus :data:`STOPWORDS`."""
    words: set[str] = set()
    for lists in domain.lexicon.values():
        for entries in lists.values():
            for entry in entries:
                values = entry.values() if isinstance(entry, dict) else [entry]
                for value in values:
                    words |= set(_WORD.findall(value.lower()))
    return words - STOPWORDS


def _read_data(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, json.JSONDecodeError, yaml.YAMLError) as err:
        raise DomainError(f"{path}: cannot read domain file: {err}") from None


def _check_entry(where: str, entry: Any, keys: tuple[str, ...], may_be_empty: tuple) -> Any:
    def text_ok(value: Any, empty_ok: bool) -> bool:
        if not isinstance(value, str) or "{" in value or "}" in value:
            return False
        return empty_ok or bool(value.strip())

    if not keys:
        if not text_ok(entry, False):
            raise DomainError(f"{where}: must be a non-empty string without braces, got {entry!r}")
        return entry.strip()
    if not isinstance(entry, dict) or set(entry) != set(keys):
        raise DomainError(f"{where}: must be an object with exactly the fields {list(keys)}")
    for key in keys:
        if not text_ok(entry[key], key in may_be_empty):
            raise DomainError(f"{where}.{key}: must be a string without braces, got {entry[key]!r}")
    return {key: entry[key].strip() for key in keys}


def _parse_lexicon(where: str, family: str, raw: Any) -> dict[str, list]:
    spec = get_family(family).lexicon
    if not isinstance(raw, dict) or set(raw) != set(spec):
        raise DomainError(f"{where}: must be an object with exactly the keys {sorted(spec)}")
    parsed: dict[str, list] = {}
    for key, rule in spec.items():
        entries = raw[key]
        if not isinstance(entries, list) or len(entries) < rule.min_count:
            raise DomainError(f"{where}.{key}: needs a list of at least {rule.min_count} entries")
        items = [
            _check_entry(f"{where}.{key}[{i}]", e, rule.keys, rule.may_be_empty)
            for i, e in enumerate(entries)
        ]
        if len({json.dumps(x, sort_keys=True) for x in items}) != len(items):
            raise DomainError(f"{where}.{key}: entries must be distinct")
        parsed[key] = items
    return parsed


def _parse_templates(where: str, family: str, raw: Any) -> dict[str, list[str]]:
    spec = get_family(family).templates
    if not isinstance(raw, dict):
        raise DomainError(f"{where}: must be an object mapping template keys to lists")
    parsed: dict[str, list[str]] = {}
    for key, options in raw.items():
        if key not in spec:
            raise DomainError(f"{where}: unknown template key {key!r}; known: {sorted(spec)}")
        options = [options] if isinstance(options, str) else options
        if not isinstance(options, list) or not options:
            raise DomainError(f"{where}.{key}: must be a non-empty list of strings")
        for i, template in enumerate(options):
            _check_template(f"{where}.{key}[{i}]", template, spec[key])
        parsed[key] = list(options)
    return parsed


def _check_template(where: str, template: Any, spec) -> None:
    if not isinstance(template, str) or not template.strip():
        raise DomainError(f"{where}: must be a non-empty string")
    try:
        slots = template_slots(template)
    except TemplateError as err:
        raise DomainError(f"{where}: {err}") from None
    if slots - spec.allowed:
        raise DomainError(
            f"{where}: unknown slot(s) {sorted(slots - spec.allowed)}; "
            f"allowed: {sorted(spec.allowed)}"
        )
    if spec.required - slots:
        raise DomainError(f"{where}: must use the slot(s) {sorted(spec.required - slots)}")


@functools.lru_cache(maxsize=1)
def default_templates() -> dict[str, dict[str, list[str]]]:
    """Templates every domain inherits unless it overrides a key (``_defaults.yaml``)."""
    raw = _read_data(DEFAULTS_FILE)
    where = str(DEFAULTS_FILE)
    if not isinstance(raw, dict) or set(raw) != set(FAMILIES):
        raise DomainError(f"{where}: must hold templates for exactly {list(FAMILIES)}")
    parsed = {
        family: _parse_templates(f"{where}: {family}", family, raw[family]) for family in FAMILIES
    }
    for family, templates in parsed.items():
        missing = set(get_family(family).templates) - set(templates)
        if missing:
            raise DomainError(f"{where}: {family} lacks template keys {sorted(missing)}")
    return parsed


def parse_domain(data: Any, source: str) -> Domain:
    """Validate a domain's data (a parsed JSON/YAML object) and merge the default templates."""
    if not isinstance(data, dict):
        raise DomainError(f"{source}: a domain file must hold one object")
    unknown = set(data) - {"name", "description", "lexicon", "templates"}
    if unknown:
        raise DomainError(f"{source}: unknown top-level field(s) {sorted(unknown)}")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise DomainError(f"{source}: 'name' must match {_NAME.pattern}, got {name!r}")
    raw_lexicon, raw_templates = data.get("lexicon"), data.get("templates") or {}
    if not isinstance(raw_lexicon, dict) or not raw_lexicon:
        raise DomainError(f"{source}: 'lexicon' must map at least one family to its lists")
    if not isinstance(raw_templates, dict):
        raise DomainError(f"{source}: 'templates' must map families to template lists")
    for family in set(raw_lexicon) | set(raw_templates):
        if family not in FAMILIES:
            raise DomainError(f"{source}: unknown family {family!r}; known: {list(FAMILIES)}")
        if family not in raw_lexicon:
            raise DomainError(f"{source}: templates given for {family!r} but no lexicon")
    lexicon = {f: _parse_lexicon(f"{source}: lexicon.{f}", f, raw_lexicon[f]) for f in raw_lexicon}
    templates = {
        f: default_templates()[f]
        | _parse_templates(f"{source}: templates.{f}", f, raw_templates.get(f) or {})
        for f in lexicon
    }
    digest = hashlib.sha256(
        json.dumps([lexicon, templates], sort_keys=True).encode("utf-8")
    ).hexdigest()[:12]
    description = str(data.get("description", "")).strip()
    return Domain(name, description, lexicon, templates, source, digest)


@functools.lru_cache(maxsize=256)
def _load_cached(path: str, mtime_ns: int) -> Domain:
    return parse_domain(_read_data(Path(path)), path)


def load_domain_file(path: str | os.PathLike) -> Domain:
    """Load and validate one domain file (``.json``, ``.yaml`` or ``.yml``)."""
    path = Path(path)
    if path.suffix not in _SUFFIXES:
        raise DomainError(f"{path}: a domain file must end in one of {_SUFFIXES}")
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as err:
        raise DomainError(f"{path}: cannot read domain file: {err}") from None
    return _load_cached(str(path), mtime)


def _search_paths(paths: Sequence[str | os.PathLike] | None) -> list[Path]:
    env = [p for p in os.environ.get(DOMAINS_ENV, "").split(os.pathsep) if p.strip()]
    return [BUILTIN_DIR, *map(Path, env), *map(Path, paths or [])]


def _domain_files(root: Path) -> Iterable[Path]:
    if root.is_dir():
        children = sorted(p for p in root.iterdir() if p.suffix in _SUFFIXES)
        return [p for p in children if not p.name.startswith(("_", "."))]
    if root.exists():
        return [root]
    raise DomainError(f"{root}: no such domain file or directory (check {DOMAINS_ENV})")


def load_domains(paths: Sequence[str | os.PathLike] | None = None) -> dict[str, Domain]:
    """Every domain: built-ins, then ``IGA_DOMAINS_PATH``, then ``paths``; names must be unique."""
    found: dict[str, Domain] = {}
    for root in _search_paths(paths):
        for file in _domain_files(root):
            domain = load_domain_file(file)
            if domain.name in found and Path(found[domain.name].source).resolve() != file.resolve():
                raise DomainError(
                    f"{file}: domain {domain.name!r} is already defined in "
                    f"{found[domain.name].source}; rename one of them"
                )
            found[domain.name] = domain
    return found


def available_domains(
    family: str | None = None, paths: Sequence[str | os.PathLike] | None = None
) -> list[str]:
    """Names of the loadable domains (those supporting ``family`` when given), sorted."""
    domains = load_domains(paths)
    return sorted(name for name, d in domains.items() if family is None or d.supports(family))


def get_domain(name: str, paths: Sequence[str | os.PathLike] | None = None) -> Domain:
    """The domain called ``name``; a clear error lists what is available."""
    domains = load_domains(paths)
    if name not in domains:
        raise DomainError(f"unknown domain {name!r}; available: {sorted(domains)}")
    return domains[name]
