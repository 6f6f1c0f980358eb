"""Isomer sets -> tokenized distillation examples, batched by whole sets.

One dataset item is one isomer set: its prompt/completion pair in each training
domain. Batching whole sets puts every training domain in every batch, in equal
numbers, which the IGA step needs (a domain missing from a step has no gradient).

Each example is ``<s> prompt \\n completion </s>``; ``labels`` are -100 on the
prompt (completion-only loss: the student learns the rationale and the answer
line, docs/design.md section 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from iga.core.losses import IGNORE_INDEX  # noqa: F401 (re-exported)
from iga.isomers import IsomerSet


def prompt_text(prompt: str) -> str:
    """What the student sees before it starts to answer (also used at evaluation)."""
    return prompt.strip() + "\n"


def encode_example(
    tokenizer, prompt: str, completion: str, max_length: int
) -> dict[str, list[int]]:
    """Token ids and completion-only labels of one example."""
    p = [
        tokenizer.bos_token_id,
        *tokenizer(prompt_text(prompt), add_special_tokens=False).input_ids,
    ]
    c = [*tokenizer(completion.strip(), add_special_tokens=False).input_ids, tokenizer.eos_token_id]
    if len(p) + len(c) > max_length:
        raise ValueError(
            f"example of {len(p) + len(c)} tokens exceeds max_length={max_length}; raise "
            "--max-length or generate easier sets (fewer steps or distractors)."
        )
    return {"input_ids": p + c, "labels": [IGNORE_INDEX] * len(p) + c}


class IsomerDataset(Dataset):
    """Tokenized isomer sets restricted to ``domains`` (their order fixes the domain ids)."""

    def __init__(
        self, sets: Sequence[IsomerSet], domains: Sequence[str], tokenizer, max_length: int
    ):
        if len(domains) < 1:
            raise ValueError("IsomerDataset needs at least one training domain.")
        self.domains = list(domains)
        self.items: list[list[dict]] = []
        for s in sets:
            missing = [d for d in self.domains if d not in s.isomers]
            if missing:
                raise ValueError(f"isomer set {s.set_id} has no isomer in domains {missing}.")
            self.items.append(
                [
                    {
                        **encode_example(
                            tokenizer, s.isomers[d].prompt, s.isomers[d].rationale, max_length
                        ),
                        "domain_id": k,
                    }
                    for k, d in enumerate(self.domains)
                ]
            )
        if not self.items:
            raise ValueError("IsomerDataset got no isomer sets.")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> list[dict]:
        return self.items[i]


@dataclass
class IsomerCollator:
    """Flattens a list of sets into one right-padded batch with ``domain_ids`` (B,)."""

    pad_token_id: int

    def __call__(self, sets: list[list[dict]]) -> dict[str, torch.Tensor]:
        examples = [ex for s in sets for ex in s]
        width = max(len(ex["input_ids"]) for ex in examples)
        ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)  # (B, T)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        attention = torch.zeros((len(examples), width), dtype=torch.long)  # (B, T)
        for i, ex in enumerate(examples):
            n = len(ex["input_ids"])
            ids[i, :n] = torch.tensor(ex["input_ids"])
            labels[i, :n] = torch.tensor(ex["labels"])
            attention[i, :n] = 1
        domain_ids = torch.tensor([ex["domain_id"] for ex in examples], dtype=torch.long)  # (B,)
        return {
            "input_ids": ids,
            "attention_mask": attention,
            "labels": labels,
            "domain_ids": domain_ids,
        }
