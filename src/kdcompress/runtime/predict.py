"""`kdcompress predict DIR --input FILE|- --out FILE.jsonl`: label a file with an exported model.

Rows are read in chunks, each chunk is predicted length-sorted and written back in input order,
so memory stays bounded on any input. The output appears only when complete (written to a
temporary file beside it, then renamed); bad rows are reported by line number, not fatal.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from kdcompress.io import match_umask
from kdcompress.locks import output_lock, temp_prefix
from kdcompress.errors import KDCompressError
from kdcompress.runtime.backends import runtime_choices
from kdcompress.runtime.registry import RUNTIMES
from kdcompress.runtime.inputs import FORMATS, BadRow, InputRow, input_format, open_input, read_inputs
from kdcompress.settings import MIN_MAX_LENGTH, Settings, build, setting

SHOWN_BAD_ROWS = 10


@dataclass
class PredictConfig(Settings):
    table = "predict"

    model_dir: str = setting("", help="Exported directory (kdcompress export-onnx).", cli=False)
    input: str = setting("-", help="Input: a .txt (one text a line), .tsv (TEXT<TAB>PAIR) or .jsonl "
                         '({"text": ..., "text_pair": ..., "id": ...}) file, or - for stdin.', cli=False)
    out: str = setting("", help="Output .jsonl file (one prediction a line, with its input line number), "
                       "or - for stdout; must not exist (see --overwrite).", cli=False)
    input_format: str = setting("auto", help="auto | txt | tsv | jsonl (auto: from the suffix; for stdin, "
                                "from the first line).")
    runtime: str = setting("auto", help="auto | onnxruntime | openvino, or any runtime registered in "
                           "kdcompress.runtime.registry (auto: from the files in the directory).")
    threads: int | None = setting(None, help="Inference threads (default: the runtime's, all physical cores).")
    batch_size: int = setting(32, help="Texts per inference call; texts are sorted by length into batches.")
    max_length: int | None = setting(None, help="Truncate inputs to this many tokens (default: the length the "
                                  "model was trained at, from its distill.json; else the model's limit).")
    precision: str | None = setting(None, help="OpenVINO inference precision, f32 | bf16 (default: what the "
                                    "export recorded).")
    cache_dir: str | None = setting(None, help="OpenVINO: keep the compiled model in this folder, so that later "
                                    "runs load it instead of compiling (a shorter cold start). ONNX Runtime ignores it.")
    chunk_size: int = setting(4096, help="Rows read, sorted and predicted at a time (bounds memory).")
    include_text: bool = setting(False, help="Copy text and text_pair into each output line.")
    overwrite: bool = setting(False, help="Replace --out if it exists.")
    progress: bool = setting(True, help="Show a progress bar and the closing summary.", cli=False)

    def check(self) -> "PredictConfig":
        if not self.model_dir:
            raise KDCompressError("no model directory: pass DIR (a directory made by `kdcompress export-onnx`)")
        if not self.out:
            raise KDCompressError("no output file: pass --out FILE.jsonl (or - for stdout)")
        if self.input != "-" and self.out != "-" and Path(self.input).resolve() == Path(self.out).resolve():
            raise KDCompressError(f"--out {self.out} is the input file; choose another --out")
        for name, allowed in (("runtime", runtime_choices()), ("input_format", FORMATS)):
            if getattr(self, name) not in allowed:
                raise KDCompressError(f"--{name.replace('_', '-')} {getattr(self, name)!r} is not one of "
                                      f"{', '.join(allowed)}")
        precisions = list(dict.fromkeys(p for row in RUNTIMES.values() for p in row.precisions))
        if self.precision is not None and self.precision not in precisions:
            raise KDCompressError(f"--precision {self.precision!r} is not one of {', '.join(precisions)}")
        for name, minimum in (("batch_size", 1), ("chunk_size", 1), ("threads", 1), ("max_length", MIN_MAX_LENGTH)):
            value = getattr(self, name)
            if value is not None and value < minimum:
                raise KDCompressError(f"--{name.replace('_', '-')} must be at least {minimum}, not {value}")
        return self


@dataclass
class PredictResult:
    out: str
    backend: str
    rows: int  # rows predicted
    bad_rows: list[BadRow] = field(default_factory=list)
    load_seconds: float = 0.0
    predict_seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.predict_seconds if self.predict_seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {"out": self.out, "backend": self.backend, "rows": self.rows,
                "bad_rows": [{"line": b.line, "reason": b.reason} for b in self.bad_rows],
                "load_seconds": round(self.load_seconds, 3), "predict_seconds": round(self.predict_seconds, 3),
                "rows_per_second": round(self.rows_per_second, 1)}


def _chunks(rows: Iterable[InputRow | BadRow], size: int) -> Iterator[list[InputRow | BadRow]]:
    """Lists of rows holding `size` good rows each (bad rows ride along)."""
    chunk: list[InputRow | BadRow] = []
    good = 0
    for row in rows:
        chunk.append(row)
        good += isinstance(row, InputRow)
        if good >= size:
            yield chunk
            chunk, good = [], 0
    if chunk:
        yield chunk


def _count_lines(path: str) -> int | None:
    if path == "-":
        return None
    lines, last = 0, b"\n"
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


@contextlib.contextmanager
def atomic_text_file(out: str, *, overwrite: bool) -> Iterator[IO[str]]:
    """A text stream that becomes `out` only if the block succeeds ("-": stdout, written as it goes)."""
    if out == "-":
        if sys.stdout is None or sys.stdout.closed:
            raise KDCompressError("--out - writes to stdout, which is closed; pass --out FILE.jsonl")
        yield sys.stdout
        return
    path = Path(out)
    if path.exists() and not overwrite:
        raise KDCompressError(f"output file {path} already exists; choose another --out or pass --overwrite")
    if path.is_dir():
        raise KDCompressError(f"--out {path} is a directory; pass a file name such as predictions.jsonl")
    with output_lock(path):  # a second writer is refused; a killed run's temp file is removed
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                yield stream
            match_umask(tmp, mode=0o666)  # mkstemp makes 0600; the result gets the user's usual mode
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _output_line(row: InputRow, prediction: Any, include_text: bool) -> str:
    record: dict[str, Any] = {"line": row.line}
    if row.id is not None:
        record["id"] = row.id
    if include_text:
        record["text"] = row.text
        if row.text_pair is not None:
            record["text_pair"] = row.text_pair
    record.update(prediction.to_json())
    return json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"


def _summary(console: Any, result: PredictResult, threads: int | None) -> None:
    console.print(f"[green]✓[/] {result.rows} rows in {result.predict_seconds:.2f} s: "
                  f"[bold]{result.rows_per_second:.1f} rows/s[/] on {result.backend} "
                  f"(threads: {threads or 'default'}; model loaded in {result.load_seconds:.2f} s) -> "
                  f"{'stdout' if result.out == '-' else result.out}",
                  highlight=False)
    if result.bad_rows:
        console.print(f"[bold yellow]{len(result.bad_rows)} bad rows skipped[/]:", highlight=False)
        for bad in result.bad_rows[:SHOWN_BAD_ROWS]:
            console.print(f"  line {bad.line}: {bad.reason}", highlight=False, markup=False)
        if len(result.bad_rows) > SHOWN_BAD_ROWS:
            console.print(f"  ... and {len(result.bad_rows) - SHOWN_BAD_ROWS} more (PredictResult.bad_rows)")


def predict_file(config: PredictConfig | None = None, *, console: Any = None, **overrides: Any) -> PredictResult:
    """Predict every row of `input` with the exported `model_dir`; write `out` (JSONL) atomically.

    Settings are PredictConfig's fields (a config, keyword overrides, or both; overrides win).
    Output lines: {"line", ["id"], ["text", "text_pair"], "label", "score", "probabilities"} in input
    order; bad input rows are skipped and returned in `PredictResult.bad_rows` with their line numbers.
    """
    from kdcompress.console import stderr_console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from kdcompress.progress import Progress

    from kdcompress.runtime.predictor import Predictor

    cfg = build(PredictConfig, config, overrides)
    console = console or stderr_console(quiet=not cfg.progress)
    # Cheap checks first: a bad --input or an existing --out fails before the model loads.
    input_format(cfg.input, cfg.input_format)
    stream_or_file = open_input(cfg.input)  # stdin closed, a missing or unreadable file: refused here
    if cfg.input != "-":
        stream_or_file.close()
    if cfg.out == "-" and (sys.stdout is None or sys.stdout.closed):
        raise KDCompressError("--out - writes to stdout, which is closed; pass --out FILE.jsonl")
    if cfg.out != "-" and Path(cfg.out).exists() and not cfg.overwrite:
        raise KDCompressError(f"output file {cfg.out} already exists; choose another --out or pass --overwrite")
    start = time.perf_counter()
    predictor = Predictor(cfg.model_dir, threads=cfg.threads, runtime=cfg.runtime, batch_size=cfg.batch_size,
                          max_length=cfg.max_length, precision=cfg.precision, cache_dir=cfg.cache_dir)
    rows = read_inputs(cfg.input, fmt=cfg.input_format)
    result = PredictResult(cfg.out, predictor.runtime, 0, load_seconds=time.perf_counter() - start)
    columns = (TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TextColumn("lines"), TimeRemainingColumn())
    with atomic_text_file(cfg.out, overwrite=cfg.overwrite) as stream, \
            Progress(*columns, console=console, disable=not cfg.progress, transient=True) as bar:
        task = bar.add_task("predict", total=_count_lines(cfg.input))
        start = time.perf_counter()
        for chunk in _chunks(rows, cfg.chunk_size):
            good = [r for r in chunk if isinstance(r, InputRow)]
            result.bad_rows += [r for r in chunk if isinstance(r, BadRow)]
            pairs = [r.text_pair for r in good] if any(r.text_pair is not None for r in good) else None
            predictions = predictor.predict([r.text for r in good], pairs)
            stream.writelines(_output_line(r, p, cfg.include_text) for r, p in zip(good, predictions))
            result.rows += len(good)
            bar.update(task, completed=chunk[-1].line)
        result.predict_seconds = time.perf_counter() - start
        if result.bad_rows and not result.rows:  # raised inside the block: the empty output is never published
            raise KDCompressError(f"no row of {cfg.input} could be read ({len(result.bad_rows)} bad rows, e.g. line "
                                  f"{result.bad_rows[0].line}: {result.bad_rows[0].reason}); fix the input file")
    if cfg.progress:
        _summary(console, result, cfg.threads)
    return result
