"""What the benchmarks share: the machine line every one prints with its figures (machines differ:
compare only ratios measured in the same run) and a free port for the servers they start.
Benchmarks run as scripts (their directory is on sys.path), so they import it as `common`."""

from __future__ import annotations

import socket
import subprocess


def cpu_model() -> str:
    """`lscpu`'s model name, CPU count and the flags that decide training and serving speed."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "lscpu: not available"
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    flags = fields.get("Flags", "").split()
    wanted = [f for f in flags if f.startswith(("avx512_bf16", "amx", "avx512f", "avx2"))]
    model, cpus = fields.get("Model name", "?").strip(), fields.get("CPU(s)", "?").strip()
    return f"{model}, {cpus} CPUs, flags {' '.join(wanted)}"


def free_port() -> int:
    """A localhost port nothing listens on now (a server started right after can take it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
