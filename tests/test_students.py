import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel, DistilBertConfig, DistilBertForMaskedLM

from kdcompress.training.students import build_student, plan_student, select_layers
from kdcompress.errors import KDCompressError


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=120, hidden_size=64, num_hidden_layers=6, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64)
    return BertForMaskedLM(config).eval()


def test_uniform_and_bottom_layer_selection():
    assert select_layers(12, 6, "uniform") == (1, 3, 5, 7, 9, 11)
    assert select_layers(12, 4, "uniform") == (2, 5, 8, 11)
    assert select_layers(12, 3, "bottom") == (0, 1, 2)
    assert select_layers(6, 6, "uniform") == tuple(range(6))


def test_layer_copy_weight_by_weight(teacher):
    plan = plan_student(teacher.config, layers=3)
    student = build_student(teacher, plan, BertForMaskedLM)
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for j, t in enumerate(plan.layer_map):
        for key, value in s_state.items():
            if f"encoder.layer.{j}." in key:
                assert torch.equal(value, t_state[key.replace(f"layer.{j}.", f"layer.{t}.")]), key
    for key in ("bert.embeddings.word_embeddings.weight", "bert.embeddings.LayerNorm.weight",
                "cls.predictions.transform.dense.weight", "cls.predictions.bias"):
        assert torch.equal(s_state[key], t_state[key]), key


def test_full_depth_student_reproduces_teacher(teacher):
    student = build_student(teacher, plan_student(teacher.config, layers=6), BertForMaskedLM).eval()
    ids = torch.randint(5, 120, (2, 9))
    assert torch.allclose(student(input_ids=ids).logits, teacher(input_ids=ids).logits, atol=1e-6)


def test_narrow_student_is_a_consistent_slice(teacher):
    plan = plan_student(teacher.config, layers=2, hidden=32)
    assert (plan.num_heads, plan.intermediate_size) == (2, 64)
    student = build_student(teacher, plan, BertForSequenceClassification, config_overrides={"num_labels": 3}).eval()
    ids = torch.randint(5, 120, (2, 7))
    assert student(input_ids=ids).logits.shape == (2, 3)
    # Every student weight is a sub-matrix of the teacher's: check one projection by value.
    t_query = teacher.bert.encoder.layer[plan.layer_map[0]].attention.self.query.weight
    s_query = student.bert.encoder.layer[0].attention.self.query.weight
    assert any(torch.isclose(t_query, s_query[0, 0]).flatten())


def test_student_from_bare_encoder_teacher(teacher):
    encoder = BertModel(teacher.config, add_pooling_layer=False)
    encoder.load_state_dict(teacher.bert.state_dict(), strict=False)
    student = build_student(encoder, plan_student(encoder.config, layers=2), BertForSequenceClassification,
                            config_overrides={"num_labels": 7})
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)


def test_distilbert_teacher_depth():
    torch.manual_seed(0)
    teacher = DistilBertForMaskedLM(DistilBertConfig(vocab_size=50, dim=32, n_layers=4, n_heads=4, hidden_dim=64)).eval()
    student = build_student(teacher, plan_student(teacher.config, layers=2), DistilBertForMaskedLM)
    assert torch.equal(student.distilbert.transformer.layer[1].ffn.lin1.weight,
                       teacher.distilbert.transformer.layer[3].ffn.lin1.weight)


@pytest.mark.parametrize("layers,hidden,message", [
    (8, None, "deeper than its 6-layer teacher"),
    (2, 128, "wider than its teacher"),
    (2, 40, "not a multiple of the teacher's head size"),
])
def test_impossible_students_are_clear_errors(teacher, layers, hidden, message):
    with pytest.raises(KDCompressError, match=message):
        plan_student(teacher.config, layers=layers, hidden=hidden)


def test_unsupported_architecture_is_an_error():
    from transformers import GPT2Config

    with pytest.raises(KDCompressError, match="unsupported teacher architecture"):
        plan_student(GPT2Config(), layers=2)


def test_distilbert_teacher_width():
    torch.manual_seed(0)
    teacher = DistilBertForMaskedLM(DistilBertConfig(vocab_size=50, dim=32, n_layers=4, n_heads=4, hidden_dim=64)).eval()
    plan = plan_student(teacher.config, layers=2, hidden=16)
    student = build_student(teacher, plan, DistilBertForMaskedLM).eval()
    assert (student.config.dim, student.config.n_heads, student.config.hidden_dim) == (16, 2, 32)
    assert student(input_ids=torch.randint(0, 50, (2, 5))).logits.shape == (2, 5, 50)
