"""Evaluation of a student on isomer sets (docs/design.md section 6).

Greedy (deterministic) batched generation from each isomer's prompt, left padded,
with the KV cache; each sequence stops at the end of its first ``Answer:`` line
(``AnswerLineStop``), which fixes what ``iga.isomers.extract_answer`` (the single
place that parses answers) reads, so stopping early changes no answer.
Representations for the Logical Consistency Score are the last layer's hidden
states mean-pooled over the prompt tokens (what the student makes of the problem
before it writes anything).
"""

from __future__ import annotations

import re
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


# The first answer line, complete (ended by a newline): the pattern of
# iga.isomers.answers._ANSWER_LINE followed by the rest of its line and "\n".
_DONE_ANSWER_LINE = re.compile(r"^[ \t]*answer[ \t]*:[^\n]*\n", re.IGNORECASE | re.MULTILINE)


class AnswerLineStop:
    """Per-sequence stop once the completion holds a complete first ``Answer:`` line.

    ``extract_answer`` reads only the first answer line, so every token after its
    newline is wasted work; a sequence that ends with EOS instead stops there as usual.
    ``prompt_width`` is the (left-padded) prompt length: completions start after it.
    Duck-typed as a ``transformers.StoppingCriteria`` (importing transformers here
    would cost ``iga --help`` seconds).
    """

    def __init__(self, tokenizer, prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        self.done: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        if self.done is None:
            self.done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        todo = (~self.done).nonzero().flatten().tolist()
        texts = self.tokenizer.batch_decode(
            input_ids[todo, self.prompt_width :], skip_special_tokens=True
        )
        for i, text in zip(todo, texts):
            if _DONE_ANSWER_LINE.search(text):
                self.done[i] = True
        return self.done.clone()  # (b,)


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
    stop_at_answer: bool = True,
):
    """Greedy completions and (if ``pool``) pooled prompt representations (N, d), in order.

    ``stop_at_answer`` ends each sequence after its first complete ``Answer:`` line
    (same answers as full-length generation; tests/test_generation.py).
    """
    from transformers import StoppingCriteriaList

    tokenizer.padding_side = "left"
    texts, pooled = [], []
    for chunk in _batches(list(prompts), batch_size):
        enc = tokenizer(
            [tokenizer.bos_token + prompt_text(p) for p in chunk],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        ).to(model.device)
        width = enc.input_ids.shape[1]
        stop = StoppingCriteriaList([AnswerLineStop(tokenizer, width)] if stop_at_answer else [])
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            stopping_criteria=stop,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            # The prefill's hidden states are the pooled representations: no second
            # forward over the prompts (on a 135 M student the prompts' forward is most
            # of an evaluation's time).
            output_hidden_states=pool,
            return_dict_in_generate=True,
        )
        if pool:
            hidden = out.hidden_states[0][-1]  # (b, T, d): the prefill, last layer
            mask = enc.attention_mask.unsqueeze(-1).to(hidden.dtype)  # (b, T, 1)
            pooled.append(((hidden * mask).sum(1) / mask.sum(1)).float().cpu())  # (b, d)
        texts += tokenizer.batch_decode(out.sequences[:, width:], skip_special_tokens=True)
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
    # Long on purpose (over 50 lines): generation, then one pass that scores every row and groups it
    # by set, family and domain; the metrics below share those groupings.
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
    family_of = {s.set_id: s.family for s in sets}

    def consistency(family: str | None) -> tuple[float, float]:
        """(LCS, answer consistency) over the sets of ``family`` (None: every set)
        with two or more evaluated isomers; NaN when there is none."""
        ids = [i for i, r in reps_by_set.items() if len(r) >= 2]
        ids = [i for i in ids if family is None or family_of[i] == family]
        if not ids:
            return float("nan"), float("nan")
        lcs = logical_consistency_score([torch.stack(reps_by_set[i]) for i in ids])
        return lcs, answer_consistency({i: by_set[i] for i in ids})

    per_family = {}
    for f in families:
        lcs_f, consistency_f = consistency(f)
        per_family[f] = {
            "all": acc(lambda e, f=f: e["family"] == f),
            "id": acc(lambda e, f=f: e["family"] == f and e["domain"] in train_domains),
            "ood": acc(lambda e, f=f: e["family"] == f and e["domain"] in heldout_domains),
            "lcs": lcs_f,
            "answer_consistency": consistency_f,
        }
    lcs_all, consistency_all = consistency(None)
    return EvalResult(
        accuracy=acc(lambda e: True),
        accuracy_id=acc(lambda e: e["domain"] in train_domains),
        accuracy_ood=acc(lambda e: e["domain"] in heldout_domains),
        per_domain={d: acc(lambda e, d=d: e["domain"] == d) for d in domains},
        per_family=per_family,
        lcs=lcs_all,
        answer_consistency=consistency_all,
        n_examples=len(examples),
        train_domains=list(train_domains),
        heldout_domains=list(heldout_domains),
        examples=examples,
    )
