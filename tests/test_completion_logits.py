"""The LM head on supervised positions only is exact: same loss and gradients as full logits."""

import pytest
import torch

from iga.core.losses import (
    IGNORE_INDEX,
    completion_token_losses,
    domain_mean_loss,
    supervised_token_losses,
)


def tiny_lora_llama(seed: int = 0):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
        model = get_peft_model(model, lora)
    # LoRA B starts at zero; make it non-zero so the adapter's gradients are generic.
    g = torch.Generator().manual_seed(seed + 1)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data = torch.randn(p.shape, generator=g) * 0.1
    return model.double()


def batch(seed: int = 0):
    """Right-padded batch of 6 rows in 3 domains with prompts of different lengths."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 97, (6, 20), generator=g)  # (B, T)
    attention = torch.ones_like(ids)
    labels = ids.clone()
    for i, (prompt, length) in enumerate([(5, 20), (9, 17), (3, 12), (12, 20), (7, 15), (2, 9)]):
        labels[i, :prompt] = IGNORE_INDEX
        labels[i, length:] = IGNORE_INDEX
        attention[i, length:] = 0
    domains = torch.tensor([0, 1, 2, 0, 1, 2])
    return {"input_ids": ids, "attention_mask": attention}, labels, domains


def loss_and_grads(model, supervised_only: bool):
    inputs, labels, domains = batch()
    model.zero_grad()
    if supervised_only:
        ce, mask, _ = supervised_token_losses(model, inputs, labels)
    else:
        ce, mask = completion_token_losses(model(**inputs).logits, labels)
    loss = domain_mean_loss(ce, mask, domains, 3)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def test_supervised_only_logits_match_full_logits_in_loss_and_gradients():
    model = tiny_lora_llama()
    full_loss, full_grads = loss_and_grads(model, supervised_only=False)
    loss, grads = loss_and_grads(model, supervised_only=True)
    # both paths take the cross-entropy in float32 (as training does): agree to its precision
    assert torch.allclose(loss, full_loss, rtol=1e-6, atol=0)
    assert grads.keys() == full_grads.keys() and len(grads) == 12  # 2 layers x 3 targets x A, B
    for n in grads:
        assert torch.allclose(grads[n], full_grads[n], rtol=1e-5, atol=1e-8), n
    # the head really saw fewer positions: outputs hold one row per supervised token
    inputs, labels, _ = batch()
    _, mask, outputs = supervised_token_losses(model, inputs, labels)
    assert outputs.logits.shape == (int(mask.sum()), 97) and int(mask.sum()) < mask.numel()


def test_a_shifted_mask_is_caught():
    """Companion that must fail: supervising the prompt token before each completion
    (an off-by-one in the shift) changes the loss, so the equality above is not vacuous."""
    model = tiny_lora_llama()
    inputs, labels, domains = batch()
    ce, mask = completion_token_losses(model(**inputs).logits, labels)
    right = domain_mean_loss(ce, mask, domains, 3)
    shifted = torch.roll(mask, shifts=-1, dims=1)
    wrong = domain_mean_loss(ce, shifted, domains, 3)
    assert not torch.allclose(right, wrong, rtol=1e-6)


def test_a_model_that_slices_positions_before_its_head_is_a_clear_error():
    model = tiny_lora_llama()
    inputs, labels, _ = batch()
    with pytest.raises(RuntimeError, match="not \\(B, T, d\\)"):
        supervised_token_losses(model, {**inputs, "logits_to_keep": 1}, labels)
