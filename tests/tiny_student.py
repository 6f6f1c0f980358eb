"""A random 1-layer Llama with a BPE trained on isomer text, saved as a local Hugging Face
folder: what ``--student`` or ``Job.student`` points at in place of SmolLM2-135M."""

from __future__ import annotations

from pathlib import Path


def save_tiny_student(folder: Path, families, n_sets: int, seed: int) -> str:
    """Write the student to ``folder``, its tokenizer trained on ``n_sets`` sets of each
    of ``families`` in the default training domains; returns the folder as a string."""
    from iga.distill.student import StudentConfig, build_default_student, train_tokenizer
    from iga.isomers import DEFAULT_TRAIN_DOMAINS, generate_sets

    domains = list(DEFAULT_TRAIN_DOMAINS)
    sets = [s for f in families for s in generate_sets(f, domains, n_sets, seed=seed)]
    texts = [i.prompt + "\n" + i.rationale for s in sets for i in s.isomers.values()]
    tokenizer = train_tokenizer(texts, 1000)
    config = StudentConfig(
        vocab_size=1000, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=4
    )
    build_default_student(tokenizer, config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
