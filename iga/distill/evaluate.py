"""Evaluation of a student on isomer sets (docs/design.md section 6).

Greedy (deterministic) batched generation from each isomer's prompt; the answer
is read by ``iga.isomers.extract_answer``, the single place that parses answers.
Representations for the Logical Consistency Score are the last layer's hidden
states mean-pooled over the prompt tokens (what the student makes of the problem
before it writes anything).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from iga.distill.data import prompt_text
from iga.distill.metrics import answer_consistency, logical_consistency_score
from iga.isomers import IsomerSet, extract_answer, normalize_answer


@dataclass
class EvalResult:
    """Accuracies in [0, 1], LCS (lower is better), answer consistency in [0, 1]."""

    accuracy: float
    accuracy_id: float | None
    accuracy_ood: float | None
    per_domain: dict[str, float]
    per_family: dict[str, dict[str, float]]
    lcs: float
    answer_consistency: float
    n_examples: int
    train_domains: list[str]
    heldout_domains: list[str]
    examples: list[dict] = field(default_factory=list)

    def to_dict(self, with_examples: bool = False) -> dict:
        d = asdict(self)
        if not with_examples:
            d.pop("examples")
        return d


def _batches(items: Sequence, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


@torch.no_grad()
def generate_and_pool(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int,
    pool: bool = True,
):
    """Greedy completions and (if ``pool``) pooled prompt representations (N, d), in order."""
    tokenizer.padding_side = "left"
    texts, pooled = [], []
    for chunk in _batches(list(prompts), batch_size):
        enc = tokenizer(
            [tokenizer.bos_token + prompt_text(p) for p in chunk],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        ).to(model.device)
        if pool:
            hidden = model(**enc, output_hidden_states=True).hidden_states[-1]  # (b, T, d)
            mask = enc.attention_mask.unsqueeze(-1).to(hidden.dtype)  # (b, T, 1)
            pooled.append(((hidden * mask).sum(1) / mask.sum(1)).float().cpu())  # (b, d)
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        texts += tokenizer.batch_decode(out[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
    return texts, (torch.cat(pooled) if pool else None)


def evaluate(
    model,
    tokenizer,
    sets: Sequence[IsomerSet],
    train_domains: Sequence[str],
    heldout_domains: Sequence[str],
    max_new_tokens: int = 96,
    batch_size: int = 64,
    show_progress: bool = False,
) -> EvalResult:
    """Accuracy (overall, per domain, per family, in-domain vs held-out), LCS, consistency."""
    domains = [*train_domains, *heldout_domains]
    rows = [(s, d) for s in sets for d in domains if d in s.isomers]
    if not rows:
        raise ValueError(f"no isomer of the evaluation sets lies in domains {domains}.")
    model.eval()
    prompts = [s.isomers[d].prompt for s, d in rows]
    texts, reps = [], []
    for chunk in tqdm(
        list(_batches(prompts, batch_size * 4)), desc="eval", disable=not show_progress
    ):
        t, r = generate_and_pool(model, tokenizer, chunk, max_new_tokens, batch_size)
        texts += t
        reps.append(r)
    reps_all = torch.cat(reps)  # (N, d)
    examples, by_set, reps_by_set = [], defaultdict(list), defaultdict(list)
    for (s, d), text, rep in zip(rows, texts, reps_all):
        pred = extract_answer(text)
        gold = normalize_answer(s.isomers[d].answer)
        examples.append(
            {
                "set_id": s.set_id,
                "family": s.family,
                "domain": d,
                "prediction": pred,
                "answer": gold,
                "correct": pred == gold,
                "completion": text,
            }
        )
        by_set[s.set_id].append(pred)
        reps_by_set[s.set_id].append(rep)

    def acc(filter_fn) -> float | None:
        hits = [e["correct"] for e in examples if filter_fn(e)]
        return sum(hits) / len(hits) if hits else None

    families = sorted({e["family"] for e in examples})
    per_family = {
        f: {
            "all": acc(lambda e, f=f: e["family"] == f),
            "id": acc(lambda e, f=f: e["family"] == f and e["domain"] in train_domains),
            "ood": acc(lambda e, f=f: e["family"] == f and e["domain"] in heldout_domains),
        }
        for f in families
    }
    multi = [torch.stack(r) for r in reps_by_set.values() if len(r) >= 2]
    return EvalResult(
        accuracy=acc(lambda e: True),
        accuracy_id=acc(lambda e: e["domain"] in train_domains),
        accuracy_ood=acc(lambda e: e["domain"] in heldout_domains),
        per_domain={d: acc(lambda e, d=d: e["domain"] == d) for d in domains},
        per_family=per_family,
        lcs=logical_consistency_score(multi) if multi else float("nan"),
        answer_consistency=answer_consistency(by_set) if multi else float("nan"),
        n_examples=len(examples),
        train_domains=list(train_domains),
        heldout_domains=list(heldout_domains),
        examples=examples,
    )
