"""The teacher for token-level KD (docs/design.md section 5: "token-level KD against
teacher logits where the vocabularies match").

``--kd-weight w`` trains on ``(1 - w) CE + w T^2 KL(teacher || student)``
(``iga.core.losses.kd_token_losses``). The KL compares the two models' distributions
token by token, so it only means something when token id ``i`` is the same string for
both: the teacher's vocabulary must equal the student's, id for id. Anything else is
an error here, before any training.
"""

from __future__ import annotations

from iga.distill.student import load_local_model


def vocabulary_mismatch(teacher_tokenizer, student_tokenizer) -> str | None:
    """Why the two tokenizers' vocabularies differ (None if they are equal, id for id)."""
    t, s = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if t == s:
        return None
    if len(t) != len(s):
        return f"the teacher has {len(t)} tokens, the student {len(s)}"
    by_id_t = {i: tok for tok, i in t.items()}
    by_id_s = {i: tok for tok, i in s.items()}
    first = min(i for i in set(by_id_t) | set(by_id_s) if by_id_t.get(i) != by_id_s.get(i))
    return (
        f"token id {first} is {by_id_t.get(first)!r} for the teacher but "
        f"{by_id_s.get(first)!r} for the student"
    )


def load_kd_teacher(path: str, student_tokenizer, trust_remote_code: bool = False):
    """The ``--teacher`` model for KD, frozen; ``ValueError`` unless it shares the vocabulary.

    Its output layer must also have the student's width (``check_logit_widths``).
    """
    model, tokenizer = load_local_model(path, trust_remote_code)
    why = vocabulary_mismatch(tokenizer, student_tokenizer)
    if why is not None:
        raise ValueError(
            f"--kd-weight needs a teacher sharing the student's vocabulary, but {path} does "
            f"not: {why}. Use a teacher from the student's model family, or drop --kd-weight "
            "(the teacher's rationales alone still distil)."
        )
    return model.eval().requires_grad_(False)


def check_logit_widths(teacher_model, student_model) -> None:
    """``ValueError`` if the two models' output layers differ in width."""
    t = teacher_model.get_output_embeddings().weight.shape[0]
    s = student_model.get_output_embeddings().weight.shape[0]
    if t != s:
        raise ValueError(
            f"--kd-weight: the teacher's logits have {t} entries per token but the student's "
            f"{s}; the KL needs the same output layer width."
        )
