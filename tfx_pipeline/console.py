"""Console views of a local run: the component table (the progress lines are tfx_pipeline.progress)."""

from __future__ import annotations

from tfx_pipeline.metadata import ComponentRun


def format_table(runs: list[ComponentRun]) -> str:
    width = max([len(r.component) for r in runs] + [9])
    lines = [f"{'component':<{width}}  {'state':<9} {'seconds':>8}"]
    lines += [f"{r.component:<{width}}  {r.state:<9} {r.seconds:>8.1f}" for r in runs]
    return "\n".join(lines)
