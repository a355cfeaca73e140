"""`kdcompress export-onnx`: export a sequence classifier to ONNX, optionally fuse and quantize, and check it.

The stages follow Optimum's split - export, then optimization (optimize.py), then quantization
(quantize.py) - and every result is checked against the PyTorch model before it is kept:
fp32 logits within 1e-4, argmax agreement on real sentences in every language asked for,
sizes and operator counts, all written to OUT/export.json. OUT holds what both plain
onnxruntime users and Optimum's `ORTModelForSequenceClassification.from_pretrained(OUT)`
expect: `model.onnx`, `config.json` (with the label names) and the tokenizer files.

Exporter choice: torch.onnx's TorchScript exporter (`dynamo=False`). On transformers 5 it is
exact (max logit difference ~1e-8, like the dynamo exporter) and 15x faster to run, and, with
eager attention, its graph is the one ONNX Runtime's BERT fusions were written for: all four
fusions (Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu) apply, while on
the dynamo exporter's graph Attention and EmbedLayerNormalization do not. The dynamo exporter
is the fallback should the TorchScript one ever fail.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import inspect
import json
import os
import shutil
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from kdcompress.bench.machine import library_versions
from kdcompress.deploy import quantize as q
from kdcompress.errors import KDCompressError
from kdcompress.io import atomic_output_dir, refuse_existing, write_json_atomic

DEFAULT_OPSET = 17  # first opset with a LayerNormalization op; ORT >= 1.14 and Optimum's fusions handle it
FP32_TOLERANCE = 1e-4
MODEL_FILE = "model.onnx"
REPORT_FILE = "export.json"
SUPPORTED_MODEL_TYPES = ("bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra")
# Languages checked when none are given: scripts and families where int8 is known to differ.
DEFAULT_CHECK_LANGS = ("en", "de", "es", "ar", "hi", "ru", "sw", "th", "zh", "ur")
QUANTIZE_MODES = ("none", "dynamic", "static")
CHECK_MAX_LENGTH = 256
_GRAPH_INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")  # Optimum's order
_SAMPLE_TEXTS = ("kdcompress exports this model.",
                 "Ein zweiter, etwas längerer Satz, damit die Maske auch Nullen enthält.")


# --- loading the model directory --------------------------------------------------------------

def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    detail = text[0] if text else ""
    return f"{type(exc).__name__}: {detail[:160]}" if detail else type(exc).__name__


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide library chatter (tracer warnings, transformers notices) behind our own progress."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings(), q.quiet_quantizer():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()


@dataclass
class SourceModel:
    model_dir: Path
    config: Any
    model: Any
    tokenizer: Any
    input_names: list[str]
    distill_meta: dict = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return [str(self.config.id2label[i]) for i in range(self.config.num_labels)]

    @property
    def max_length(self) -> int:
        limit = int(getattr(self.config, "max_position_embeddings", 512) or 512)
        if self.config.model_type in ("roberta", "xlm-roberta", "camembert"):
            limit -= int(self.config.pad_token_id or 1) + 1  # positions start after the padding index
        tokenizer_limit = int(getattr(self.tokenizer, "model_max_length", limit) or limit)
        return max(8, min(limit, tokenizer_limit if tokenizer_limit < 100_000 else limit, 512))

    def encode(self, examples: Sequence[Any], *, max_length: int | None = None) -> dict[str, np.ndarray]:
        texts = [ex.text for ex in examples]
        pairs = [ex.text_pair for ex in examples]
        kwargs = dict(padding=True, truncation=True, return_tensors="np",
                      max_length=min(max_length or self.max_length, self.max_length))
        if any(p is not None for p in pairs):
            return dict(self.tokenizer(texts, [p or "" for p in pairs], **kwargs))
        return dict(self.tokenizer(texts, **kwargs))


def load_model_dir(model_dir: str | os.PathLike) -> SourceModel:
    """Load a Hugging Face-layout sequence classifier, or raise one clear line saying why not."""
    import torch  # noqa: F401  (imported before transformers for a clean error if torch is broken)
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = Path(model_dir)
    if not path.is_dir():
        raise KDCompressError(f"model directory {path} does not exist; pass a directory made by "
                              "`kdcompress distill` or `save_pretrained`")
    if not (path / "config.json").is_file():
        raise KDCompressError(f"{path} is not a model directory (no config.json); pass a directory made by "
                              "`kdcompress distill` or `save_pretrained`")
    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
        with _quiet():
            config = AutoConfig.from_pretrained(path)
    except Exception as exc:  # corrupt JSON, unknown model_type, ...
        raise KDCompressError(f"{path}/config.json cannot be read ({_one_line(exc)}); re-save the model "
                              "or restore config.json") from None
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise KDCompressError(f"unsupported architecture {config.model_type!r} in {path}; export-onnx handles "
                              f"BERT-family sequence classifiers ({', '.join(SUPPORTED_MODEL_TYPES)})")
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise KDCompressError(f"{path} holds a {architectures[0]}, not a sequence classifier; fine-tune or "
                              "distill it into a classifier (kdcompress distill) before exporting")
    weight_files = [p for p in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
                    if (path / p).is_file()]
    if not weight_files:
        raise KDCompressError(f"{path} has no model weights (model.safetensors); re-save the model with "
                              "save_pretrained")
    try:
        with _quiet():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, attn_implementation="eager", output_loading_info=True)
    except Exception as exc:  # truncated or corrupt weights, shape mismatches
        raise KDCompressError(f"the weights in {path}/{weight_files[0]} are corrupt or truncated "
                              f"({_one_line(exc)}); re-copy or re-save the model") from None
    missing = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
    if missing:
        raise KDCompressError(f"{path}/{weight_files[0]} lacks {len(missing)} weights (e.g. {missing[0]}); "
                              "it is not a complete sequence classifier - re-save it")
    model.eval()
    try:
        with _quiet():
            tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise KDCompressError(f"no usable tokenizer in {path} ({_one_line(exc)}); save the tokenizer beside "
                              "the model (tokenizer.save_pretrained)") from None
    distill_meta = {}
    if (path / "distill.json").is_file():
        with contextlib.suppress(json.JSONDecodeError, OSError):
            distill_meta = json.loads((path / "distill.json").read_text(encoding="utf-8"))
    return SourceModel(path, config, model, tokenizer, graph_input_names(model, tokenizer), distill_meta)


def graph_input_names(model: Any, tokenizer: Any) -> list[str]:
    """The inputs the tokenizer really produces and the model really uses, in Optimum's order.

    `token_type_ids` is kept only when the tokenizer emits it, the forward pass accepts it and
    the model has more than one segment embedding: BERT models with an XLM-R tokenizer
    (multilingual-e5, Multilingual-MiniLM) get input_ids and attention_mask only.
    """
    produced = set(tokenizer(*_SAMPLE_TEXTS).keys())
    accepted = set(inspect.signature(model.forward).parameters)
    names = [n for n in _GRAPH_INPUT_ORDER if n in produced and n in accepted]
    if "token_type_ids" in names and int(getattr(model.config, "type_vocab_size", 2) or 0) < 2:
        names.remove("token_type_ids")
    if "input_ids" not in names:
        raise KDCompressError("the tokenizer produces no input_ids; save a text tokenizer beside the model")
    return names


# --- export ----------------------------------------------------------------------------------

def logits_module(model: Any, input_names: Sequence[str]):
    """A torch module taking the graph inputs positionally and returning the logits only."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(input_names, inputs, strict=True)), return_dict=True).logits

    # Eval mode on the wrapper too: the exporter switches the top module's mode, and a wrapper
    # left in training mode bakes dropout into the graph.
    return LogitsOnly().eval()


def _trace_example(source: SourceModel) -> tuple:
    import torch

    # Two rows of different lengths so the traced mask has zeros and nothing batch-1 is baked in.
    encoded = source.tokenizer(list(_SAMPLE_TEXTS), padding=True, return_tensors="pt")
    return tuple(encoded[name].to(torch.long) for name in source.input_names)


def export_fp32(source: SourceModel, path: Path, *, opset: int) -> str:
    """Export with dynamic batch and sequence axes; return which exporter produced the graph."""
    import torch

    wrapper = logits_module(source.model, source.input_names)
    example = _trace_example(source)
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in source.input_names}
    axes["logits"] = {0: "batch_size"}
    with _quiet(), torch.no_grad():
        try:
            torch.onnx.export(wrapper, example, str(path), dynamo=False, input_names=source.input_names,
                              output_names=["logits"], dynamic_axes=axes, opset_version=opset,
                              do_constant_folding=True)
            return "torch.onnx.export (TorchScript, dynamo=False)"
        except Exception as ts_exc:  # noqa: BLE001 - any tracer failure: try the other exporter
            path.unlink(missing_ok=True)
            try:
                batch, seq = torch.export.Dim("batch_size"), torch.export.Dim("sequence_length")
                program = torch.onnx.export(wrapper, example, dynamo=True, input_names=source.input_names,
                                            output_names=["logits"], opset_version=max(opset, 18),
                                            dynamic_shapes=tuple({0: batch, 1: seq} for _ in example))
                program.save(str(path), external_data=False)
                return f"torch.onnx.export (dynamo; TorchScript failed: {_one_line(ts_exc)})"
            except Exception as exc:  # noqa: BLE001
                raise KDCompressError(f"torch.onnx could not export {source.model_dir} ({_one_line(exc)}); "
                                      "check that the model runs in PyTorch") from None


# --- checks ----------------------------------------------------------------------------------

@dataclass
class CheckSet:
    """Real sentences per language (or synthetic ids when no data is available)."""

    source: str
    batches: dict[str, list[dict[str, np.ndarray]]]
    labels: dict[str, np.ndarray] | None = None

    @property
    def languages(self) -> list[str]:
        return list(self.batches)


def _batches(source: SourceModel, examples: Sequence[Any], batch_size: int) -> list[dict[str, np.ndarray]]:
    # Similar lengths together: less padding, and each batch has its own sequence length.
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].text) + len(examples[i].text_pair or ""))
    out = []
    for start in range(0, len(order), batch_size):
        chunk = [examples[i] for i in order[start:start + batch_size]]
        encoded = source.encode(chunk, max_length=CHECK_MAX_LENGTH)
        encoded["_order"] = np.asarray(order[start:start + batch_size])
        out.append(encoded)
    return out


def _synthetic_batches(source: SourceModel, n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Random token ids in three batch/length shapes, every other row right-padded."""
    rng = np.random.default_rng(seed)
    vocab = int(getattr(source.config, "vocab_size", 1000))
    low = min(1000, vocab // 2)
    special = list(getattr(source.tokenizer, "all_special_ids", []) or [])
    out, offset = [], 0
    for batch, length in ((min(n, 8), 24), (min(n, 8), 61), (max(1, n - 16), 9)):
        ids = rng.integers(low, vocab, size=(batch, length))
        ids[np.isin(ids, special)] = low
        mask = np.ones_like(ids)
        mask[1::2, length // 2:] = 0
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids),
                    "_order": np.arange(offset, offset + batch)})
        offset += batch
    return out


def _torch_logits(source: SourceModel, batches: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    import torch

    outs = []
    threads = torch.get_num_threads()
    if sum(p.numel() for p in source.model.parameters()) < 30_000_000:
        # Small models: handing each tiny op to a second thread costs more than the maths, badly
        # so on a busy machine (15 ms per op measured with 2 threads vs well under 1 ms with 1).
        torch.set_num_threads(1)
    with torch.no_grad():
        for encoded in batches:
            inputs = {n: torch.from_numpy(np.asarray(encoded[n], dtype=np.int64)) for n in source.input_names}
            outs.append(source.model(**inputs).logits.float().numpy())
    torch.set_num_threads(threads)
    return _restore_order(batches, outs)


def _restore_order(batches: Sequence[dict[str, np.ndarray]], outs: Sequence[np.ndarray]) -> np.ndarray:
    order = np.concatenate([b["_order"] for b in batches])
    stacked = np.concatenate(outs)
    if sorted(order.tolist()) != list(range(len(stacked))):
        raise AssertionError("check batches must cover each example exactly once")
    result = np.empty_like(stacked)
    result[order] = stacked
    return result


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_logits(session: Any, batches: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    from kdcompress.deploy.onnx_feed import onnx_feed

    outs = [session.run(["logits"], onnx_feed(session, {k: v for k, v in b.items() if k != "_order"}))[0]
            for b in batches]
    return _restore_order(batches, outs)


def compare_logits(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> dict:
    per_lang = {}
    for lang, ref in reference.items():
        cand = candidate[lang]
        per_lang[lang] = {"max_abs_logit_diff": float(np.abs(ref - cand).max()),
                          "argmax_agreement": float((ref.argmax(-1) == cand.argmax(-1)).mean()),
                          "n": int(len(ref))}
    return {"max_abs_logit_diff": max(v["max_abs_logit_diff"] for v in per_lang.values()),
            "min_argmax_agreement": min(v["argmax_agreement"] for v in per_lang.values()),
            "per_language": per_lang}


def _accuracy(session: Any, check: CheckSet, label_map: np.ndarray) -> dict[str, float]:
    result = {}
    for lang, batches in check.batches.items():
        predictions = label_map[_onnx_logits(session, batches).argmax(-1)]
        result[lang] = round(float((predictions == check.labels[lang]).mean()), 6)
    return result


def _label_map(task: Any, labels: Sequence[str]) -> np.ndarray | None:
    """Model class index -> task label index, when the model was trained on that task's labels."""
    if sorted(labels) == sorted(task.labels):
        return np.asarray([task.labels.index(label) for label in labels])
    if len(labels) == task.num_labels and all(label.upper().startswith("LABEL_") for label in labels):
        return np.arange(task.num_labels)  # unnamed labels: assume the task's order
    return None


# --- data selection --------------------------------------------------------------------------

def _meta_langs(meta: dict) -> list[str]:
    langs: list[str] = []
    for key in ("source_lang", "langs", "target_langs", "eval_langs", "languages"):
        value = meta.get(key)
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, (list, tuple)):
            langs += [str(v).strip() for v in value if str(v).strip()]
    return list(dict.fromkeys(langs))


def _resolve_task(task: str | None, source: SourceModel):
    from kdcompress.data.tasks import TASKS, get_task

    if task:
        return get_task(task), True
    meta_task = source.distill_meta.get("task")
    if isinstance(meta_task, str) and meta_task in TASKS:
        return TASKS[meta_task], True
    for candidate in TASKS.values():
        if sorted(source.labels) == sorted(candidate.labels):
            return candidate, True
    return TASKS["sib200"], False  # only a source of real multilingual sentences; labels unused


def _resolve_langs(task: Any, langs: str | Sequence[str] | None, source: SourceModel) -> list[str]:
    """--langs, else the languages distill.json names, else a spread of scripts the task has."""
    from kdcompress.data.languages import FLORES_TO_ISO, parse_lang_list
    from kdcompress.data.tasks import normalise_lang

    if isinstance(langs, str) and langs.strip().lower() == "all":
        return list(task.languages)
    chosen = parse_lang_list(langs)
    if not chosen:
        chosen = [l for l in _meta_langs(source.distill_meta) if FLORES_TO_ISO.get(l, l) in task.languages]
    if not chosen:
        chosen = [l for l in DEFAULT_CHECK_LANGS if l in task.languages]
    return list(dict.fromkeys(normalise_lang(task, lang) for lang in chosen))


def _load_examples(task: Any, split: str, langs: Sequence[str], data_dir: Any, limit: int) -> dict[str, list]:
    return {lang: task.load(split, lang, data_dir=data_dir, limit=limit) for lang in langs}


def _calibration_examples(spec: str | os.PathLike | None, task: Any, has_task: bool, langs: Sequence[str],
                          data_dir: Any, limit: int) -> tuple[list, str]:
    """`--calibration-data`: a text file (one example a line, TAB before a pair's second text),
    TASK:LANG[:SPLIT], or nothing for the task's training split in the source language."""
    from kdcompress.data.tasks import TASKS, Example, get_task, normalise_lang

    if spec is None:
        if not has_task:
            raise KDCompressError("--quantize static needs calibration examples; pass --calibration-data "
                                  "(a text file, or TASK:LANG such as sib200:en) or --task")
        lang = "en" if "en" in task.languages else langs[0]
        return task.load("train", lang, data_dir=data_dir, limit=limit), f"{task.name} train {lang}"
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        examples = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                first, _, second = line.partition("\t")
                examples.append(Example(first, second or None, -1))
        if not examples:
            raise KDCompressError(f"calibration file {path} has no text; write one example per line")
        return examples[:limit], f"file {path}"
    parts = text.split(":")
    if len(parts) in (2, 3) and parts[0] in TASKS:
        cal_task = get_task(parts[0])
        lang = normalise_lang(cal_task, parts[1])
        split = parts[2] if len(parts) == 3 else "train"
        return cal_task.load(split, lang, data_dir=data_dir, limit=limit), f"{cal_task.name} {split} {lang}"
    raise KDCompressError(f"--calibration-data {text!r} is neither a file nor TASK:LANG[:SPLIT] "
                          f"(tasks: {', '.join(TASKS)}); e.g. sib200:en")


# --- reporting -------------------------------------------------------------------------------

def _op_counts(path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items(), key=lambda kv: -kv[1]))


def _graph_io(path: Path) -> tuple[list[dict], list[str], int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inputs = [{"name": i.name, "shape": [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]}
              for i in model.graph.input]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return inputs, [o.name for o in model.graph.output], opset


class _Progress:
    """Stage-by-stage progress on stderr (rich), silent when `enabled` is False."""

    def __init__(self, enabled: bool):
        from rich.console import Console

        self.console = Console(stderr=True, quiet=not enabled)
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, key: str, text: str) -> Iterator[None]:
        start = time.perf_counter()
        with self.console.status(f"[bold]{text}[/]…", spinner="dots"):
            yield
        self.timings[key] = round(time.perf_counter() - start, 2)
        self.console.print(f"[green]✓[/] {text} [dim]({self.timings[key]:.1f} s)[/]", highlight=False)

    def note(self, text: str) -> None:
        self.console.print(f"  {text}", highlight=False)

    def warn(self, text: str) -> None:
        self.console.print(f"[bold yellow]warning:[/] {text}", highlight=False, soft_wrap=True)


def _print_summary(progress: _Progress, report: dict) -> None:
    from rich.table import Table

    check = report["check"]
    final = check["final"]
    table = Table(title=f"export check: {check['source']}", title_justify="left")
    table.add_column("language")
    table.add_column("n", justify="right")
    table.add_column("max |Δlogit|", justify="right")
    table.add_column("argmax agreement", justify="right")
    accuracy = report.get("accuracy") or {}
    if accuracy:
        table.add_column("dev acc fp32", justify="right")
        table.add_column(f"dev acc {report['precision']}", justify="right")
    for lang, row in final["per_language"].items():
        cells = [lang, str(row["n"]), f"{row['max_abs_logit_diff']:.2e}", f"{row['argmax_agreement']:.1%}"]
        if accuracy:
            cells += [f"{accuracy['fp32_accuracy'].get(lang, float('nan')):.1%}",
                      f"{accuracy['int8_accuracy'].get(lang, float('nan')):.1%}"]
        table.add_row(*cells)
    progress.console.print(table)
    sizes = report["sizes"]
    progress.note(f"{report['files']['model']}: {sizes['model_bytes'] / 1e6:.1f} MB "
                  f"({sizes['model_vs_fp32']:.2f}x the fp32 export), inputs: "
                  f"{', '.join(i['name'] for i in report['onnx']['inputs'])}")


# --- the public entry point ------------------------------------------------------------------

def export_onnx(model_dir: str | os.PathLike, out: str | os.PathLike, *, optimize: bool = False,
                quantize: str | None = "none", calibration_data: str | os.PathLike | None = None,
                accuracy_goal: float | None = None, keep_embeddings_fp32: bool = False,
                task: str | None = None, langs: str | Sequence[str] | None = None,
                data_dir: str | os.PathLike | None = None, opset: int = DEFAULT_OPSET,
                overwrite: bool = False, check_samples: int = 32, eval_samples: int = 200,
                calibration_samples: int = 128, max_trials: int = 10, progress: bool = True) -> Path:
    """Export MODEL_DIR to OUT (model.onnx, config.json, tokenizer, export.json); return OUT.

    quantize: "none" (fp32), "dynamic" (int8 weights, per-run activation ranges) or "static"
    (int8 with activation ranges calibrated on `calibration_data`). `accuracy_goal` (e.g. 0.01)
    makes int8 accuracy-aware: operators fall back to fp32, most sensitive first, until every
    language in `langs` is within the goal of the fp32 model on `task`'s dev split; the best
    model is saved even when no model meets the goal (export.json: accuracy.goal_met).
    """
    quantize = (quantize or "none").lower()
    if quantize not in QUANTIZE_MODES:
        raise KDCompressError(f"unknown --quantize {quantize!r}; choose from {', '.join(QUANTIZE_MODES)}")
    if accuracy_goal is not None and quantize == "none":
        quantize = "dynamic"  # an accuracy goal only means something for int8
    if calibration_data is not None and quantize != "static":
        raise KDCompressError("--calibration-data is for --quantize static; add --quantize static or drop it")
    if accuracy_goal is not None and not 0 <= accuracy_goal < 1:
        raise KDCompressError(f"--accuracy-goal {accuracy_goal} must be an accuracy difference in [0, 1), "
                              "e.g. 0.01 for one point")
    if not 7 <= opset <= 20:
        raise KDCompressError(f"--opset {opset} is outside what torch.onnx and onnxruntime support here (7-20); "
                              f"use the default {DEFAULT_OPSET}")
    for name, value in (("check_samples", check_samples), ("eval_samples", eval_samples),
                        ("calibration_samples", calibration_samples), ("max_trials", max_trials)):
        if value < 1:
            raise KDCompressError(f"{name.replace('_', '-')} must be at least 1, not {value}")
    out = Path(out)
    refuse_existing(out, overwrite=overwrite)
    ui = _Progress(progress)

    with ui.stage("load", f"load {model_dir}"):
        source = load_model_dir(model_dir)
    param_bytes = sum(p.numel() * p.element_size() for p in source.model.parameters())
    if param_bytes > 1.9e9:
        raise KDCompressError(f"{model_dir} has {param_bytes / 1e9:.1f} GB of weights; export-onnx writes "
                              "single-file ONNX models, which are limited to 2 GB")

    # Data: the check needs real sentences; accuracy-aware and static int8 also need labels.
    task_obj, has_task = _resolve_task(task, source)
    explicit_data = bool(task or langs or data_dir)
    needs_labels = accuracy_goal is not None
    label_map = _label_map(task_obj, source.labels) if has_task else None
    if needs_labels and label_map is None:
        raise KDCompressError(f"--accuracy-goal needs the model's labels to match a task's; {model_dir} has "
                              f"{source.labels[:4]}..., pass --task with the task it was trained on")
    check_langs = _resolve_langs(task_obj, langs, source)

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.work-", dir=out.parent) as work_name, \
            atomic_output_dir(out, overwrite=overwrite) as staging:
        work = Path(work_name)
        report: dict[str, Any] = {
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model_dir": str(Path(model_dir).resolve()),
            "model_type": source.config.model_type,
            "architecture": (getattr(source.config, "architectures", None) or ["?"])[0],
            "labels": source.labels,
        }

        with ui.stage("data", f"load check sentences ({len(check_langs)} languages)"):
            try:
                examples = _load_examples(task_obj, "dev", check_langs, data_dir, check_samples)
                check = CheckSet(f"{task_obj.name} dev, first {check_samples} per language",
                                 {l: _batches(source, ex, 8) for l, ex in examples.items()})
            except KDCompressError as exc:
                if explicit_data or needs_labels or quantize == "static":
                    raise
                check = CheckSet(f"synthetic token ids (no sentences: {exc})",
                                 {"synthetic": _synthetic_batches(source, check_samples)})
                ui.warn(f"no real sentences for the check ({exc}); checked on synthetic token ids instead")

        fp32_path = work / "model_fp32.onnx"
        with ui.stage("export", f"export to ONNX (opset {opset})"):
            exporter = export_fp32(source, fp32_path, opset=opset)
        inputs, outputs, actual_opset = _graph_io(fp32_path)
        report["onnx"] = {"file": MODEL_FILE, "exporter": exporter, "opset": actual_opset, "inputs": inputs,
                          "outputs": outputs,
                          "dynamic_axes": {"batch_size": 0, "sequence_length": 1}}

        with ui.stage("reference", "run the PyTorch reference"):
            torch_logits = {lang: _torch_logits(source, b) for lang, b in check.batches.items()}

        def check_against_torch(path: Path) -> dict:
            session = _session(path)
            return compare_logits(torch_logits, {l: _onnx_logits(session, b) for l, b in check.batches.items()})

        with ui.stage("check_fp32", "check the fp32 graph against PyTorch"):
            fp32_check = check_against_torch(fp32_path)
        _require_fp32_parity(fp32_check, "exported fp32 graph")
        current = fp32_path
        report["optimize"] = {"enabled": optimize}
        if optimize:
            fused_path = work / "model_fused.onnx"
            with ui.stage("optimize", "fuse transformer operators (ONNX Runtime)"):
                from kdcompress.deploy.optimize import fuse_transformer_ops

                fusion = fuse_transformer_ops(fp32_path, fused_path,
                                              num_heads=int(source.config.num_attention_heads),
                                              hidden_size=int(source.config.hidden_size),
                                              num_layers=int(source.config.num_hidden_layers))
            report["optimize"].update(fusion)
            ui.note("fused: " + (", ".join(f"{k} x{v}" for k, v in fusion["fused"].items()) or "nothing"))
            if fusion["missing"]:
                ui.warn("not fused: " + ", ".join(f"{k} ({v['found']}/{v['expected']})"
                                                   for k, v in fusion["missing"].items()))
            with ui.stage("check_fused", "check the fused graph against PyTorch"):
                fused_check = check_against_torch(fused_path)
            _require_fp32_parity(fused_check, "fused fp32 graph")
            report["optimize"]["check"] = _brief(fused_check)
            current = fused_path

        fp32_reference = current  # the fp32 ONNX model int8 is measured against
        if quantize != "none":
            current = _quantize_stage(ui, report, source, task_obj, has_task, label_map, check_langs, data_dir,
                                      fp32_reference, work, mode=quantize,
                                      quantize_embeddings=not keep_embeddings_fp32,
                                      calibration_data=calibration_data, calibration_samples=calibration_samples,
                                      accuracy_goal=accuracy_goal, eval_samples=eval_samples, max_trials=max_trials)
            with ui.stage("check_int8", "check the int8 graph against PyTorch"):
                final_check = check_against_torch(current)
            if final_check["min_argmax_agreement"] < 0.9:
                worst = min(final_check["per_language"].items(), key=lambda kv: kv[1]["argmax_agreement"])
                ui.warn(f"int8 argmax agreement is {worst[1]['argmax_agreement']:.0%} in {worst[0]}; "
                        "consider --accuracy-goal or --keep-embeddings-fp32")
        else:
            final_check = fused_check if optimize else fp32_check

        with ui.stage("write", f"write {out}"):
            _match_umask(staging)
            shutil.copyfile(current, staging / MODEL_FILE)
            shutil.copyfile(source.model_dir / "config.json", staging / "config.json")
            with _quiet():
                source.tokenizer.save_pretrained(staging)
            if (source.model_dir / "distill.json").is_file():
                shutil.copyfile(source.model_dir / "distill.json", staging / "distill.json")
            fp32_bytes = fp32_path.stat().st_size
            model_bytes = (staging / MODEL_FILE).stat().st_size
            report["precision"] = "fp32" if quantize == "none" else "int8"
            report["files"] = {"model": MODEL_FILE, "config": "config.json",
                               "tokenizer": sorted(p.name for p in staging.iterdir()
                                                   if p.name.startswith(("tokenizer", "vocab", "special_tokens",
                                                                         "sentencepiece", "spiece")))}
            report["sizes"] = {"fp32_bytes": fp32_bytes, "model_bytes": model_bytes,
                               "model_vs_fp32": round(model_bytes / fp32_bytes, 4)}
            report["op_counts"] = {"fp32": _op_counts(fp32_path), "model": _op_counts(staging / MODEL_FILE)}
            report["check"] = {"source": check.source, "languages": check.languages,
                               "samples_per_language": check_samples,
                               "fp32_tolerance": FP32_TOLERANCE, "fp32": fp32_check, "final": final_check}
            report["cpu"] = q.detect_cpu_features().summary()
            report["versions"] = library_versions()
            report["timings_s"] = ui.timings
            write_json_atomic(staging / REPORT_FILE, report)
        _print_summary(ui, report)
        accuracy = report.get("accuracy")
        if accuracy and not accuracy["goal_met"]:
            ui.warn(f"no int8 model met --accuracy-goal {accuracy_goal}: saved the best found (worst drop "
                    f"{accuracy['worst_drop']:.3f} in {accuracy['worst_language']}, "
                    f"{len(accuracy['fp32_fallback_nodes'])} operators in fp32); see {out / REPORT_FILE}")
    return out


def _match_umask(path: Path) -> None:
    # The staging directory comes from mkdtemp (mode 0700); the result should be as readable as
    # any directory the user makes, e.g. by the server process that will load it.
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)


def _brief(check: dict) -> dict:
    return {"max_abs_logit_diff": check["max_abs_logit_diff"], "min_argmax_agreement": check["min_argmax_agreement"]}


def _require_fp32_parity(check: dict, what: str) -> None:
    if check["max_abs_logit_diff"] > FP32_TOLERANCE:
        raise KDCompressError(f"the {what} differs from PyTorch by {check['max_abs_logit_diff']:.2e} in the logits "
                              f"(> {FP32_TOLERANCE:g}); nothing was written - please report this model")


def _quantize_stage(ui: _Progress, report: dict, source: SourceModel, task_obj: Any, has_task: bool,
                    label_map: np.ndarray | None, langs: Sequence[str], data_dir: Any, fp32_path: Path,
                    work: Path, *, mode: str, quantize_embeddings: bool, calibration_data: Any,
                    calibration_samples: int, accuracy_goal: float | None, eval_samples: int,
                    max_trials: int) -> Path:
    cpu = q.detect_cpu_features()
    scheme = q.choose_int8_scheme(cpu, mode)
    ui.note(f"int8 scheme: {scheme.label} - {scheme.reason}")

    calibration_feeds: list[dict[str, np.ndarray]] = []
    calibration_source = None
    if mode == "static":
        with ui.stage("calibration_data", "load calibration examples"):
            examples, calibration_source = _calibration_examples(calibration_data, task_obj, has_task,
                                                                 langs, data_dir, calibration_samples)
            calibration_feeds = _feeds(source, examples, batch_size=8)

    def quantize_to(excluded: Sequence[str], dst: Path) -> None:
        if mode == "dynamic":
            q.quantize_dynamic_int8(fp32_path, dst, scheme, quantize_embeddings=quantize_embeddings,
                                    nodes_to_exclude=excluded)
        else:
            q.quantize_static_int8(fp32_path, dst, scheme, calibration_feeds,
                                   quantize_embeddings=quantize_embeddings, nodes_to_exclude=excluded)

    int8_path = work / "model_int8.onnx"
    excluded: list[str] = []
    if accuracy_goal is None:
        with ui.stage("quantize", f"quantize ({scheme.label})"):
            quantize_to([], int8_path)
    else:
        int8_path, excluded = _accuracy_aware(ui, report, source, task_obj, label_map, langs, data_dir,
                                              fp32_path, work, scheme, quantize_to, accuracy_goal,
                                              eval_samples, max_trials, quantize_embeddings)
    report["quantization"] = q.scheme_json(scheme, quantize_embeddings=quantize_embeddings, excluded=excluded)
    if calibration_source:
        report["quantization"]["calibration"] = {"source": calibration_source,
                                                 "examples": sum(len(f["input_ids"]) for f in calibration_feeds)}
    return int8_path


def _feeds(source: SourceModel, examples: Sequence[Any], batch_size: int) -> list[dict[str, np.ndarray]]:
    feeds = []
    for start in range(0, len(examples), batch_size):
        encoded = source.encode(examples[start:start + batch_size], max_length=CHECK_MAX_LENGTH)
        feeds.append({n: np.asarray(encoded[n], dtype=np.int64) for n in source.input_names})
    return feeds


def _accuracy_aware(ui: _Progress, report: dict, source: SourceModel, task_obj: Any, label_map: np.ndarray,
                    langs: Sequence[str], data_dir: Any, fp32_path: Path, work: Path, scheme: q.Int8Scheme,
                    quantize_to: Any, goal: float, eval_samples: int, max_trials: int,
                    quantize_embeddings: bool) -> tuple[Path, list[str]]:
    with ui.stage("dev_data", f"load {task_obj.name} dev data ({len(langs)} languages)"):
        dev = _load_examples(task_obj, "dev", langs, data_dir, eval_samples)
        dev_set = CheckSet(f"{task_obj.name} dev", {l: _batches(source, ex, 16) for l, ex in dev.items()},
                           {l: np.asarray([e.label for e in ex]) for l, ex in dev.items()})
    with ui.stage("fp32_accuracy", "measure fp32 dev accuracy"):
        reference = _accuracy(_session(fp32_path), dev_set, label_map)
    with ui.stage("sensitivity", "rank operators by int8 sensitivity"):
        candidates = q.quantization_candidates(fp32_path, mode=scheme.mode, quantize_embeddings=quantize_embeddings)
        # A few batches of every language: activation ranges differ by script.
        sample = [{n: b[n] for n in source.input_names} for batches in dev_set.batches.values() for b in batches[:1]]
        ranked = q.rank_by_sensitivity(fp32_path, candidates, scheme, sample, work)

    def show(trial: q.SearchTrial) -> None:
        state = "[green]meets goal[/]" if trial.meets_goal else "[yellow]misses goal[/]"
        ui.note(f"{len(trial.fallback_nodes):3d} operators in fp32: worst drop {trial.worst_drop:+.3f} "
                f"({trial.worst_language}) {state}")

    with ui.stage("search", f"accuracy-aware int8 (goal: every language within {goal})"):
        result, chosen = q.accuracy_aware_search(
            goal=goal, ranked=ranked, quantize=quantize_to,
            evaluate=lambda path: _accuracy(_session(path), dev_set, label_map),
            reference_accuracy=reference, workdir=work, max_trials=max_trials, on_trial=show)
    report["accuracy"] = result.to_json()
    report["accuracy"]["dev"] = {"task": task_obj.name, "split": "dev", "languages": list(langs),
                                 "samples_per_language": {l: len(ex) for l, ex in dev.items()}}
    return chosen, list(result.best.fallback_nodes)
