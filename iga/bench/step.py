"""``iga bench step``: the cost of one IGA training step against ERM and a naive baseline.

A small Llama built from ``transformers.LlamaConfig`` (no download), peft LoRA on
every linear layer, K domains, CPU. Each method runs the same step (zero_grad,
forward, ``domain_mean_loss``, backward, gradient edit, clip to 1.0, AdamW):

* ``erm``: plain LoRA fine-tuning.
* ``iga_full`` / ``iga_factor``: ``IGAStep`` (hooks, one backward) in each space.
* ``iga_full_rsvd``: ``iga_full`` with the randomized SVD forced for every layer.
* ``iga_full_split`` / ``iga_factor_split`` / ``iga_full_ema`` / ``iga_factor_ema``:
  the same step with the ``split`` estimator (two halves per domain captured in the
  one backward, 2K buffer rows) or the ``ema`` estimator of V (issue 14).
* ``naive_full`` / ``naive_factor``: the same IGA maths with per-domain gradients
  from one forward and K backward passes (``retain_graph``), as many
  gradient-surgery codes do; full space reads ``dL_k/d(dW)`` off a zero
  perturbation added to each LoRA layer.

Timing: methods run round-robin (one step of each per round), so drift in the
machine's load hits all of them alike; we report the median and the
inter-quartile range (IQR) over rounds. Memory: each method alone, after two
warm steps, the peak tensor memory of one step = the tensors alive at rest
(weights, optimizer moments, IGA buffers) + the largest running total of what
the step allocates (activations, gradients, temporaries; from the torch
profiler's memory records).

Also reported (docs/design.md section 2): cosines between the factor-space and the
full-space IGA gradients and AdamW updates on the bench batch.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from iga.bench.reference import KBackwardIGA
from iga.core.config import IGAConfig
from iga.core.losses import domain_mean_loss
from iga.core.step import IGAStep

METHODS = (
    "erm",
    "iga_full",
    "iga_full_rsvd",
    "iga_factor",
    "iga_full_split",
    "iga_factor_split",
    "iga_full_ema",
    "iga_factor_ema",
    "naive_full",
    "naive_factor",
)
TARGETS = {  # (numerator, denominator, bound, metric): from the issue
    "full time <= 1.6 x ERM": ("iga_full", "erm", 1.6, "time"),
    "factor time <= 1.2 x ERM": ("iga_factor", "erm", 1.2, "time"),
    "naive full / full >= 2": ("naive_full", "iga_full", 2.0, "speedup"),
    "naive factor / factor >= 2": ("naive_factor", "iga_factor", 2.0, "speedup"),
    "factor memory <= 1.3 x ERM": ("iga_factor", "erm", 1.3, "memory"),
    "full split time <= 1.1 x full": ("iga_full_split", "iga_full", 1.1, "time"),
    "factor split time <= 1.1 x factor": ("iga_factor_split", "iga_factor", 1.1, "time"),
}


@dataclass
class BenchConfig:
    vocab: int = 2048
    hidden: int = 256
    intermediate: int = 688
    layers: int = 4
    heads: int = 8
    kv_heads: int = 4
    seq: int = 128
    domains: int = 4
    per_domain: int = 2
    rank: int = 8
    tau: float = 1.0
    rounds: int = 15
    warmup: int = 2
    threads: int = 1
    seed: int = 0
    methods: list[str] = field(default_factory=lambda: list(METHODS))


def build_model(cfg: BenchConfig):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=cfg.vocab,
            hidden_size=cfg.hidden,
            intermediate_size=cfg.intermediate,
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            num_key_value_heads=cfg.kv_heads,
            max_position_embeddings=cfg.seq,
        )
    )
    lora = LoraConfig(r=cfg.rank, lora_alpha=2 * cfg.rank, target_modules="all-linear")
    model = get_peft_model(llama, lora)
    with torch.no_grad():  # a mid-training state: B = 0 would zero every grad of A
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.02)
    model.train()
    return model


def make_batch(cfg: BenchConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens (B, T), domain ids (B,)): each domain favours its own slice of the vocabulary."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    ids = torch.arange(cfg.domains).repeat_interleave(cfg.per_domain)  # (B,)
    width = cfg.vocab // cfg.domains
    own = torch.randint(0, width, (len(ids), cfg.seq), generator=g) + ids[:, None] * width
    shared = torch.randint(0, cfg.vocab, (len(ids), cfg.seq), generator=g)
    pick = torch.rand(len(ids), cfg.seq, generator=g) < 0.5
    return torch.where(pick, own, shared), ids  # (B, T), (B,)


def _per_token_loss(model, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=tokens).logits[:, :-1]  # (B, T-1, V)
    return F.cross_entropy(logits.mT, tokens[:, 1:], reduction="none")  # (B, T-1)


def _iga_config(cfg: BenchConfig, name: str) -> IGAConfig:
    space = "full" if "full" in name else "factor"
    method = "randomized" if name.endswith("rsvd") else "auto"
    estimator = next((e for e in ("split", "ema") if name.endswith(f"_{e}")), "batch")
    return IGAConfig(tau=cfg.tau, space=space, svd_method=method, estimator=estimator)


class _Runner:
    """One method on its own model and optimizer; ``step()`` is one timed training step."""

    def __init__(self, cfg: BenchConfig, name: str) -> None:
        self.cfg, self.name = cfg, name
        self.model = build_model(cfg)
        self.tokens, self.ids = make_batch(cfg)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-4)
        self.iga = None
        if name.startswith("iga"):
            self.iga = IGAStep(self.model, _iga_config(cfg, name), cfg.domains)
        elif name.startswith("naive"):
            self.naive = KBackwardIGA(self.model, _iga_config(cfg, name), cfg.domains)

    def _loss(self) -> torch.Tensor:
        per_token = _per_token_loss(self.model, self.tokens)
        return domain_mean_loss(per_token, None, self.ids, self.cfg.domains)

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.name.startswith("naive"):
            self.naive.gradients(self._loss_terms())
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            return
        if self.iga is not None:
            self.iga.set_domains(self.ids)
        self._loss().backward()
        if self.iga is not None:
            self.iga.step(self.opt, max_grad_norm=1.0)
        else:
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()

    def _loss_terms(self) -> list[torch.Tensor]:
        """``L_k`` for each domain, from one forward."""
        per_token = _per_token_loss(self.model, self.tokens)  # (B, T-1)
        k = self.cfg.domains
        return [
            k * domain_mean_loss(per_token * (self.ids == d)[:, None], None, self.ids, k)
            for d in range(k)
        ]


# ----- measurements ------------------------------------------------------------------------
def time_methods(cfg: BenchConfig) -> dict[str, list[float]]:
    """Seconds per step for each method, over ``cfg.rounds`` round-robin rounds."""
    runners = {name: _Runner(cfg, name) for name in cfg.methods}
    for _ in range(cfg.warmup):
        for r in runners.values():
            r.step()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(cfg.rounds):
        for name, r in runners.items():
            start = time.perf_counter()
            r.step()
            times[name].append(time.perf_counter() - start)
    return times


def _tensor_bytes_alive() -> int:
    """Bytes of every tensor storage (and ``.grad``) reachable from Python, counted once."""
    seen, total = set(), 0
    with warnings.catch_warnings():  # isinstance on some lazy module objects warns
        warnings.simplefilter("ignore")
        tensors = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor)]
    for obj in tensors:
        for t in (obj, obj.grad):
            if t is None or t.device.type != "cpu":
                continue
            storage = t.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


def measure_memory(cfg: BenchConfig, name: str) -> float:
    """Peak tensor memory (MiB) of one steady-state step: resident state + step allocations.

    Resident state (parameters, optimizer moments, IGA buffers) is counted from
    the live tensors; what the step allocates and frees (activations, gradients,
    temporaries) comes from the profiler's per-op memory records, accumulated in
    time order. RSS would mostly measure code pages and allocator caching.
    """
    from torch.profiler import ProfilerActivity, profile

    runner = _Runner(cfg, name)
    for _ in range(2):  # optimizer state and buffers exist from the first step on
        runner.step()
    gc.collect()
    resident = _tensor_bytes_alive()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            runner.step()
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    current = peak = 0
    for e in events:  # "[memory]" records frees outside ops; ops carry their own net change
        current += e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
        peak = max(peak, current)
    del runner
    gc.collect()
    return (resident + peak) / 2**20


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1).double() for t in tensors])


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def factor_vs_full_cosine(cfg: BenchConfig) -> dict[str, float]:
    """Cosines between the IGA gradients (and AdamW updates) of each space on the bench batch."""
    grads, updates = {}, {}
    for label, config in (
        ("erm", None),
        ("full_svd", IGAConfig(tau=cfg.tau, space="full")),
        ("full_rsvd", IGAConfig(tau=cfg.tau, space="full", svd_method="randomized")),
        ("full_none", IGAConfig(tau=cfg.tau, space="full", projection="none")),
        ("factor", IGAConfig(tau=cfg.tau, space="factor")),
    ):
        r = _Runner(cfg, "erm")
        iga = IGAStep(r.model, config, cfg.domains) if config else None
        if iga is not None:
            iga.set_domains(r.ids)
        r._loss().backward()
        if iga is not None:
            iga.apply()
        grads[label] = _flat([p.grad for p in r.params])
        before = _flat([p.detach() for p in r.params])
        r.opt.step()
        updates[label] = _flat([p.detach() for p in r.params]) - before
    out = {}
    pairs = [("factor", "full_svd"), ("factor", "full_none"), ("full_svd", "full_none")]
    for a, b in [*pairs, ("full_rsvd", "full_svd")]:
        out[f"grad {a} vs {b}"] = _cos(grads[a], grads[b])
        out[f"adamw update {a} vs {b}"] = _cos(updates[a], updates[b])
    for a in ("full_svd", "full_none", "factor"):
        out[f"grad {a} vs erm"] = _cos(grads[a], grads["erm"])
    return out


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


def run_bench(cfg: BenchConfig, memory: bool = True) -> dict:
    torch.set_num_threads(cfg.threads)
    times = time_methods(cfg)
    gc.collect()
    results = {}
    for name, ts in times.items():
        q1, med, q3 = _quartiles(ts)
        results[name] = {"times_s": ts, "median_s": med, "iqr_s": q3 - q1}
        results[name]["peak_mib"] = measure_memory(cfg, name) if memory else None
    for r in results.values():
        r["time_x_erm"] = r["median_s"] / results["erm"]["median_s"] if "erm" in results else None
        base, peak = results.get("erm", {}).get("peak_mib"), r["peak_mib"]
        r["memory_x_erm"] = peak / base if base and peak is not None else None
    return {
        "config": asdict(cfg),
        "environment": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "results": results,
        "targets": _targets(results),
        "cosine": factor_vs_full_cosine(cfg),
    }


def _targets(results: dict) -> dict:
    out = {}
    for label, (num, den, bound, metric) in TARGETS.items():
        if num not in results or den not in results:
            continue
        if metric == "memory":
            a, b = results[num]["peak_mib"], results[den]["peak_mib"]
            value = a / b if a is not None and b else None
        else:
            value = results[num]["median_s"] / results[den]["median_s"]
        met = None if value is None else (value >= bound if metric == "speedup" else value <= bound)
        out[label] = {"value": value, "bound": bound, "met": met}
    return out


def format_report(report: dict) -> str:
    lines = [
        f"{'method':<15}{'median ms':>10}{'IQR ms':>9}{'x ERM':>7}{'peak MiB':>10}{'x ERM':>7}"
    ]
    for name, r in report["results"].items():
        mem = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.1f}"
        mx = "-" if r["memory_x_erm"] is None else f"{r['memory_x_erm']:.2f}"
        lines.append(
            f"{name:<15}{1e3 * r['median_s']:>10.1f}{1e3 * r['iqr_s']:>9.1f}"
            f"{r['time_x_erm'] or 0:>7.2f}{mem:>10}{mx:>7}"
        )
    lines.append("")
    for label, t in report["targets"].items():
        verdict = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        value = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        lines.append(f"{label:<36}{value:>7}  {verdict}")
    lines.append("")
    for label, c in report["cosine"].items():
        lines.append(f"cos {label:<36}{c:>8.4f}")
    return "\n".join(lines)


def _main(args: argparse.Namespace) -> int:
    cfg = BenchConfig(
        rounds=args.rounds,
        threads=args.threads,
        seq=args.seq,
        layers=args.layers,
        hidden=args.hidden,
        intermediate=args.intermediate,
        vocab=args.vocab,
        tau=args.tau,
    )
    if args.rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    if args.methods:
        unknown = sorted(set(args.methods) - set(METHODS))
        if unknown:
            raise SystemExit(f"unknown methods {unknown}; choose from {METHODS}")
        cfg.methods = ["erm", *[m for m in args.methods if m != "erm"]]
    if args.json:
        from iga.outputs import OutputPathError, check_output_file

        try:  # before minutes of timing, not after
            check_output_file(Path(args.json), "--json")
        except OutputPathError as err:
            print(f"iga bench step: error: {err}", file=sys.stderr)
            return 2
    report = run_bench(cfg, memory=not args.no_memory)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


def register(bench_sub: argparse._SubParsersAction) -> None:
    """Add ``step`` to the ``iga bench`` subcommands."""
    s = bench_sub.add_parser(
        "step",
        help="Time and memory of one IGA step vs ERM and a naive K-backward step (CPU).",
        description=__doc__.split("\n\n")[1],
    )
    s.add_argument("--json", metavar="PATH", help="also write the full report as JSON")
    s.add_argument("--rounds", type=int, default=15, help="timed rounds (one step per method)")
    s.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    s.add_argument("--seq", type=int, default=128, help="tokens per sequence")
    s.add_argument("--layers", type=int, default=4, help="Llama decoder layers")
    s.add_argument("--hidden", type=int, default=256, help="Llama hidden size")
    s.add_argument("--intermediate", type=int, default=688, help="Llama MLP size")
    s.add_argument("--vocab", type=int, default=2048, help="vocabulary size")
    s.add_argument("--tau", type=float, default=1.0, help="mask temperature of the IGA steps")
    s.add_argument("--methods", nargs="+", help=f"subset of {METHODS} (erm always runs)")
    s.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    s.set_defaults(func=_main)
