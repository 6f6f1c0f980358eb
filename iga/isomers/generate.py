"""Seeded generation of isomer sets: sample a skeleton, render it in every domain.

Randomness is keyed by name, DomainBed-style: the program of set ``i`` depends only on
(seed, family, i, knobs); each domain's rendering on (seed, family, i, domain); the cue
on its own stream. Adding a domain, or turning the shortcut on, changes nothing else.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from typing import Any

from iga.isomers.domains import (
    DEFAULT_HELDOUT_DOMAINS,
    DEFAULT_TRAIN_DOMAINS,
    Domain,
    get_domain,
)
from iga.isomers.families import Family, get_family
from iga.isomers.render import TemplatePicker
from iga.isomers.schema import Isomer, IsomerSet
from iga.isomers.shortcut import ShortcutSpec, auto_strengths, plant_cue
from iga.isomers.skeleton import Skeleton, make_skeleton
from iga.isomers.teacher import TEACHER, symbolic_rationale


def _rng(*key: object) -> random.Random:
    # str seeds are hashed with SHA-512 by random.Random: stable across runs and platforms.
    return random.Random("iga-isomers/" + "/".join(map(str, key)))


def _resolve_shortcut(
    shortcut: ShortcutSpec | Mapping[str, float] | str | None, domains: Sequence[str]
) -> ShortcutSpec | None:
    if shortcut is None or isinstance(shortcut, ShortcutSpec):
        return shortcut
    if shortcut == "auto":
        return ShortcutSpec(auto_strengths(domains))
    if isinstance(shortcut, Mapping):
        return ShortcutSpec(dict(shortcut))
    raise TypeError(
        f"shortcut must be a ShortcutSpec, a dict of strengths or 'auto', got {shortcut!r}"
    )


def render_isomer(
    family: Family,
    skeleton: Skeleton,
    domain: Domain,
    rng: random.Random,
    shortcut: ShortcutSpec | None = None,
    cue_rng: random.Random | None = None,
) -> Isomer:
    """One domain's prompt and symbolic rationale for ``skeleton``, with its metadata."""
    bindings = family.bind(skeleton.program, domain.lexicon[family.name], rng)
    pick = TemplatePicker(domain.templates[family.name], rng)
    prompt = " ".join(family.prompt(skeleton.program, bindings, pick))
    rationale = symbolic_rationale(family, skeleton, bindings, pick)
    cue_rng = cue_rng or rng
    prompt, cue = plant_cue(
        prompt,
        skeleton.answer,
        domain.name,
        shortcut,
        lambda: family.wrong_answer(skeleton.program, skeleton.answer, cue_rng),
        cue_rng,
    )
    metadata = {
        "domain": domain.name,
        "skeleton_hash": skeleton.hash,
        "n_steps": skeleton.n_steps,
        "teacher": TEACHER,
        "domain_version": domain.version,
        "bindings": bindings,
        "shortcut": cue,
    }
    return Isomer(prompt, rationale, skeleton.answer, metadata)


def generate_sets(
    family: str,
    domains: Sequence[str] | None = None,
    n_sets: int = 100,
    seed: int = 0,
    *,
    shortcut: ShortcutSpec | Mapping[str, float] | str | None = None,
    domain_paths: Sequence[str | os.PathLike] | None = None,
    **knobs: Any,
) -> list[IsomerSet]:
    """``n_sets`` isomer sets of ``family``, each rendered in every one of ``domains``.

    ``domains`` defaults to the training then the held-out defaults. ``knobs`` are the
    family's difficulty knobs (see its ``*Knobs`` dataclass); ``shortcut`` plants the
    answer cue (a :class:`ShortcutSpec`, a dict ``{domain: strength}`` or ``"auto"``);
    ``domain_paths`` adds domain files or directories to the search.
    """
    fam = get_family(family)
    params = fam.make_knobs(**knobs)
    names = (
        list(domains) if domains is not None else [*DEFAULT_TRAIN_DOMAINS, *DEFAULT_HELDOUT_DOMAINS]
    )
    if not names or len(set(names)) != len(names):
        raise ValueError(f"domains must be a non-empty list without repeats, got {names}")
    if n_sets < 0:
        raise ValueError(f"n_sets must be >= 0, got {n_sets}")
    loaded = [get_domain(name, domain_paths) for name in names]
    for domain in loaded:
        domain.check_capacity(family, fam.needs(params))
    spec = _resolve_shortcut(shortcut, names)
    sets = []
    for index in range(n_sets):
        skeleton = make_skeleton(family, fam.sample(_rng(seed, family, index), params))
        isomers = {
            d.name: render_isomer(
                fam,
                skeleton,
                d,
                _rng(seed, family, index, d.name),
                spec,
                _rng(seed, family, index, d.name, "shortcut"),
            )
            for d in loaded
        }
        sets.append(IsomerSet(f"{family}-{seed}-{index:05d}", family, skeleton, isomers))
    return sets
