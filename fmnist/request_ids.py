"""Request ids: the key that joins an answered request to the label that comes back later.

Every Predict/Classify answer carries one: REST in the `X-Request-Id` response header, gRPC in the
`x-request-id` trailing metadata. A client may send its own in the same header / invocation
metadata and gets it back; otherwise the server makes a random one (uuid4 hex: it carries no
client data, not even a time). Ids are checked before anything else of the request is read:
1..64 characters of letters, digits and `. _ : -`, starting with a letter or digit, so an id is
safe as a CSV cell, a log field and a query parameter, and is never a path or SQL.

The request log keeps the id in each PredictionLog's `log_metadata.request_origin`: TF Serving's
LogMetadata has no request-id field, and open-source TF Serving leaves that one empty. `of_log`
and `set_on_log` are the only places that know it.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

HEADER = "X-Request-Id"  # REST: request and response header
METADATA_KEY = "x-request-id"  # gRPC: invocation metadata in, trailing metadata out (lower case, as gRPC wants)
MAX_LENGTH = 64
_VALID = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._:-]{{0,{MAX_LENGTH - 1}}}$")


def new_id() -> str:
    """A fresh random id (32 hex digits)."""
    return uuid.uuid4().hex


def is_valid(value: str) -> bool:
    return bool(_VALID.match(value))


def check(value: str, where: str = "request id") -> str:
    """`value` if it is a valid id; else ValueError in one line naming `where`."""
    if not isinstance(value, str) or not is_valid(value):
        shown = repr(value) if len(str(value)) <= MAX_LENGTH else repr(str(value)[:MAX_LENGTH]) + "..."
        raise ValueError(f"{where}: {shown} is not a request id (1..{MAX_LENGTH} characters of letters, digits "
                         "and . _ : -, starting with a letter or digit)")
    return value


def accept(client_value: str | None, where: str = HEADER) -> str:
    """The id a request is answered under: the client's (checked) or, when it sent none, a new one."""
    if client_value is None or client_value == "":
        return new_id()
    return check(client_value, where)


def of_log(logged: Any) -> str:
    """The request id a PredictionLog was written with ("" for logs from before request ids)."""
    return logged.log_metadata.request_origin


def set_on_log(logged: Any, request_id: str) -> None:
    logged.log_metadata.request_origin = request_id
