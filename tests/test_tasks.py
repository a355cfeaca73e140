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


# --- malformed task files: one line naming the file, the line and the fix ---------------------

SIB_HEADER = "index_id\tcategory\ttext\n"
SIB_ROWS = "1\ttravel\tA trip to the sea.\n2\tsports\tThe match ended in a draw.\n"
SIB_FILE = "sib200/deu_Latn/train.tsv"
XNLI_FILE = "xnli/test-de.tsv"
PAWSX_FILE = "pawsx/dev-de.tsv"
XNLI_ROWS = "Ein Mann schläft.\tJemand ruht.\tentailment\nEin Hund bellt.\tEine Katze schläft.\tneutral\n"
NLI_ROW = '{"premise": "A man sleeps.", "hypothesis": "Someone rests.", "label": "entailment"}\n'


def _write_task_folder(root, files: dict[str, str | bytes]):
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
    return root


@pytest.mark.parametrize("task,split,lang,name,content,error", [
    ("sib200", "train", "de", SIB_FILE, SIB_HEADER + SIB_ROWS + "3\ttravel\tA\textra tab.\n",
     r"train.tsv, line 4: 4 tab-separated fields where 3 \(index_id<TAB>category<TAB>text\) were expected; "
     r"remove the stray tab"),
    ("sib200", "train", "de", SIB_FILE, SIB_HEADER + "1\ttravel\n",
     r"train.tsv, line 2: 2 tab-separated fields where 3 .* fix the row or delete it"),
    ("sib200", "train", "de", SIB_FILE, (SIB_HEADER + SIB_ROWS).encode() + b"3\ttravel\tCaf\xe9 au lait.\n",
     r"train.tsv, line 4: not UTF-8 text \(byte 0xe9\); re-save the file as UTF-8"),
    ("sib200", "train", "de", SIB_FILE, SIB_ROWS,
     r"train.tsv, line 1: missing the header line; the file must start with the line "
     r"'index_id<TAB>category<TAB>text' \(add it as the first line\)"),
    ("sib200", "train", "de", SIB_FILE, "id\ttext\n" + SIB_ROWS,
     r"train.tsv, line 1: header is 'id<TAB>text'; the file must start with the line"),
    ("sib200", "train", "de", SIB_FILE, SIB_HEADER + "1\tcooking\tBake the bread.\n",
     r"train.tsv, line 2: unknown sib200 label 'cooking'; expected one of science/technology, travel, .* "
     r"\(fix or delete that row\)"),
    ("sib200", "train", "de", SIB_FILE, SIB_HEADER + SIB_ROWS + "3\ttravel\t  \n",
     r"train.tsv, line 4: empty text; fill it in or delete the row"),
    ("sib200", "train", "de", SIB_FILE, "",
     r"train.tsv is empty; it must start with the line 'index_id<TAB>category<TAB>text', then one example a line"),
    ("sib200", "train", "de", SIB_FILE, SIB_HEADER + "\n", r"train.tsv holds no examples; restore it from the dataset"),
    ("xnli", "test", "de", XNLI_FILE, "\n", r"test-de.tsv holds no examples"),
    ("xnli", "test", "de", XNLI_FILE, "premise\thypothesis\tlabel\n" + XNLI_ROWS,
     r"test-de.tsv, line 1: unknown xnli label 'label'; expected one of entailment, neutral, contradiction "
     r"\(xnli files have no header line: delete it\)"),
    ("xnli", "test", "de", XNLI_FILE, XNLI_ROWS + "Ein Satz.\tNoch einer.\tmaybe\n",
     r"test-de.tsv, line 3: unknown xnli label 'maybe'; .* \(fix or delete that row\)"),
    ("xnli", "test", "de", XNLI_FILE, XNLI_ROWS + "Ein\tSatz.\tNoch einer.\tneutral\n",
     r"test-de.tsv, line 3: 4 tab-separated fields where 3 \(premise<TAB>hypothesis<TAB>label\)"),
    ("pawsx", "dev", "de", PAWSX_FILE, "Satz eins.\tSatz zwei.\t1\nSatz drei.\tSatz vier.\t2\n",
     r"dev-de.tsv, line 2: unknown pawsx label '2'; expected one of 0, 1"),
    ("pawsx", "dev", "de", PAWSX_FILE, "Satz eins.\tSatz zwei.\tyes\n",
     r"dev-de.tsv, line 1: unknown pawsx label 'yes'; expected one of 0, 1 \(pawsx files have no header line"),
    ("xnli", "train", "en", "english_nli/mnli_dev_matched.jsonl", NLI_ROW + '{"premise": "x", \n',
     r"mnli_dev_matched.jsonl, line 2: not a JSON object"),
    ("xnli", "train", "en", "english_nli/mnli_dev_matched.jsonl", NLI_ROW + '{"premise": "x", "label": "neutral"}\n',
     r"mnli_dev_matched.jsonl, line 2: no text for hypothesis"),
    ("xnli", "train", "en", "english_nli/mnli_dev_matched.jsonl", NLI_ROW + NLI_ROW.replace("entailment", "Entail"),
     r"mnli_dev_matched.jsonl, line 2: unknown xnli label 'Entail'"),
    ("xnli", "train", "en", "english_nli/mnli_dev_matched.jsonl", b"\xff\xfe" + NLI_ROW.encode("utf-16-le"),
     r"mnli_dev_matched.jsonl, line 1: not UTF-8 text \(byte 0xff\)"),
])
def test_malformed_task_files_name_file_line_and_fix(tmp_path, task, split, lang, name, content, error):
    files = {"english_nli/snli_dev.jsonl": NLI_ROW, "english_nli/mnli_dev_matched.jsonl": NLI_ROW, name: content}
    folder = _write_task_folder(tmp_path, files)
    with pytest.raises(KDCompressError, match=error) as info:
        get_task(task).load(split, lang, data_dir=folder)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert str(tmp_path / name) in message


@pytest.mark.parametrize("task,split,lang,name,content,rows", [
    ("sib200", "train", "de", SIB_FILE, SIB_HEADER + SIB_ROWS, 2),  # the first data row is kept
    ("sib200", "train", "de", SIB_FILE, "\ufeff" + (SIB_HEADER + SIB_ROWS).replace("\n", "\r\n") + "\r\n\r\n", 2),
    # SIB-200's files are CSV-quoted (written by pandas): a text with quotes is wrapped, inner quotes doubled.
    ("sib200", "train", "de", SIB_FILE, SIB_HEADER + '3\ttravel\t"""Quoted"" words \'stay\'."\n', 1),
    ("xnli", "test", "de", XNLI_FILE, XNLI_ROWS, 2),
    ("pawsx", "dev", "de", PAWSX_FILE, "Satz eins.\tSatz zwei.\t1\nSatz drei.\tSatz vier.\t0\n", 2),
    ("xnli", "train", "en", "english_nli/snli_dev.jsonl", NLI_ROW + NLI_ROW.replace("entailment", "-") + "\n", 2),
])
def test_well_formed_task_files_keep_every_row(tmp_path, task, split, lang, name, content, rows):
    files = {"english_nli/snli_dev.jsonl": NLI_ROW, "english_nli/mnli_dev_matched.jsonl": NLI_ROW, name: content}
    examples = get_task(task).load(split, lang, data_dir=_write_task_folder(tmp_path, files))
    assert len(examples) == rows
    if name == SIB_FILE:
        assert examples[0].text in ("A trip to the sea.", '"Quoted" words \'stay\'.')
        assert examples[0].label == get_task("sib200").labels.index("travel")
