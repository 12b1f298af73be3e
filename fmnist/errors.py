"""Error text for one-line messages (`error: WHERE: what`, log lines), shared by every layer."""

from __future__ import annotations


def one_line(err: BaseException | str) -> str:
    """The whole message of `err` on one line: runs of whitespace, newlines included, become one
    space (a TF or protobuf error spans lines; a log line or `error:` line must not)."""
    return " ".join(str(err).split())


def first_line(err: BaseException) -> str:
    """Only the first line of `err`'s message (the rest is a traceback or dump), or its type's
    name when it has no message."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
