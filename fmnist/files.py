"""Files written whole or not at all, for every layer: reports, exports, release configs,
label files, monitoring summaries."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

KEEP_MODE = -1  # `mode` value: keep the replaced file's permission bits (a new file gets 0o644)


@contextlib.contextmanager
def replaced_atomically(out_path: str | os.PathLike, newline: str | None = None, *, mode: int | None = None,
                        durable: bool = False) -> Iterator[TextIO]:
    """A text stream (UTF-8) whose content replaces `out_path` when the block ends: written to a
    temporary file beside it, then renamed over it, so a reader sees the old file or the new one,
    never half of one. On an error the temporary file goes and `out_path` is left as it was.
    Creates the parent directory.

    `mode`: the new file's permission bits; None gives a new file's (0o666 less the umask: a temp
    file is private, these files are for sharing); KEEP_MODE keeps the replaced file's. `durable`:
    fsync the file and the directory, so the rename survives a crash (files a server re-reads)."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if mode == KEEP_MODE:
        try:
            mode = out.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
    elif mode is None:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    handle, temp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline=newline) as stream:
            yield stream
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.chmod(temp, mode)
        os.replace(temp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    if durable:
        directory = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
