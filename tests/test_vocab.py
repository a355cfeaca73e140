import torch
from transformers import AutoModel

from kdcompress.training.students import build_student, plan_student
from kdcompress.training.vocab import collect_token_ids, trim_tokenizer
from kdcompress.data.tasks import get_task


def test_trimmed_model_gives_same_hidden_states_on_covered_text(tiny_teacher_dir, data_dir):
    from transformers import AutoTokenizer

    task = get_task("sib200")
    texts = [ex.text for lang in ("en", "de", "zh", "ar") for ex in task.load("dev", lang, data_dir=data_dir, limit=20)]
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    keep = collect_token_ids(tokenizer, texts)
    assert len(keep) < len(tokenizer) // 10
    trimmed_tokenizer = trim_tokenizer(tokenizer, keep)
    teacher = AutoModel.from_pretrained(tiny_teacher_dir).eval()
    plan = plan_student(teacher.config, layers=teacher.config.num_hidden_layers, vocab_size=len(keep))
    trimmed = build_student(teacher, plan, type(teacher), keep_token_ids=keep).eval()
    assert trimmed.embeddings.word_embeddings.weight.shape[0] == len(keep)

    sample = texts[::7]
    full_inputs = tokenizer(sample, padding=True, return_tensors="pt")
    small_inputs = trimmed_tokenizer(sample, padding=True, return_tensors="pt")
    # The trimmed tokenizer emits the same pieces, renumbered.
    assert torch.equal(torch.tensor(keep)[small_inputs["input_ids"]], full_inputs["input_ids"])
    with torch.inference_mode():
        full = teacher(**full_inputs).last_hidden_state
        small = trimmed(**small_inputs).last_hidden_state
    mask = full_inputs["attention_mask"].bool()
    assert torch.allclose(full[mask], small[mask], atol=1e-5)


def test_trimmed_tokenizer_round_trips_through_save(tmp_path, tiny_teacher_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    keep = collect_token_ids(tokenizer, ["Guten Tag, Welt!", "你好"])
    trimmed = trim_tokenizer(tokenizer, keep)
    trimmed.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert len(reloaded) == len(keep)
    assert reloaded("Guten Tag")["input_ids"] == trimmed("Guten Tag")["input_ids"]
    assert reloaded.unk_token_id == keep.index(tokenizer.unk_token_id)
