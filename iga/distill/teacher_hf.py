"""A local Hugging Face causal LM as the teacher (docs/design.md section 5).

The teacher completes each training-domain prompt (the student's own prompt
format, greedy, batched). A rationale is kept only when its extracted answer is
the set's answer; the text is cut after the answer line. Every generation,
right or wrong, is appended to a JSONL cache keyed by teacher, prompt and
generation settings, so a rerun (or a resumed run) reuses it and a crash loses
at most the batch in flight. A set is used only if the teacher got all of its
training-domain isomers right, so every batch still holds every domain.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from iga.distill.evaluate import generate_and_pool
from iga.distill.student import load_local_model
from iga.isomers import IsomerSet, extract_answer, normalize_answer


def _key(teacher: str, prompt: str, max_new_tokens: int) -> str:
    blob = json.dumps([str(Path(teacher).resolve()), prompt, max_new_tokens])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _read_cache(path: Path) -> dict[str, str]:
    cache: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                cache[row["key"]] = row["completion"]
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut short by a crash; the prompt is simply asked again
    return cache


def cut_after_answer(text: str) -> str:
    """``text`` up to and including its first answer line."""
    lines = text.strip().splitlines()
    for i, line in enumerate(lines):
        if extract_answer(line) is not None:
            return "\n".join(lines[: i + 1])
    return text.strip()


def teacher_rationales(
    teacher: str,
    sets: Sequence[IsomerSet],
    domains: Sequence[str],
    cache_path: Path,
    trust_remote_code: bool = False,
    max_new_tokens: int = 128,
    batch_size: int = 16,
) -> list[IsomerSet]:
    """``sets`` with teacher rationales in ``domains``; sets with any wrong answer dropped."""
    cache_path = Path(cache_path)
    cache = _read_cache(cache_path)
    prompts = sorted({s.isomers[d].prompt for s in sets for d in domains})
    todo = [p for p in prompts if _key(teacher, p, max_new_tokens) not in cache]
    if todo:
        model, tokenizer = load_local_model(teacher, trust_remote_code)
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            texts, _ = generate_and_pool(
                model, tokenizer, chunk, max_new_tokens, batch_size, pool=False
            )
            with cache_path.open("a") as f:
                for prompt, text in zip(chunk, texts):
                    key = _key(teacher, prompt, max_new_tokens)
                    cache[key] = text
                    f.write(json.dumps({"key": key, "prompt": prompt, "completion": text}) + "\n")
    kept, wrong = [], 0
    for s in sets:
        isomers = dict(s.isomers)
        ok = True
        for d in domains:
            text = cache[_key(teacher, s.isomers[d].prompt, max_new_tokens)]
            if extract_answer(text) != normalize_answer(s.isomers[d].answer):
                ok, wrong = False, wrong + 1
                continue
            meta = {**s.isomers[d].metadata, "teacher": str(teacher)}
            isomers[d] = replace(s.isomers[d], rationale=cut_after_answer(text), metadata=meta)
        if ok:
            kept.append(replace(s, isomers=isomers))
    total = len(sets) * len(domains)
    if not kept:
        raise ValueError(
            f"the teacher at {teacher} answered {total - wrong} of {total} training prompts "
            f"correctly, leaving no complete isomer set to distil. Check that it answers with a "
            f"final 'Answer: X' line, or omit --teacher to use the symbolic teacher. Its "
            f"generations are kept in {cache_path}."
        )
    if wrong:
        warnings.warn(
            f"teacher {teacher}: {wrong} of {total} rationales had a wrong or missing answer; "
            f"kept {len(kept)} of {len(sets)} sets.",
            stacklevel=2,
        )
    return kept
