"""Files people read (reports, pages, exports), written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO


@contextlib.contextmanager
def replaced_atomically(out_path: str | os.PathLike, newline: str | None = None) -> Iterator[TextIO]:
    """A text stream (UTF-8) whose content replaces `out_path` when the block ends: written to a
    temporary file beside it, given a new file's permissions (a temp file is private; these are
    for sharing), then renamed over it. On an error the temporary file goes and `out_path` is
    left as it was. Creates the parent directory."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline=newline) as stream:
            yield stream
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
