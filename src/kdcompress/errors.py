"""The one exception type users see.

Every problem the user can fix (bad option, missing data, wrong model) is raised as
`KDCompressError` with a message that names the problem and the fix. The CLI prints it
as a single line and exits non-zero; the Python API lets it propagate.
"""


class KDCompressError(Exception):
    """A user-facing error: one line that says what is wrong and how to fix it."""


def describe(exc: BaseException, *, limit: int = 160) -> str:
    """A library exception as one short clause, for quoting inside a KDCompressError message."""
    lines = str(exc).strip().splitlines()
    detail = lines[0][:limit] if lines else ""
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
