"""Local Hugging Face models as --student and --teacher (no hub access)."""

from __future__ import annotations

import json

import pytest

import iga.distill.teacher_hf as teacher_hf
from iga.distill.run import DistillConfig, distill
from iga.distill.student import StudentConfig, build_default_student, train_tokenizer
from iga.isomers import DEFAULT_TRAIN_DOMAINS, generate_sets
from tests.test_distill import TINY


@pytest.fixture(scope="module")
def tiny_hf_model(tmp_path_factory):
    """A random tiny Llama and its tokenizer saved with save_pretrained (safetensors)."""
    sets = generate_sets("arithmetic", list(DEFAULT_TRAIN_DOMAINS), 4, seed=3)
    texts = [i.prompt + "\n" + i.rationale for s in sets for i in s.isomers.values()]
    tokenizer = train_tokenizer(texts, 300)
    config = StudentConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_layers=1,
        num_heads=2,
        max_length=512,
    )
    model = build_default_student(tokenizer, config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IGA_CACHE", str(tmp_path / "cache"))


def test_local_model_as_student(tmp_path, tiny_hf_model):
    config = DistillConfig(
        method="iga",
        out=str(tmp_path / "run"),
        student=str(tiny_hf_model),
        lora_targets=("q_proj", "v_proj"),
        **{**TINY, "steps": 3},
    )
    summary = distill(config, show_progress=False)
    assert summary["student"] == str(tiny_hf_model) and summary["steps"] == 3
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()


def test_student_without_target_modules_is_rejected(tmp_path, tiny_hf_model):
    config = DistillConfig(
        out=str(tmp_path / "run"), student=str(tiny_hf_model), lora_targets=("c_attn",), **TINY
    )
    with pytest.raises(ValueError, match="c_attn.*q_proj"):
        distill(config, show_progress=False)


def test_missing_student_folder_is_a_clear_error(tmp_path):
    config = DistillConfig(out=str(tmp_path / "run"), student=str(tmp_path / "nope"), **TINY)
    with pytest.raises(FileNotFoundError, match="config.json"):
        distill(config, show_progress=False)


def test_teacher_that_is_always_wrong_fails_clearly_and_keeps_its_cache(
    tmp_path, tiny_hf_model, monkeypatch
):
    sets = generate_sets("arithmetic", list(DEFAULT_TRAIN_DOMAINS), 3, seed=0)
    cache = tmp_path / "teacher.jsonl"
    with pytest.raises(ValueError, match="leaving no complete isomer set"):
        teacher_hf.teacher_rationales(
            str(tiny_hf_model), sets, DEFAULT_TRAIN_DOMAINS, cache, max_new_tokens=8
        )
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len(rows) == 3 * len(DEFAULT_TRAIN_DOMAINS)

    def no_model(*args, **kwargs):
        raise AssertionError("a rerun must reuse the cache, not load the teacher")

    monkeypatch.setattr(teacher_hf, "load_local_model", no_model)
    with pytest.raises(ValueError, match="leaving no complete isomer set"):
        teacher_hf.teacher_rationales(
            str(tiny_hf_model), sets, DEFAULT_TRAIN_DOMAINS, cache, max_new_tokens=8
        )


def test_teacher_rationales_kept_only_when_right(tmp_path, tiny_hf_model, monkeypatch):
    sets = generate_sets("arithmetic", list(DEFAULT_TRAIN_DOMAINS), 2, seed=1)
    right = sets[0]

    def fake_generate(model, tokenizer, prompts, max_new_tokens, batch_size, pool=True):
        texts = []
        for p in prompts:
            mine = [i for i in right.isomers.values() if i.prompt == p]
            texts.append(f"I think so.\nAnswer: {mine[0].answer}\nextra" if mine else "Answer: -1")
        return texts, None

    monkeypatch.setattr(teacher_hf, "generate_and_pool", fake_generate)
    with pytest.warns(UserWarning, match="kept 1 of 2 sets"):
        kept = teacher_hf.teacher_rationales(
            str(tiny_hf_model), sets, DEFAULT_TRAIN_DOMAINS, tmp_path / "c.jsonl"
        )
    assert [s.set_id for s in kept] == [right.set_id]
    iso = kept[0].isomers["law"]
    assert iso.rationale.endswith(f"Answer: {iso.answer}")
    assert iso.metadata["teacher"] == str(tiny_hf_model)
