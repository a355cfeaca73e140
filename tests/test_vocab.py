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


def test_one_character_tokens_keep_text_outside_the_corpus_known(tiny_teacher_dir):
    from transformers import AutoTokenizer

    from kdcompress.training.vocab import character_token_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    corpus, unseen = ["Guten Tag, Welt!"], ["Bahnhofstraße 12 ist weit", "北京欢迎你"]
    assert tokenizer.unk_token_id not in sum(tokenizer(unseen)["input_ids"], [])
    text_only = collect_token_ids(tokenizer, corpus)
    with_characters = sorted(set(text_only) | set(character_token_ids(tokenizer)))
    assert len(with_characters) < len(tokenizer) // 2

    def unknowns(keep):
        trimmed = trim_tokenizer(tokenizer, keep)
        return sum(ids.count(trimmed.unk_token_id) for ids in trimmed(unseen)["input_ids"])

    assert unknowns(text_only) > 0  # the corpus's tokens alone: unseen words read as unknown
    assert unknowns(with_characters) == 0  # with every character: split into smaller known tokens
    # covered text keeps its own segmentation
    assert trim_tokenizer(tokenizer, with_characters).tokenize(corpus[0]) == tokenizer.tokenize(corpus[0])


def test_one_character_tokens_of_a_unigram_vocabulary():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from kdcompress.training.vocab import character_token_ids

    pieces = [("<unk>", 0.0), ("\u2581hallo", -1.0), ("\u2581h", -2.0), ("a", -2.0), ("ll", -3.0), ("o", -2.0),
              ("\u2581", -2.0), ("l", -2.0)]
    backend = Tokenizer(models.Unigram(pieces, unk_id=0))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    assert sorted(character_token_ids(tokenizer)) == [2, 3, 5, 6, 7]


def test_a_minimum_count_keeps_only_the_tokens_seen_that_often(tiny_teacher_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    texts = ["Guten Tag", "Guten Abend", "Hallo"]
    once, twice = collect_token_ids(tokenizer, texts), collect_token_ids(tokenizer, texts, min_count=2)
    guten = tokenizer("Guten", add_special_tokens=False)["input_ids"]
    hallo = tokenizer("Hallo", add_special_tokens=False)["input_ids"]
    assert set(guten) <= set(twice) and set(tokenizer.all_special_ids) <= set(twice)  # specials always stay
    assert set(hallo) <= set(once) and not set(hallo) & set(twice) - set(tokenizer.all_special_ids)
