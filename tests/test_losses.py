import math

import pytest
import torch

from kdcompress.training import losses


def _softmax(row, t):
    exps = [math.exp(x / t) for x in row]
    total = sum(exps)
    return [e / total for e in exps]


def test_logit_kd_loss_matches_hand_computation():
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [1.0, 0.0, 2.0]])
    labels = torch.tensor([1, 2])
    t, alpha = 2.0, 0.7
    kl_rows = []
    ce_rows = []
    for s_row, t_row, label in zip(student.tolist(), teacher.tolist(), labels.tolist()):
        p_t, p_s = _softmax(t_row, t), _softmax(s_row, t)
        kl_rows.append(sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s)))
        ce_rows.append(-math.log(_softmax(s_row, 1.0)[label]))
    expected = alpha * t * t * sum(kl_rows) / 2 + (1 - alpha) * sum(ce_rows) / 2
    got = losses.logit_kd_loss(student, teacher, labels, temperature=t, alpha=alpha)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_soft_kl_is_zero_for_identical_logits_and_positive_otherwise():
    logits = torch.randn(4, 7)
    assert losses.soft_kl(logits, logits, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.soft_kl(logits, logits.flip(-1), 3.0).item() > 0


def test_masked_lm_kd_loss_uses_masked_positions_only():
    student = torch.randn(2, 5, 11)
    teacher = torch.randn(2, 5, 11)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 1] = mask[1, 3] = True
    expected = losses.soft_kl(student[mask], teacher[mask], 2.0)
    changed_unmasked = student.clone()
    changed_unmasked[0, 0] += 5.0
    assert losses.masked_lm_kd_loss(student, teacher, mask, temperature=2.0).item() == pytest.approx(expected.item())
    assert losses.masked_lm_kd_loss(changed_unmasked, teacher, mask, temperature=2.0).item() == pytest.approx(expected.item())


def test_hidden_state_loss_cosine_and_mse_ignore_padding():
    s = torch.randn(2, 4, 8)
    t = s.clone()
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    t[0, 3] += 10  # a padding position: must not count
    assert losses.hidden_state_loss([s], [t], mask, kind="cosine").item() == pytest.approx(0.0, abs=1e-6)
    assert losses.hidden_state_loss([s], [t], mask, kind="mse").item() == pytest.approx(0.0, abs=1e-9)
    t[0, 0] += 1.0
    mse = losses.hidden_state_loss([s], [t], mask, kind="mse").item()
    assert mse == pytest.approx(8 * 1.0 / (5 * 8))  # one token of 8 dims off by 1, out of 5 real tokens


def test_attention_relation_loss_zero_for_same_relations_and_width_independent():
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0]])
    wide = tuple(torch.randn(1, 4, 16) for _ in range(3))
    assert losses.attention_relation_loss(wide, wide, mask, num_relation_heads=4).item() == pytest.approx(0.0, abs=1e-6)
    narrow = tuple(torch.randn(1, 4, 8) for _ in range(3))
    value = losses.attention_relation_loss(narrow, wide, mask, num_relation_heads=4)
    assert value.item() > 0 and torch.isfinite(value)


def test_relation_matrix_hand_computed():
    states = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # batch 1, seq 2, width 2, one head
    rel = losses.self_attention_relations(states, 1)
    expected = torch.tensor([[1.0, 0.0], [0.0, 4.0]]) / math.sqrt(2)
    assert torch.allclose(rel[0, 0], expected)


def test_length_bucketed_order_is_a_seeded_permutation_of_similar_length_batches():
    from kdcompress.training.loop import epoch_order

    lengths = [((i * 37) % 101) + 1 for i in range(1003)]
    order = epoch_order(len(lengths), seed=3, batch_size=8, lengths=lengths, window=10)
    assert sorted(order) == list(range(len(lengths)))  # every example once
    assert order == epoch_order(len(lengths), seed=3, batch_size=8, lengths=lengths, window=10)  # resumable
    assert order != epoch_order(len(lengths), seed=4, batch_size=8, lengths=lengths, window=10)
    blocks = [order[i:i + 8] for i in range(0, len(order), 8)]
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in blocks) / len(blocks)
    random_spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b)
                        for b in (list(range(len(lengths)))[i:i + 8] for i in range(0, len(lengths), 8))) / len(blocks)
    assert spread < random_spread / 5  # batches hold similar lengths
    assert epoch_order(10, seed=3, batch_size=4) == epoch_order(10, seed=3, batch_size=4, lengths=None)
