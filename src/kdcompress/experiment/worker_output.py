"""A step worker's output, each line labelled with the step it belongs to.

Steps side by side write to one terminal or log. In the CPU XNLI study's log the progress lines of two students
("student fine-tuning: 62/1230 ...") and their messages ("student dev accuracy: ...") interleaved with nothing to
tell them apart, and on a terminal two processes' live progress displays overwrite each other. In a worker, stdout
and stderr become a `LabelledLines` stream: each line begins with its step's name, and rich, which sees no terminal
there, prints its plain line a minute (kdcompress.progress) instead of live bars. Hand-written because the stream
must wrap every writer in the process (rich's consoles, print, warnings), which no logging handler reaches."""

from __future__ import annotations

import contextlib
import io
import sys
from typing import Iterator, TextIO


class LabelledLines(io.TextIOBase):
    """Writes whole lines to `target`, each prefixed with `[label] ` while a label is set."""

    def __init__(self, target: TextIO):
        super().__init__()
        self.target = target
        self.label: str | None = None
        self._partial = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return getattr(self.target, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self.target.write(f"[{self.label}] {line}\n" if self.label else f"{line}\n")
        if lines:
            self.target.flush()
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def end_line(self) -> None:
        """Write an unfinished line under the current label before the label changes."""
        if self._partial:
            self.write("\n")


def label_worker_output() -> None:
    """Called once in each worker process, before any step runs."""
    if not isinstance(sys.stdout, LabelledLines):
        sys.stdout = LabelledLines(sys.stdout)
    if not isinstance(sys.stderr, LabelledLines):
        sys.stderr = LabelledLines(sys.stderr)


@contextlib.contextmanager
def labelled(label: str) -> Iterator[None]:
    """Label this process's output lines with `label` for one step (no change outside a worker)."""
    streams = [stream for stream in (sys.stdout, sys.stderr) if isinstance(stream, LabelledLines)]
    for stream in streams:
        stream.end_line()
        stream.label = label
    try:
        yield
    finally:
        for stream in streams:
            stream.end_line()
            stream.label = None
