"""Students: the built-in default (a small Llama built from a config, tokenizer trained
offline) and local Hugging Face models, each with peft LoRA attached.

Nothing here downloads from a hub: the default student's tokenizer is trained on
the generated corpus with the ``tokenizers`` library and its weights are
initialised from a seeded ``LlamaConfig``; local models load from a folder with
``local_files_only=True`` and safetensors weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

# transformers, peft and tokenizers are imported inside the functions that use them:
# they cost seconds, and `iga --help` or the theory checks need none of them.

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block under a fixed torch seed without touching the caller's RNG state.

    Hugging Face initialises weights from torch's global generator; forking it keeps
    the rest of the program's randomness where it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@dataclass
class StudentConfig:
    """Size of the built-in default student (a Llama-architecture causal LM)."""

    vocab_size: int = field(default=1024, metadata={"help": "BPE vocabulary size to train."})
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 3
    num_heads: int = 4
    max_length: int = field(default=256, metadata={"help": "Longest sequence in tokens."})
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"StudentConfig.hidden_size={self.hidden_size} must be divisible by "
                f"num_heads={self.num_heads}."
            )
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"StudentConfig.{name} must be >= 1, got {getattr(self, name)}.")

    def to_dict(self) -> dict:
        return asdict(self)


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Byte-level BPE trained offline on ``texts``, digits split one by one.

    Byte-level means no word is ever unknown (held-out domains tokenise into known
    pieces); single digits make arithmetic carry-friendly.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def build_default_student(tokenizer, config: StudentConfig):
    """A freshly initialised small Llama (``LlamaForCausalLM``) sized by ``config``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with seeded(config.seed):
        return LlamaForCausalLM(llama)


def load_local_model(path: str | Path, trust_remote_code: bool = False):
    """(model, tokenizer) from a local folder, a ``.gguf`` file or a preset name
    (``iga.distill.gguf``); safetensors weights, no hub access."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from iga.distill.gguf import PRESETS, resolve_model_path

    path = resolve_model_path(str(path), trust_remote_code)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a Hugging Face model folder (no config.json). Pass a local path "
            f"saved with save_pretrained, a .gguf file or a preset ({', '.join(PRESETS)}); "
            "nothing is downloaded from a hub."
        )
    kwargs = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ValueError(
            f"{path}: no readable tokenizer ({_first_line(err)}). The folder needs the files "
            "of tokenizer.save_pretrained (tokenizer.json or tokenizer_config.json and its "
            "vocabulary)."
        ) from err
    try:
        model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, **kwargs)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as err:
        raise ValueError(
            f"{path}: no readable safetensors weights ({_first_line(err)}). The folder needs "
            "model.safetensors (or shards with model.safetensors.index.json) saved by "
            "save_pretrained(safe_serialization=True)."
        ) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def linear_module_names(model: torch.nn.Module) -> set[str]:
    """Last name components of every ``nn.Linear`` (what LoRA ``target_modules`` match)."""
    return {
        n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
    }


def attach_lora(
    model: torch.nn.Module,
    rank: int = 8,
    targets: Iterable[str] = DEFAULT_LORA_TARGETS,
    alpha: float | None = None,
    dropout: float = 0.0,
    seed: int = 0,
):
    """Vanilla LoRA (no DoRA, no rsLoRA) on the named linear layers, base frozen (a PeftModel)."""
    from peft import LoraConfig, get_peft_model

    targets = list(targets)
    present = linear_module_names(model)
    missing = [t for t in targets if t not in present]
    if missing:
        raise ValueError(
            f"LoRA targets {missing} are not linear layers of this model; it has "
            f"{sorted(present)}. Pass --lora-targets with names from that list."
        )
    smallest = min(
        min(m.in_features, m.out_features)
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in targets
    )
    if not 1 <= rank <= smallest:
        raise ValueError(
            f"LoRA rank {rank} (--lora-rank) must lie in [1, {smallest}] (the smallest "
            "targeted layer side)."
        )
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with seeded(seed):
        return get_peft_model(model, config)
