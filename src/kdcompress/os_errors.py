"""Operating-system faults (a full disk, a file we may not read, a closed pipe) as one user-facing line.

Such faults can surface anywhere a file is read or written, so they are translated once: at the CLI entry point
(`os_fault_message` for any OSError that reached it) and where a library wraps the OSError in its own exception
type (`find_os_fault`, e.g. the ONNX exporter, which would otherwise be blamed for a full disk).
"""

from __future__ import annotations

import errno
import os

#: errno -> (what happened, the fix), worded to follow "FILE: ".
_FAULTS = {
    errno.ENOSPC: ("no space left on the disk", "free some space or choose an --out on another disk, then rerun"),
    errno.EFBIG: ("file too large for the disk or the file-size limit (ulimit -f)",
                  "raise the limit, free space or choose an --out on another disk, then rerun"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or choose an --out on another disk, then rerun"),
    errno.EACCES: ("permission denied", "make it readable (and its folder writable where it is written) or "
                   "choose another path"),
    errno.EPERM: ("operation not permitted", "check the file's owner and permissions or choose another path"),
    errno.EROFS: ("the file system is read-only", "choose an --out on a writable disk"),
    errno.ENOENT: ("no such file or directory", "check the path"),
    errno.EISDIR: ("is a directory", "pass a file"),
    errno.ENOTDIR: ("a part of the path is not a directory", "check the path"),
    errno.EPIPE: ("the output stream was closed before the command finished",
                  "keep the reader open to the end, or write to a file with --out"),
    errno.EBADF: ("a standard stream is closed", "run the command with stdin and stdout open, or pass files"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) and rerun"),
    errno.EIO: ("input/output error from the disk", "check the disk, then rerun"),
}

#: The disk faults that a library may report only in its message.
_DISK_WORDS = {"No space left on device": errno.ENOSPC, "File too large": errno.EFBIG,
               "Disk quota exceeded": errno.EDQUOT}


def os_fault_message(exc: OSError) -> str:
    """One line naming the file (where the OS said which), what happened and the fix."""
    where = exc.filename if exc.filename is not None else None
    if exc.filename2 is not None:
        where = f"{exc.filename} -> {exc.filename2}"
    what, fix = _FAULTS.get(exc.errno, (exc.strerror or str(exc) or type(exc).__name__, "check the path and rerun"))
    prefix = f"{os.fspath(where)}: " if where is not None else ""
    return f"{prefix}{what}; {fix}"


def find_os_fault(exc: BaseException | None) -> OSError | None:
    """The OSError behind `exc` (itself, its cause or context chain, or a disk fault named only in a message)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        text = str(exc)
        for words, number in _DISK_WORDS.items():
            if words in text:
                return OSError(number, os.strerror(number))
        exc = exc.__cause__ or exc.__context__
    return None


def interruption(exc: BaseException | None) -> KeyboardInterrupt | None:
    """The Ctrl-C or stop request (kdcompress.stopping) that `exc` is, or was raised while handling (a library
    import may wrap it in its own error)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, KeyboardInterrupt):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None
