import pytest

from kdcompress.data.corpus import load_corpus
from kdcompress.data.tasks import TASKS, get_task, normalise_lang
from kdcompress.errors import KDCompressError


def test_registry_has_the_three_tasks():
    assert set(TASKS) >= {"sib200", "xnli", "pawsx"}
    assert get_task("sib200").num_labels == 7 and len(get_task("sib200").languages) == 32
    assert get_task("xnli").num_labels == 3 and get_task("pawsx").num_labels == 2


@pytest.mark.parametrize("task,split,lang,rows", [
    ("sib200", "train", "en", 701), ("sib200", "test", "zh", 204), ("sib200", "dev", "yo", 99),
    ("xnli", "test", "sw", 5010), ("pawsx", "test", "de", 2000),
])
def test_local_splits_load(data_dir, task, split, lang, rows):
    examples = get_task(task).load(split, lang, data_dir=data_dir)
    assert len(examples) == rows
    assert all(0 <= ex.label < get_task(task).num_labels for ex in examples)


def test_xnli_english_training_data_is_local_nli(data_dir):
    examples = get_task("xnli").load("train", "en", data_dir=data_dir)
    assert len(examples) > 19000 and examples[0].text_pair


def test_language_codes(data_dir):
    task = get_task("sib200")
    assert normalise_lang(task, "deu_Latn") == "de"
    with pytest.raises(KDCompressError, match="no language 'xx'"):
        task.load("test", "xx", data_dir=data_dir)


def test_errors_for_unknown_task_and_missing_folder(tmp_path):
    with pytest.raises(KDCompressError, match="unknown task"):
        get_task("glue")
    with pytest.raises(KDCompressError, match="does not exist"):
        get_task("sib200").load("test", "en", data_dir=tmp_path / "nope")


def test_task_corpus_never_reads_test(data_dir):
    task = get_task("sib200")
    corpus = load_corpus(["task"], task=task, langs=["en", "de"], data_dir=data_dir, max_sentences=10_000)
    test_text = {ex.text for lang in ("en", "de") for ex in task.load("test", lang, data_dir=data_dir)}
    assert len(corpus) == 2 * (701 + 99)
    assert not test_text & set(corpus)


def test_corpus_from_text_files(tmp_path, data_dir):
    (tmp_path / "a.txt").write_text("one\n\ntwo\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("two\nthree\n", encoding="utf-8")
    corpus = load_corpus([str(tmp_path)], task=get_task("sib200"), langs=["en"], data_dir=data_dir)
    assert sorted(corpus) == ["one", "three", "two"]
