"""KD in fine-tuning on a multilingual transfer set, reusable general students, and student initialisation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from kdcompress.errors import KDCompressError
from kdcompress.training import losses
from kdcompress.training.distill import distill
from kdcompress.training.students import select_layers


def _softmax(row, t):
    exps = [math.exp(x / t) for x in row]
    return [e / sum(exps) for e in exps]


def test_transfer_loss_matches_hand_computation():
    """KL over the rows the mask marks (labelled and unlabeled), cross-entropy over the labelled rows only."""
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [0.3, 0.2, -0.4], [2.0, 0.0, 1.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [1.0, 0.0, 2.0], [0.0, 3.0, 0.0], [1.0, 1.0, 0.0]])
    labels = torch.tensor([1, 2, losses.UNLABELED, losses.UNLABELED])
    kd_mask = torch.tensor([False, True, True, True])  # kd_transfer=corpus: row 0 is CE only
    t, alpha = 2.0, 0.6
    kl = []
    for s_row, t_row in zip(student.tolist()[1:], teacher.tolist()[1:]):
        p_t, p_s = _softmax(t_row, t), _softmax(s_row, t)
        kl.append(sum(a * math.log(a / b) for a, b in zip(p_t, p_s)))
    ce = [-math.log(_softmax(row, 1.0)[label]) for row, label in zip(student.tolist()[:2], [1, 2])]
    expected = alpha * t * t * sum(kl) / 3 + (1 - alpha) * sum(ce) / 2
    got = losses.logit_kd_loss(student, teacher, labels, temperature=t, alpha=alpha, kd_mask=kd_mask)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # Without a mask and with every row labelled it is the classic loss.
    classic = losses.logit_kd_loss(student[:2], teacher[:2], labels[:2], temperature=t, alpha=alpha)
    masked = losses.logit_kd_loss(student[:2], teacher[:2], labels[:2], temperature=t, alpha=alpha,
                                  kd_mask=torch.tensor([True, True]))
    assert classic.item() == pytest.approx(masked.item())


def _settings(tiny_teacher_dir, data_dir, **extra):
    return dict(teacher=str(tiny_teacher_dir), task="sib200", data_dir=str(data_dir), target_langs=["de", "sw"],
                student_layers=2, max_steps=2, batch_size=4, max_length=24, corpus_max_sentences=24, seed=5,
                evaluate=False, **extra)


@pytest.mark.parametrize("mode", ["corpus", "source+corpus"])
def test_transfer_set_reaches_the_loss(tmp_path, tiny_teacher_dir, data_dir, mode):
    result = distill(out=str(tmp_path / mode), strategy="finetune", kd_transfer=mode,
                     **_settings(tiny_teacher_dir, data_dir))
    transfer = result.record["transfer_set"]
    assert transfer["kind"] == "task" and transfer["labelled"] == 701 and transfer["unlabeled"] == 24
    assert result.record["stages"][-1]["history"], "the KD stage trained"


def test_task_train_corpus_never_reads_dev_text(data_dir):
    """'task:train' is for settings chosen on dev: the dev sentences must stay unseen."""
    from kdcompress.data.corpus import load_corpus
    from kdcompress.data.tasks import get_task

    task = get_task("sib200")
    dev = {e.text for lang in ("en", "de") for e in task.load("dev", lang, data_dir=str(data_dir))}
    train_only = set(load_corpus(["task:train"], task=task, langs=["en", "de"], data_dir=str(data_dir),
                                 max_sentences=10**6))
    both = set(load_corpus(["task"], task=task, langs=["en", "de"], data_dir=str(data_dir), max_sentences=10**6))
    assert train_only and not train_only & dev
    assert dev <= both and train_only < both


def test_generic_transfer_text_is_told_apart(tmp_path, tiny_teacher_dir, data_dir):
    corpus = tmp_path / "generic.txt"
    corpus.write_text("Ein ganz anderer Satz über das Wetter.\nHabari za asubuhi, rafiki yangu.\n" * 3)
    result = distill(out=str(tmp_path / "g"), strategy="finetune", kd_transfer="corpus", corpus=[str(corpus)],
                     **_settings(tiny_teacher_dir, data_dir))
    assert result.record["transfer_set"]["kind"] == "generic" and result.record["transfer_set"]["unlabeled"] == 2


def test_transfer_needs_target_text(tmp_path, tiny_teacher_dir, data_dir):
    settings = _settings(tiny_teacher_dir, data_dir)
    settings["target_langs"] = []
    with pytest.raises(KDCompressError, match="no target-language text"):
        distill(out=str(tmp_path / "t"), strategy="finetune", kd_transfer="corpus", **settings)
    assert not (tmp_path / "t").exists() and not (tmp_path / "t.partial").exists()
    with pytest.raises(KDCompressError, match="needs KD during fine-tuning"):
        distill(out=str(tmp_path / "t"), strategy="none", kd_transfer="corpus", **settings)


def test_reused_general_student_gives_the_same_student(tmp_path, tiny_teacher_dir, data_dir):
    settings = _settings(tiny_teacher_dir, data_dir)
    in_one_run = distill(out=str(tmp_path / "one"), strategy="pretrain", **settings)
    general = distill(out=str(tmp_path / "general"), strategy="general", **settings)
    assert not (general.out / "teacher").exists() and "dev_accuracy" not in general.record
    reused = distill(out=str(tmp_path / "reused"), strategy="pretrain", general_student=str(general.out), **settings)
    assert [s["name"] for s in reused.record["stages"]] == ["student"]
    a, b = load_file(in_one_run.out / "model.safetensors"), load_file(reused.out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_general_student_must_match(tmp_path, tiny_teacher_dir, data_dir):
    general = distill(out=str(tmp_path / "general"), strategy="general", **_settings(tiny_teacher_dir, data_dir))
    with pytest.raises(KDCompressError, match="layers"):
        distill(out=str(tmp_path / "x"), strategy="pretrain", general_student=str(general.out),
                **{**_settings(tiny_teacher_dir, data_dir), "student_layers": 3})
    with pytest.raises(KDCompressError, match="no config.json"):
        distill(out=str(tmp_path / "x"), strategy="pretrain", general_student=str(tmp_path),
                **_settings(tiny_teacher_dir, data_dir))
    assert not (tmp_path / "x.partial").exists()


def test_layer_selections():
    assert select_layers(12, 4, "uniform") == (2, 5, 8, 11)
    assert select_layers(12, 4, "bottom") == (0, 1, 2, 3)
    assert select_layers(12, 4, "top") == (8, 9, 10, 11)


def test_init_from_the_finetuned_teacher(tmp_path, tiny_teacher_dir, data_dir, monkeypatch):
    from kdcompress.training import stages

    seen = []
    real_build = stages.build_student

    def recording_build(teacher, plan, student_class, **kwargs):
        seen.append({k: v.clone() for k, v in teacher.state_dict().items()})
        return real_build(teacher, plan, student_class, **kwargs)

    monkeypatch.setattr(stages, "build_student", recording_build)
    result = distill(out=str(tmp_path / "ft"), strategy="finetune", init_from="finetuned-teacher",
                     **_settings(tiny_teacher_dir, data_dir))
    saved_teacher = load_file(result.out / "teacher" / "model.safetensors")
    (source,) = seen
    assert "classifier.weight" in source  # the student was built from the fine-tuned classifier ...
    assert all(torch.equal(source[k], saved_teacher[k]) for k in saved_teacher)  # ... the one the run trained
    assert json.loads((result.out / "distill.json").read_text())["config"]["init_from"] == "finetuned-teacher"


def test_pair_transfer_set_keeps_every_language_under_a_cap(data_dir):
    """XNLI's transfer set is the targets' unlabeled dev pairs; a cap takes from every language alike."""
    from kdcompress.data.tasks import get_task
    from kdcompress.training.config import DistillConfig
    from kdcompress.training.transfer_set import build_transfer_set

    task = get_task("xnli")
    train = task.load("train", "en", data_dir=data_dir)[:4]
    cfg = DistillConfig(kd_transfer="source+corpus", corpus=["task"], corpus_max_sentences=30, task="xnli")
    transfer = build_transfer_set(cfg, task, "en", ["de", "fr", "zh"], data_dir, train, None)
    unlabeled = transfer.examples[len(train):]
    assert len(unlabeled) == 30 and all(e.text_pair for e in unlabeled)
    dev = {lang: {e.text for e in task.load("dev", lang, data_dir=data_dir)} for lang in ("de", "fr", "zh")}
    assert [sum(e.text in dev[lang] for e in unlabeled) for lang in dev] == [10, 10, 10]


def test_a_pair_task_without_target_train_pairs_says_how_to_get_a_transfer_set(data_dir):
    """Offline, XNLI trains English only: task:train (compress's default) finds no target pairs."""
    from kdcompress.data.tasks import get_task
    from kdcompress.training.config import DistillConfig
    from kdcompress.training.transfer_set import build_transfer_set

    task = get_task("xnli")
    train = task.load("train", "en", data_dir=data_dir)[:4]
    cfg = DistillConfig(kd_transfer="source+corpus", corpus=["task:train"], task="xnli")
    with pytest.raises(KDCompressError, match="no xnli train pairs in the target languages.*use --corpus task"):
        build_transfer_set(cfg, task, "en", ["de", "fr"], data_dir, train, None)


def test_teacher_logits_are_computed_once_per_teacher_and_transfer_set(tmp_path, tiny_teacher_dir, data_dir):
    from safetensors.torch import load_file

    teacher = distill(out=str(tmp_path / "first"), strategy="transfer", student_layers=2,
                      teacher_logits_cache=str(tmp_path / "cache"), **{
                          k: v for k, v in _settings(tiny_teacher_dir, data_dir).items() if k != "student_layers"})
    cache = list((tmp_path / "cache").iterdir())
    assert len(cache) == 1 and load_file(str(cache[0]))["logits"].shape == (701 + 24, 7)
    finetuned = str(tmp_path / "first" / "teacher")
    assert (tmp_path / "first" / "teacher" / "config.json").is_file(), teacher.out
    # A second student of the same fine-tuned teacher and transfer set reads them; it trains exactly as without.
    again = dict(_settings(tiny_teacher_dir, data_dir), student_layers=1, finetuned_teacher=finetuned)
    cached = distill(out=str(tmp_path / "cached"), strategy="transfer", teacher_logits_cache=str(tmp_path / "cache"),
                     **again)
    fresh = distill(out=str(tmp_path / "fresh"), strategy="transfer", **again)
    assert len(list((tmp_path / "cache").iterdir())) == 1
    a, b = (load_file(str(r.out / "model.safetensors")) for r in (cached, fresh))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
