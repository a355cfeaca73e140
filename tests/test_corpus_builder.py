"""The corpus builder on a tiny folder laid out like shared/data, and once on the real one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdcompress.data.corpus import load_corpus
from kdcompress.data.corpus_builder import CorpusConfig, build_corpus, sentence_key
from kdcompress.data.tasks import get_task
from kdcompress.data.ud_reader import conllu_sentences, join_words, udpos_sentences
from kdcompress.errors import KDCompressError

# Test-split text planted in the tiny folder; none of it may reach the output.
SIB_EN_TEST = "The cat sat on the warm mat all afternoon."
SIB_DE_TEST_QUOTED = 'Er sagte: "Das Spiel ist aus."'  # written CSV-quoted, as pandas wrote SIB-200
XNLI_DE_TEST = "Der Zug nach Berlin hatte heute Verspätung."
PAWSX_EN_TEST = "The river flows through the old valley ."
UD_DE_TEST_REBUILT = "Am Abend gingen wir nach Hause."  # test sentence without `# text`: rebuilt from tokens
SW_TEST = "Habari za asubuhi, rafiki yangu mpendwa."
TEST_TEXTS = [SIB_EN_TEST, SIB_DE_TEST_QUOTED, XNLI_DE_TEST, PAWSX_EN_TEST, UD_DE_TEST_REBUILT, SW_TEST]


def _tsv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")


def _sib(path: Path, texts: list[str]) -> None:
    quoted = ['"' + t.replace('"', '""') + '"' if '"' in t else t for t in texts]
    _tsv(path, [["index_id", "category", "text"]] + [[str(i), "travel", t] for i, t in enumerate(quoted)])


def _conllu(path: Path, sentences: list[tuple[str | None, list[str]]]) -> None:
    blocks = []
    for n, (text, rows) in enumerate(sentences):
        head = [f"# sent_id = s{n}"] + ([f"# text = {text}"] if text is not None else [])
        blocks.append("\n".join(head + rows) + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(blocks) + "\n", encoding="utf-8")


def _token(ident: str, form: str, misc: str = "_") -> str:
    return "\t".join([ident, form, form.lower(), "X", "_", "_", "0", "dep", "_", misc])


def make_folder(root: Path) -> Path:
    """A miniature shared/data: en, de, sw with text; yo with a test split only."""
    en_train = [f"English training sentence number {i}." for i in range(6)]
    en_train.append(SIB_EN_TEST)  # a train sentence identical to a test sentence: must be dropped
    en_train.append(PAWSX_EN_TEST.replace(" .", "."))  # the same as PAWS-X test text up to whitespace
    _sib(root / "sib200/eng_Latn/train.tsv", en_train)
    _sib(root / "sib200/eng_Latn/dev.tsv", ["An English dev sentence for the corpus.",
                                             "English training sentence number 0."])  # duplicate of train
    _sib(root / "sib200/eng_Latn/test.tsv", [SIB_EN_TEST, "Only in the English test split, never output."])
    _sib(root / "sib200/deu_Latn/train.tsv", [f"Ein deutscher Trainingssatz Nummer {i}." for i in range(4)]
         + [SIB_DE_TEST_QUOTED, "Er sagte: \"Das bleibt im Korpus.\""])
    _sib(root / "sib200/deu_Latn/dev.tsv", ["Ein deutscher Satz aus dem Dev-Split."])
    _sib(root / "sib200/deu_Latn/test.tsv", [SIB_DE_TEST_QUOTED, "Nur im deutschen Test, nie in der Ausgabe."])
    _sib(root / "sib200/swh_Latn/train.tsv", ["Sentensi ya kwanza ya Kiswahili hapa.", "Kifupi."])  # too short
    _sib(root / "sib200/swh_Latn/test.tsv", [SW_TEST])
    _sib(root / "sib200/yor_Latn/test.tsv", ["Gbolohun idanwo nikan ni eyi."])

    _tsv(root / "xnli/dev-de.tsv", [["Ein deutscher   Trainingssatz Nummer 0.", "Eine Hypothese steht hier.",
                                      "neutral"],
                                     [XNLI_DE_TEST, "Eine zweite Hypothese steht hier.", "entailment"]])
    _tsv(root / "xnli/test-de.tsv", [[XNLI_DE_TEST, "Die Hypothese des Tests bleibt geheim.", "neutral"]])
    (root / "english_nli").mkdir()
    (root / "english_nli/snli_dev.jsonl").write_text(
        json.dumps({"premise": "A man plays guitar on a busy street.", "hypothesis": "A man makes music.",
                    "label": "entailment"}) + "\n", encoding="utf-8")
    _tsv(root / "pawsx/dev-de.tsv", [["Ein Satz aus PAWS-X auf Deutsch .", "Ein anderer Satz aus PAWS-X .", "1"]])
    _tsv(root / "pawsx/test-de.tsv", [["Ein Testsatz aus PAWS-X bleibt draußen .", "Noch ein Testsatz hier .", "0"]])
    _tsv(root / "pawsx/test_unlabeled/test-en.tsv", [[PAWSX_EN_TEST, "A second unlabeled test sentence ."]])

    _conllu(root / "ud/UD_German-GSD/de_gsd-ud-dev.conllu", [
        ("Ein deutscher Trainingssatz Nummer 1.", [_token("1", "Ein")]),  # duplicate of SIB train
        ("Die Treebank hat auch eigene Sätze.", [_token("1", "Die")]),
        (UD_DE_TEST_REBUILT, [_token("1", "Am")]),  # in test (rebuilt there): contaminated
    ])
    _conllu(root / "ud/UD_German-GSD/de_gsd-ud-test.conllu", [(None, [
        _token("1-2", "Am"), _token("1", "An"), _token("2", "dem"), _token("3", "Abend"), _token("4", "gingen"),
        _token("5", "wir"), _token("6", "nach"), _token("7", "Hause", "SpaceAfter=No"), _token("8", "."),
    ])])
    _tsv(root / "udpos_xtreme/dev-de.tsv", [["Nur", "ADV"], ["in", "ADP"], ["udpos", "NOUN"], ["zu", "ADP"],
                                            ["lesen", "VERB"], [".", "PUNCT"]])
    (root / "udpos_xtreme/dev-sw.tsv").write_text(
        "Habari\tINTJ\nza\tADP\nasubuhi\tNOUN\n,\tPUNCT\nrafiki\tNOUN\nyangu\tPRON\nmpendwa\tADJ\n.\tPUNCT\n\n"
        "Watoto\tNOUN\nwanacheza\tVERB\nmpira\tNOUN\nuwanjani\tNOUN\n.\tPUNCT\n\n", encoding="utf-8")
    return root


@pytest.fixture()
def folder(tmp_path) -> Path:
    return make_folder(tmp_path / "data")


def _lines(out: Path, lang: str) -> list[str]:
    return (out / f"{lang}.txt").read_text(encoding="utf-8").splitlines()


def _all_lines(out: Path) -> list[str]:
    return [line for path in sorted(out.glob("*.txt")) for line in path.read_text(encoding="utf-8").splitlines()]


def _build(folder: Path, out: Path, **kw):
    kw.setdefault("langs", "en,de,sw")
    return build_corpus(data_dir=str(folder), out=str(out), progress=False, **kw)


def test_no_test_split_text_reaches_the_output(folder, tmp_path):
    out = tmp_path / "corpus"
    result = _build(folder, out, max_per_lang=0)
    keys = {sentence_key(line) for line in _all_lines(out)}
    planted = TEST_TEXTS + ["Only in the English test split, never output.",
                            "Nur im deutschen Test, nie in der Ausgabe.",
                            "Die Hypothese des Tests bleibt geheim.", "A second unlabeled test sentence .",
                            "Ein Testsatz aus PAWS-X bleibt draußen .", "Gbolohun idanwo nikan ni eyi."]
    assert not keys & {sentence_key(t) for t in planted}
    langs = result.manifest["languages"]
    assert langs["en"]["sources"]["sib200/train"]["contaminated"] == 2  # verbatim, and up to whitespace
    assert langs["de"]["sources"]["sib200/train"]["contaminated"] == 1  # the CSV-quoted SIB test text
    assert langs["de"]["sources"]["xnli/dev"]["contaminated"] == 1
    assert langs["de"]["sources"]["ud/UD_German-GSD/dev"]["contaminated"] == 1  # rebuilt test sentence
    assert langs["sw"]["sources"]["udpos_xtreme/dev"]["contaminated"] == 1  # tokenised copy of a test text
    tested = {t["path"] for t in result.manifest["decontamination"]["test_files"]}
    assert tested == {"sib200/eng_Latn/test.tsv", "sib200/deu_Latn/test.tsv", "sib200/swh_Latn/test.tsv",
                      "sib200/yor_Latn/test.tsv", "xnli/test-de.tsv", "pawsx/test-de.tsv",
                      "pawsx/test_unlabeled/test-en.tsv", "ud/UD_German-GSD/de_gsd-ud-test.conllu"}
    assert 'Er sagte: "Das bleibt im Korpus."' in _lines(out, "de")  # CSV quoting undone
    line = result.summary()  # what the command prints: the counts the manifest holds, and where it is
    totals = result.manifest["totals"]
    assert f"corpus: {totals['kept']:,} sentences in 3 languages" in line
    assert f"{totals['contaminated']:,} sharing text with a test split" in line and "manifest.json" in line


def test_deduplicates_within_a_language_up_to_whitespace(folder, tmp_path):
    out = tmp_path / "corpus"
    result = _build(folder, out, max_per_lang=0)
    de = _lines(out, "de")
    assert len(de) == len(set(de))
    assert de.count("Ein deutscher Trainingssatz Nummer 0.") == 1  # also in xnli dev with extra spaces
    sources = result.manifest["languages"]["de"]["sources"]
    assert sources["xnli/dev"]["duplicates"] == 1 and sources["ud/UD_German-GSD/dev"]["duplicates"] == 1
    assert result.manifest["languages"]["en"]["sources"]["sib200/dev"]["duplicates"] == 1
    assert _lines(out, "en").count("English training sentence number 0.") == 1


def test_manifest_counts_add_up_and_match_the_files(folder, tmp_path):
    out = tmp_path / "corpus"
    result = _build(folder, out, max_per_lang=0)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest == json.loads(json.dumps(result.manifest))
    expected = {"en": 9, "de": 11, "sw": 2}  # see make_folder: what survives each rule
    assert result.counts == expected
    for lang, info in manifest["languages"].items():
        assert info["kept"] == len(_lines(out, lang)) == expected[lang]
        for counts in info["sources"].values():
            parts = ("too_short", "contaminated", "duplicates", "over_cap", "kept")
            assert counts["read"] == sum(counts[p] for p in parts)
    en = manifest["languages"]["en"]["sources"]
    assert en["sib200/train"] == {"read": 8, "too_short": 0, "contaminated": 2, "duplicates": 0, "over_cap": 0,
                                  "kept": 6}
    assert en["english_nli/snli_dev"]["kept"] == 2
    assert manifest["languages"]["sw"]["sources"]["sib200/train"]["too_short"] == 1
    assert manifest["totals"]["kept"] == sum(expected.values())
    assert manifest["sources"]["sib200/train"]["read"] == 8 + 6 + 2


def test_udpos_text_is_a_fallback_for_languages_without_a_treebank(folder, tmp_path):
    result = _build(folder, tmp_path / "a", max_per_lang=0)
    assert "udpos_xtreme/dev" not in result.manifest["languages"]["de"]["sources"]  # de has UD German-GSD
    assert "Watoto wanacheza mpira uwanjani." in _lines(tmp_path / "a", "sw")  # detokenised
    always = _build(folder, tmp_path / "b", max_per_lang=0, udpos="always")
    assert "Nur in udpos zu lesen." in _lines(tmp_path / "b", "de")
    never = _build(folder, tmp_path / "c", max_per_lang=0, udpos="never", langs="de")
    assert all(not name.startswith("udpos") for name in never.manifest["sources"])
    assert always.counts["de"] == result.counts["de"] + 1


def test_per_language_cap_is_a_seeded_balanced_choice(folder, tmp_path):
    full = _build(folder, tmp_path / "full", max_per_lang=0)
    capped = _build(folder, tmp_path / "cap", max_per_lang=3, seed=1)
    assert capped.counts == {"en": 3, "de": 3, "sw": 2}
    for lang in ("en", "de"):
        lines = _lines(tmp_path / "cap", lang)
        assert set(lines) <= set(_lines(tmp_path / "full", lang))
        info = capped.manifest["languages"][lang]
        assert info["over_cap"] == full.counts[lang] - 3 and info["quota"] == 3
    again = _build(folder, tmp_path / "again", max_per_lang=3, seed=1)
    assert all(_lines(tmp_path / "again", lang) == _lines(tmp_path / "cap", lang) for lang in capped.counts)
    other = [_build(folder, tmp_path / f"seed{s}", max_per_lang=3, seed=s) for s in range(2, 6)]
    assert any(_lines(tmp_path / f"seed{s}", "en") != _lines(tmp_path / "cap", "en") for s in range(2, 6))
    assert all(o.counts == capped.counts for o in other)


def test_total_cap_is_shared_equally_between_languages(folder, tmp_path):
    result = _build(folder, tmp_path / "total", max_per_lang=0, max_total=12)
    assert result.counts == {"en": 5, "de": 5, "sw": 2}  # sw has 2: its unused share goes to en and de


def test_exclude_leaves_a_source_family_out(folder, tmp_path):
    result = _build(folder, tmp_path / "generic", max_per_lang=0, langs="en,de", exclude="sib200")
    assert not [name for name in result.manifest["sources"] if name.startswith("sib200")]
    assert not {sentence_key(line) for line in _all_lines(tmp_path / "generic")} & {
        sentence_key("An English dev sentence for the corpus.")}


def test_a_language_without_text_is_one_error_and_writes_nothing(folder, tmp_path):
    out = tmp_path / "corpus"
    for langs in ("en,yo", "en,xx"):
        with pytest.raises(KDCompressError, match="no usable text for language") as err:
            _build(folder, out, langs=langs)
        assert "\n" not in str(err.value) and langs.split(",")[1] in str(err.value)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_bad_folders_and_settings_are_one_clear_line(folder, tmp_path):
    with pytest.raises(KDCompressError, match="data folder .* does not exist"):
        _build(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KDCompressError, match="holds no train/dev text"):
        _build(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(KDCompressError, match="--udpos"):
        _build(folder, tmp_path / "out", udpos="sometimes")
    with pytest.raises(KDCompressError, match="--exclude"):
        _build(folder, tmp_path / "out", exclude="wikipedia")
    with pytest.raises(KDCompressError, match="--out"):
        build_corpus(data_dir=str(folder), progress=False)
    _build(folder, tmp_path / "out", langs="en")
    with pytest.raises(KDCompressError, match="already exists"):
        _build(folder, tmp_path / "out", langs="de")
    _build(folder, tmp_path / "out", langs="de", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["de.txt", "manifest.json"]


def test_config_object_and_flores_codes(folder, tmp_path):
    cfg = CorpusConfig(data_dir=str(folder), langs=["deu_Latn"], out=str(tmp_path / "c"), progress=False)
    result = build_corpus(cfg, max_per_lang=2)
    assert result.counts == {"de": 2} and result.files["de"].is_file()


def test_built_folder_loads_as_a_pretraining_corpus(folder, tmp_path):
    result = _build(folder, tmp_path / "corpus", max_per_lang=0)
    everything = load_corpus([str(result.out)], task=get_task("sib200"), langs=["en", "de", "sw"],
                             max_sentences=10**6)
    assert len(everything) == sum(result.counts.values())
    # Only the chosen languages are read, and a budget is shared equally (a short language's rest goes to others).
    assert len(load_corpus([str(result.out)], task=get_task("sib200"), langs=["en"], max_sentences=10**6)) == 9
    balanced = load_corpus([str(result.out)], task=get_task("sib200"), langs=["en", "de", "sw"], max_sentences=9)
    assert len(balanced) == 9 and len(set(balanced) & set((result.out / "sw.txt").read_text().split("\n"))) == 2
    # A language the corpus lacks gets nothing from it (with a note); a corpus with none of them is an error.
    assert len(load_corpus([str(result.out)], task=get_task("sib200"), langs=["en", "fr"], max_sentences=10)) == 9
    with pytest.raises(KDCompressError, match="no text for any of the languages fr"):
        load_corpus([str(result.out)], task=get_task("sib200"), langs=["fr"], max_sentences=10)


def test_ud_readers(tmp_path):
    path = tmp_path / "x.conllu"
    path.write_text("# sent_id = 1\n# text =Xin chào .\n1\tXin\t_\t_\t_\t_\t0\troot\t_\t_\n\n"
                    "# sent_id = 2\n# text_en = not this\n" + _token("1-2", "Beim") + "\n" + _token("1", "Bei") + "\n"
                    + _token("2", "dem") + "\n" + _token("3", "Spiel", "SpaceAfter=No") + "\n" + _token("4", "!")
                    + "\n", encoding="utf-8")
    assert list(conllu_sentences(path)) == ["Xin chào .", "Beim Spiel!"]
    assert join_words(["Er", "sagte", "(", "leise", ")", ":", "Ja", "."], "de") == "Er sagte (leise): Ja."
    assert join_words(["我", "爱", "你", "。"], "zh") == "我爱你。"
    (tmp_path / "u.tsv").write_text("a\tX\nb\tX\n\n\nc\tX\n", encoding="utf-8")
    assert list(udpos_sentences(tmp_path / "u.tsv", "en")) == ["a b", "c"]


def _test_keys(data_dir: Path, langs: list[str]) -> set[str]:
    keys = set()
    for task_name in ("sib200", "xnli"):
        task = get_task(task_name)
        for lang in langs:
            if lang in task.languages:
                for ex in task.load("test", lang, data_dir=data_dir):
                    keys.update(sentence_key(t) for t in (ex.text, ex.text_pair) if t)
                    if ex.text.startswith('"'):  # tasks.py reads SIB-200 raw: its quoted texts, unquoted
                        keys.add(sentence_key(ex.text[1:-1].replace('""', '"')))
    return keys


def test_real_data_folder(data_dir, tmp_path):
    out = tmp_path / "real"
    result = build_corpus(data_dir=str(data_dir), langs="de,sw,yo", out=str(out), max_per_lang=50, progress=False)
    assert result.counts == {"de": 50, "sw": 50, "yo": 50}
    de = result.manifest["languages"]["de"]
    assert {"sib200/train", "xnli/dev", "pawsx/dev", "ud/UD_German-GSD/dev"} <= set(de["sources"])
    assert de["unique"] > 5000 and result.manifest["languages"]["yo"]["unique"] == 800
    assert not {sentence_key(line) for line in _all_lines(out)} & _test_keys(data_dir, ["de", "sw", "yo"])
    assert result.manifest["decontamination"]["test_keys"] > 100000


def test_overwrite_never_deletes_the_data_folder(folder):
    with pytest.raises(KDCompressError):
        build_corpus(data_dir=str(folder), out=str(folder), overwrite=True, progress=False)
    assert (folder / "sib200/eng_Latn/train.tsv").is_file()
