"""Evaluation's batched greedy generation (iga.distill.evaluate): stopping each sequence at the
end of its first ``Answer:`` line gives the same answers as full-length generation."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from iga.distill.evaluate import AnswerLineStop, generate_and_pool
from iga.distill.student import seeded, train_tokenizer
from iga.isomers import extract_answer

PROMPTS = ["Is the sky green?", "How many vials are on the shelf in the lab?", "Q3", "Q4 tail"]
SCRIPTS = [  # what the scripted model writes after each prompt (then EOS)
    "Since nothing shows it.\nAnswer: no\nAnswer: yes\nAnswer: yes and more",
    "The shelf holds 9 and 5.\nAnswer: 14 vials\nAnswer: 3\nwrong tail",
    "Answer: yes",  # ends with EOS, no newline
    "No answer line here at all, just text that goes on and on",
]


class ScriptedLlama(LlamaForCausalLM):
    """A Llama whose greedy choice is a fixed script per prompt: a deterministic test double
    that still runs generate's KV cache, left padding and stopping criteria for real."""

    def __init__(self, config, tokenizer) -> None:
        super().__init__(config)
        self.scripts = {
            tuple(tokenizer(tokenizer.bos_token + p + "\n", add_special_tokens=False).input_ids): [
                *tokenizer(s, add_special_tokens=False).input_ids,
                tokenizer.eos_token_id,
            ]
            for p, s in zip(PROMPTS, SCRIPTS)
        }
        self.eos = tokenizer.eos_token_id
        self.rows: list[list[int]] = []
        self.fed: list[int] = []
        self.calls = 0

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        self.calls += 1
        b = input_ids.shape[0]
        if input_ids.shape[1] > 1:  # prefill: (b, T) left-padded prompts
            mask = attention_mask[:, -input_ids.shape[1] :].bool()
            self.rows = [self.scripts[tuple(input_ids[i][mask[i]].tolist())] for i in range(b)]
            self.fed = [0] * b
        else:
            self.fed = [n + 1 for n in self.fed]
        logits = torch.full((b, 1, self.config.vocab_size), -1e9)  # (b, 1, V)
        for i, script in enumerate(self.rows):
            logits[i, 0, script[self.fed[i]] if self.fed[i] < len(script) else self.eos] = 0.0
        out.logits = logits
        return out


def scripted_model():
    texts = PROMPTS + SCRIPTS
    tokenizer = train_tokenizer(texts * 4, 300)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with seeded(0):
        return ScriptedLlama(config, tokenizer).eval(), tokenizer


def generate(stop: bool, batch_size: int = 4, max_new_tokens: int = 60):
    model, tokenizer = scripted_model()
    texts, _ = generate_and_pool(
        model, tokenizer, PROMPTS, max_new_tokens, batch_size, pool=False, stop_at_answer=stop
    )
    return texts, model.calls


def test_early_stopped_generation_gives_the_answers_of_full_length_generation():
    full, full_calls = generate(stop=False)
    stopped, stopped_calls = generate(stop=True)
    assert [extract_answer(t) for t in full] == ["no", "14", "yes", None]
    assert [extract_answer(t) for t in stopped] == [extract_answer(t) for t in full]
    for f, s in zip(full, stopped):
        assert f.startswith(s)
    assert stopped[0] == "Since nothing shows it.\nAnswer: no\n" and len(stopped[1]) < len(full[1])
    assert stopped[2] == full[2] and stopped[3] == full[3]  # EOS first / no answer: untouched
    # one batch without the never-answering row stops early: fewer decoding steps
    _, calls_full_3 = _three(stop=False)
    _, calls_stop_3 = _three(stop=True)
    assert calls_stop_3 < calls_full_3


def _three(stop: bool):
    model, tokenizer = scripted_model()
    texts, _ = generate_and_pool(
        model, tokenizer, PROMPTS[:3], 60, 3, pool=False, stop_at_answer=stop
    )
    return texts, model.calls


def test_stopping_at_the_answer_prefix_would_change_answers():
    """Companion that must fail: a stop as soon as 'Answer:' appears (before its value)
    reads no answer, so the equality above depends on waiting for the line's end."""
    model, tokenizer = scripted_model()
    enc = tokenizer(
        [tokenizer.bos_token + p + "\n" for p in PROMPTS[:2]],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
    )

    class PrefixStop(AnswerLineStop):
        def __call__(self, input_ids, scores, **kwargs):
            texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width :])
            return torch.tensor(["Answer:" in t for t in texts])

    tokenizer.padding_side = "left"
    out = model.generate(
        **enc,
        max_new_tokens=60,
        do_sample=False,
        stopping_criteria=[PrefixStop(tokenizer, enc.input_ids.shape[1])],
        pad_token_id=tokenizer.pad_token_id,
    )
    texts = tokenizer.batch_decode(out[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
    assert [extract_answer(t) for t in texts] == [None, None]


def test_answer_line_stop_marks_only_finished_rows():
    _, tokenizer = scripted_model()
    ids = [tokenizer(t, add_special_tokens=False).input_ids for t in ["a\nAnswer: no\n", "Answer:"]]
    width = max(map(len, ids))
    batch = torch.tensor([i + [tokenizer.pad_token_id] * (width - len(i)) for i in ids])  # (2, T)
    prompt = torch.zeros((2, 3), dtype=torch.long)  # (2, 3): a prompt the stop skips
    stop = AnswerLineStop(tokenizer, prompt_width=3)
    assert stop(torch.cat([prompt, batch], dim=1), None).tolist() == [True, False]


def test_pooled_prompt_representations_are_those_of_a_plain_forward():
    """The pooled representations come from generation's prefill (one logit per row, no
    second forward over the prompts); they equal a plain full-logit forward's hidden
    states, so the LCS representations are unchanged."""
    scripted, tokenizer = scripted_model()
    with seeded(1):
        model = LlamaForCausalLM(scripted.config).eval()
    calls = []
    model.register_forward_hook(lambda m, args, kwargs, out: calls.append(1), with_kwargs=True)
    _, pooled = generate_and_pool(model, tokenizer, PROMPTS, 2, 4, stop_at_answer=False)
    assert len(calls) == 2  # prefill and one decoding step (max_new_tokens=2), nothing more
    enc = tokenizer(
        [tokenizer.bos_token + p + "\n" for p in PROMPTS],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
    )
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    assert out.logits.shape[1] == enc.input_ids.shape[1]  # the reference ran the full head
    mask = enc.attention_mask.unsqueeze(-1).float()  # (b, T, 1)
    expected = (out.hidden_states[-1] * mask).sum(1) / mask.sum(1)  # (b, d)
    assert torch.allclose(pooled, expected, atol=1e-6)
