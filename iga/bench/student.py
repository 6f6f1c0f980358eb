"""``iga bench student``: one training step and evaluation of a real pretrained student on CPU.

The student (default the ``smollm2-135m`` preset: 30 layers, hidden 576, vocabulary
49,152) with LoRA on every linear layer, one real batch of isomer sets (``--sets``
sets x the 4 training domains, all families mixed, the project's dataset and
collator), and these step variants, each on its own copy of the model and timed
round-robin (median over ``--rounds``):

* ``erm_full_logits``: ERM with the LM head over every position (the plain computation);
* ``erm``: ERM with the head on supervised positions only (``supervised_token_losses``);
* ``erm_bf16``: ``erm`` under ``torch.autocast("cpu", torch.bfloat16)``;
* ``iga_factor`` / ``iga_full``: ``IGAStep`` in factor / full space (K = 4).

Exactness: each variant's first loss and gradient (same weights, same batch) is
compared with ``erm_full_logits`` (relative loss difference, gradient cosine). A
variant is worth keeping only if it is faster and matches. ``--eval-prompts N``
also times greedy evaluation of N training-domain prompts with and without the
early stop at the answer line (``--adapter`` loads a trained LoRA adapter first, so
that the student writes answer lines at all). Full-space IGA holds K per-domain
gradients of every adapted ``out x in`` weight: ``full_space_floats`` reports that
count (docs/design.md section 3).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from iga.core.config import IGAConfig
from iga.core.losses import completion_token_losses, domain_mean_loss, supervised_token_losses
from iga.core.step import IGAStep, full_space_floats
from iga.outputs import OutputPathError, check_output_file

VARIANTS = ("erm_full_logits", "erm", "erm_bf16", "iga_factor", "iga_full")
K = 4


def _batch(tokenizer, sets_per_step: int, seed: int):
    from iga.distill.data import IsomerCollator, IsomerDataset
    from iga.isomers import DEFAULT_TRAIN_DOMAINS, FAMILIES, generate_sets

    n = -(-sets_per_step // len(FAMILIES))
    sets = [s for f in FAMILIES for s in generate_sets(f, DEFAULT_TRAIN_DOMAINS, n, seed=seed)]
    sets = sets[::n][:sets_per_step] if n > 1 else sets[:sets_per_step]  # families mixed
    data = IsomerDataset(sets, DEFAULT_TRAIN_DOMAINS, tokenizer, max_length=512)
    return IsomerCollator(tokenizer.pad_token_id)([data[i] for i in range(len(data))])


class _Variant:
    def __init__(self, name: str, student: str, rank: int, batch: dict) -> None:
        from iga.distill.student import attach_lora, load_local_model

        model, _ = load_local_model(student)
        self.name, self.batch = name, batch
        self.model = attach_lora(model, rank, seed=0)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-4)
        self.iga = None
        if name.startswith("iga"):
            space = name.split("_", 1)[1]
            self.iga = IGAStep(self.model, IGAConfig(tau=5.0, space=space), K)

    def loss(self) -> torch.Tensor:
        b = self.batch
        inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
        if self.name == "erm_full_logits":
            ce, mask = completion_token_losses(self.model(**inputs).logits, b["labels"])
        else:
            with torch.autocast("cpu", torch.bfloat16, enabled=self.name == "erm_bf16"):
                ce, mask, _ = supervised_token_losses(self.model, inputs, b["labels"])
        return domain_mean_loss(ce.float(), mask, b["domain_ids"], K)

    def step(self, update: bool = True) -> tuple[float, torch.Tensor]:
        """One training step; returns its loss and the flat gradient before the update."""
        self.opt.zero_grad(set_to_none=True)
        if self.iga is not None:
            self.iga.set_domains(self.batch["domain_ids"])
        loss = self.loss()
        loss.backward()
        grad = torch.cat([p.grad.reshape(-1) for p in self.params]).clone()
        if not update:
            return float(loss.detach()), grad
        if self.iga is not None:
            self.iga.step(self.opt, max_grad_norm=1.0)
        else:
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
        return float(loss.detach()), grad


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()  # float32 sums over ~5 M entries drift past 1.0
    return float(a @ b / (a.norm() * b.norm()))


def _progress(message: str) -> None:
    import sys

    print(f"[bench student] {message}", file=sys.stderr, flush=True)


def time_eval(student: str, adapter: str | None, n_prompts: int, batch_size: int) -> dict:
    from iga.distill.evaluate import generate_and_pool
    from iga.distill.student import load_local_model
    from iga.isomers import DEFAULT_TRAIN_DOMAINS, FAMILIES, extract_answer, generate_sets

    model, tokenizer = load_local_model(student)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    per = -(-n_prompts // (len(FAMILIES) * len(DEFAULT_TRAIN_DOMAINS)))
    prompts = [
        s.isomers[d].prompt
        for f in FAMILIES
        for s in generate_sets(f, DEFAULT_TRAIN_DOMAINS, per, seed=900_000)
        for d in DEFAULT_TRAIN_DOMAINS
    ][:n_prompts]
    result = {"prompts": len(prompts), "adapter": adapter}
    answers = {}
    for stop in (True, False):
        start = time.perf_counter()
        texts, _ = generate_and_pool(
            model, tokenizer, prompts, 96, batch_size, pool=True, stop_at_answer=stop
        )
        key = "stop_at_answer" if stop else "full_length"
        result[f"{key}_seconds"] = time.perf_counter() - start
        answers[key] = [extract_answer(t) for t in texts]
    result["same_answers"] = answers["stop_at_answer"] == answers["full_length"]
    result["answer_lines"] = sum(a is not None for a in answers["full_length"])
    return result


def run(args: argparse.Namespace) -> dict:
    import os

    from iga.distill.student import load_local_model

    torch.set_num_threads(args.threads)
    _, tokenizer = load_local_model(args.student)
    batch = _batch(tokenizer, args.sets, seed=args.seed)
    variants = {name: _Variant(name, args.student, args.rank, batch) for name in args.methods}
    first = {}
    for name, v in variants.items():  # the first step is also the warm-up
        start = time.perf_counter()
        first[name] = v.step()
        _progress(f"{name}: first step {time.perf_counter() - start:.1f} s")
    ref_loss, ref_grad = first.get("erm_full_logits", next(iter(first.values())))
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, v in variants.items():
            start = time.perf_counter()
            v.step()
            times[name].append(time.perf_counter() - start)
            _progress(f"{name}: {times[name][-1]:.1f} s")
    med = {name: statistics.median(t) for name, t in times.items()}
    report = {
        "student": args.student,
        "batch_shape": list(batch["input_ids"].shape),  # (B, T)
        "supervised_tokens": int((batch["labels"][:, 1:] != -100).sum()),
        "threads": args.threads,
        "loadavg_1m_at_end": os.getloadavg()[0],
        "seconds": times,
        "median_seconds": med,
        "ratio_to_erm": {n: med[n] / med["erm"] for n in med} if "erm" in med else {},
        "first_loss": {n: first[n][0] for n in first},
        "loss_rel_diff_vs_full_logits": {
            n: abs(first[n][0] - ref_loss) / abs(ref_loss) for n in first
        },
        "grad_cosine_vs_full_logits": {n: _cosine(first[n][1], ref_grad) for n in first},
        "full_space_floats": full_space_floats(next(iter(variants.values())).model, K),
    }
    del variants
    if args.eval_prompts:
        report["eval"] = time_eval(args.student, args.adapter, args.eval_prompts, args.eval_batch)
    return report


def _main(args: argparse.Namespace) -> int:
    unknown = sorted(set(args.methods) - set(VARIANTS))
    if unknown or args.rounds < 1 or args.sets < 1:
        raise SystemExit(
            f"iga bench student: error: --methods from {VARIANTS} (got unknown {unknown}), "
            "--rounds >= 1 and --sets >= 1."
        )
    if args.json:
        try:  # before minutes of timing, not after (as `iga bench step`)
            check_output_file(Path(args.json), "--json")
        except OutputPathError as err:
            print(f"iga bench student: error: {err}", file=sys.stderr)
            return 2
    report = run(args)
    print(json.dumps(report["median_seconds"], indent=1))
    print(json.dumps({k: report[k] for k in ("ratio_to_erm", "loss_rel_diff_vs_full_logits")}))
    if "eval" in report:
        print(json.dumps(report["eval"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


def register(bench_sub) -> None:
    s = bench_sub.add_parser(
        "student",
        help="Step variants and evaluation of a pretrained student (default smollm2-135m).",
        description=__doc__.split("\n\n")[1],
    )
    s.add_argument("--student", default="smollm2-135m", help="preset, .gguf file or HF folder")
    s.add_argument("--sets", type=int, default=4, help="isomer sets per step (x 4 domains)")
    s.add_argument("--rank", type=int, default=16, help="LoRA rank on every linear layer")
    s.add_argument("--rounds", type=int, default=3, help="timed rounds (one step per variant)")
    s.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    s.add_argument("--seed", type=int, default=0, help="seed of the bench batch")
    s.add_argument(
        "--methods",
        nargs="+",
        default=["erm_full_logits", "erm", "erm_bf16", "iga_factor"],
        help=f"variants from {VARIANTS} (iga_full holds K x out x in floats per layer)",
    )
    s.add_argument("--eval-prompts", type=int, default=0, help="also time evaluation of N prompts")
    s.add_argument("--eval-batch", type=int, default=64, help="generation batch size")
    s.add_argument("--adapter", help="LoRA adapter folder to load before timing evaluation")
    s.add_argument("--json", metavar="PATH", help="also write the full report as JSON")
    s.set_defaults(func=_main)
