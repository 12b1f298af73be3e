"""Labelled outcomes of a `fmnist serve` for the canary analysis (issue #24): its request log
(`--log-requests DIR`) joined with the delayed labels `fmnist feedback` stored beside it, by
fmnist.outcomes.join, the join the monitor's live accuracy uses. Here because it wires serving's
log reader to monitoring's decoding, and only the CLI may import both."""

from __future__ import annotations

import os
from collections.abc import Callable

from fmnist import feedback, outcomes


def from_request_log(directory: str | os.PathLike) -> Callable[[float, float], list[outcomes.LabelledOutcome]]:
    """An OutcomeSource (serving.release.canary_analysis): (start, end) -> the labelled answers of the calls
    logged in [start, end] in `directory`. Only closed log files are read, so a bake sees its calls
    only once the server has rotated the file (`fmnist serve --log-max-seconds` under the bake).
    A log or label file that cannot be read raises AnalysisError (a ReleaseError: one line, and
    `fmnist watch` goes on with the canary waiting)."""
    def read(start: float, end: float) -> list[outcomes.LabelledOutcome]:
        from monitoring.examples import served_examples
        from serving.release.canary_analysis import AnalysisError
        from serving.server.request_log import read_request_logs

        if not os.path.isdir(directory):
            raise AnalysisError(f"no request log directory at {directory} (--requests)")
        try:  # stamps are whole seconds: the end second counts
            served = served_examples(read_request_logs(str(directory), start, end + 1))
            return outcomes.join(served.answers(), feedback.read_labels(directory))
        except (OSError, ValueError) as err:
            raise AnalysisError(f"labelled answers from {directory}: {err}") from None
    return read
