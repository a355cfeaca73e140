"""Initialise a static student (`--student-layers 0`, see kdcompress/static_model.py) from its teacher.

This follows model2vec's `distill` (model2vec/distill/distillation.py and inference.py, v0.10):
1. every vocabulary token goes through the teacher alone, between the special tokens the tokenizer adds
   ([CLS] t [SEP] for BERT, <s> t </s> for XLM-R vocabularies), and the output is mean-pooled over those
   positions (model2vec's default `pooling="mean"`);
2. PCA to the student width (the teacher's width is allowed: then PCA only rotates, like model2vec's "auto");
3. Zipf/SIF weighting: a token of rank r gets weight a / (a + p(r)), p(r) proportional to 1 / (r + 2), a = 1e-4.
Where we differ, and why:
- the rank is the token's id in the *teacher's* vocabulary (model2vec: its position in the vocabulary it keeps),
  so trimming the vocabulary (--trim-vocab) does not change any kept token's weight; unigram (XLM-R, e5)
  vocabularies are ordered by piece score, which is what makes the id a frequency rank;
- with --trim-vocab only the kept tokens are embedded: 250k tokens through a 12-layer teacher is minutes on
  two cores, the few ten thousand that the task's and corpus' text uses are seconds;
- PCA is done with torch (`torch.linalg.eigh` of the covariance, what model2vec does with numpy), since
  scikit-learn is not a kdcompress dependency;
- the result is a trainable classifier (embeddings + head), trained afterwards with the usual recipes, where
  model2vec's output is a frozen embedding a separate classifier reads.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from kdcompress.errors import KDCompressError
from kdcompress.model_check import model_max_positions
from kdcompress.static_model import StaticStudentConfig, StaticStudentForSequenceClassification

DEFAULT_STATIC_HIDDEN = 256
SIF_COEFFICIENT = 1e-4  # model2vec's default
EMBED_BATCH = 1024  # single-token inputs: 1024 x 3 tokens per forward pass


def static_width(requested: int | None, teacher_hidden: int) -> int:
    """The student width: --student-hidden, else 256 (or the teacher's width where that is smaller)."""
    width = requested or min(DEFAULT_STATIC_HIDDEN, teacher_hidden)
    if width > teacher_hidden:
        raise KDCompressError(f"a static student {width} wide is wider than its teacher ({teacher_hidden}); PCA cannot "
                              f"add dimensions: choose --student-hidden <= {teacher_hidden}")
    return width


def _special_affixes(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text (e.g. [CLS] / [SEP]), read from its special-tokens mask
    (transformers 5's fast tokenizers have no build_inputs_with_special_tokens)."""
    encoded = tokenizer("a", add_special_tokens=True, return_special_tokens_mask=True)
    ids, special = encoded["input_ids"], encoded["special_tokens_mask"]
    content = [i for i, flag in enumerate(special) if not flag]
    if not content:
        return [], []
    return list(ids[:content[0]]), list(ids[content[-1] + 1:])


@torch.inference_mode()
def teacher_token_embeddings(teacher: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, token_ids: list[int],
                             *, batch_size: int = EMBED_BATCH) -> torch.Tensor:
    """One vector per token id: the teacher's output for that token alone, mean-pooled (see the module docstring)."""
    base = teacher.base_model.eval()
    device = next(base.parameters()).device
    prefix, suffix = _special_affixes(tokenizer)
    out = []
    for start in range(0, len(token_ids), batch_size):
        chunk = torch.tensor(token_ids[start:start + batch_size], dtype=torch.long)
        # Every input has the same length (prefix + 1 + suffix): no padding, so a plain mean is the masked mean.
        ids = torch.cat([torch.tensor(prefix).expand(len(chunk), -1), chunk[:, None],
                         torch.tensor(suffix).expand(len(chunk), -1)], dim=1).to(device)
        hidden = base(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        out.append(hidden.float().mean(dim=1).cpu())
    return torch.cat(out)


def pca(vectors: torch.Tensor, dims: int) -> torch.Tensor:
    """Project centred `vectors` on their `dims` leading principal axes."""
    centred = vectors.double() - vectors.double().mean(dim=0)
    covariance = centred.T @ centred / max(len(vectors) - 1, 1)
    _, axes = torch.linalg.eigh(covariance)  # ascending eigenvalues
    return (centred @ axes.flip(-1)[:, :dims]).float()


def sif_weights(token_ids: list[int], teacher_vocab_size: int, coefficient: float = SIF_COEFFICIENT) -> torch.Tensor:
    """model2vec's Zipf/SIF weight of each token, by its rank (id) in the teacher's vocabulary."""
    ranks = torch.tensor(token_ids, dtype=torch.float64)
    norm = (1.0 / torch.arange(2, teacher_vocab_size + 2, dtype=torch.float64)).sum()
    probability = (1.0 / (ranks + 2)) / norm
    return (coefficient / (coefficient + probability)).float()


def build_static_student(teacher: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, hidden: int,
                         keep_token_ids: list[int] | None = None,
                         config_overrides: dict | None = None) -> StaticStudentForSequenceClassification:
    """A static classifier whose embedding rows are the teacher's token vectors, PCA-reduced and SIF-weighted;
    its head starts fresh (seed the RNG before calling)."""
    teacher_config = teacher.config
    token_ids = list(keep_token_ids) if keep_token_ids is not None else list(range(teacher_config.vocab_size))
    vectors = pca(teacher_token_embeddings(teacher, tokenizer, token_ids), hidden)
    vectors = vectors * sif_weights(token_ids, teacher_config.vocab_size)[:, None]
    pad = teacher_config.pad_token_id
    if pad is not None and keep_token_ids is not None:
        pad = keep_token_ids.index(pad) if pad in keep_token_ids else None
    config = StaticStudentConfig(vocab_size=len(token_ids), hidden_size=hidden, pad_token_id=pad,
                                 max_position_embeddings=model_max_positions(teacher_config),
                                 **(config_overrides or {}))
    student = StaticStudentForSequenceClassification(config)
    with torch.no_grad():
        student.embeddings.weight.copy_(vectors)
    return student
