"""Training precision (`--precision auto|float32|bfloat16`): which Keras dtype policy the CNN's
layers compute in, chosen once per Trainer process from what its CPU can do.

bfloat16 training is Keras' "mixed_bfloat16" policy, set per layer (modules.model.build_model),
never globally: the Tuner and the tests run many fits in one process. Variables stay float32, so
bf16 needs no loss scaling; the softmax head computes in float32. Exports are pure float32
(float32_copy, used by modules.signatures), so serving never depends on the CPU it runs on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

AUTO, FLOAT32, BFLOAT16 = "auto", "float32", "bfloat16"
CHOICES = (AUTO, FLOAT32, BFLOAT16)
MIXED_BFLOAT16 = "mixed_bfloat16"  # the Keras policy "bfloat16" trains with
CPUINFO = "/proc/cpuinfo"

# The CPU flags of native bf16 arithmetic. The kernel lists amx_bf16 only when AMX is enabled.
AMX_BF16 = "amx_bf16"
AVX512_BF16 = "avx512_bf16"
# Measured on the dev AMD EPYC (2 CPUs, avx512_bf16, no AMX; issue #14): a bare fit of the tuned
# CNN, batch 128, ran at 903-1,023 img/s in float32 and 1,475-1,665 img/s in mixed_bfloat16, and
# the full 24-epoch training (benchmarks/precision.py, seed 42) ran 1.68x faster with test accuracy
# 0.9420 against float32's 0.9409. So `auto` picks bf16 on avx512_bf16 as well as on AMX.
AVX512_BF16_GAINS = True


class Resolved(NamedTuple):
    """The Keras dtype policy a run computes in, why, and what was asked for."""

    policy: str  # "float32" or "mixed_bfloat16"
    reason: str
    requested: str = AUTO

    @property
    def bf16(self) -> bool:
        return self.policy == MIXED_BFLOAT16

    def to_dict(self) -> dict[str, str]:
        return {"requested": self.requested, "policy": self.policy, "reason": self.reason}

    def __str__(self) -> str:
        return f"precision {self.policy} ({self.reason})"


def cpu_flags(path: str = CPUINFO) -> frozenset[str]:
    """The union of the `flags` lines of /proc/cpuinfo (x86); empty where the file is missing
    or has none (other systems, other architectures)."""
    try:
        with open(path) as stream:
            text = stream.read()
    except OSError:
        return frozenset()
    found: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            found.update(value.split())
    return frozenset(found)


def resolve(requested: str, flags: Iterable[str], gpus: int = 0) -> Resolved:
    """The policy for `requested` ("auto", "float32" or "bfloat16") on a machine with these CPU
    flags and this many GPUs.

    auto: mixed_bfloat16 on amx_bf16, and on avx512_bf16 while AVX512_BF16_GAINS; otherwise
    float32 (GPUs too: bf16 there is unmeasured). Explicit values are obeyed; bfloat16 on a CPU
    with neither flag is emulated and slow, and says so."""
    flags = frozenset(flags)
    if requested == FLOAT32:
        return Resolved(FLOAT32, "requested", requested)
    if requested == BFLOAT16:
        if gpus:
            return Resolved(MIXED_BFLOAT16, f"requested; on {gpus} GPU(s)", requested)
        native = [flag for flag in (AMX_BF16, AVX512_BF16) if flag in flags]
        if native:
            return Resolved(MIXED_BFLOAT16, f"requested; CPU has {native[0]}", requested)
        log.warning("--precision bfloat16 on a CPU without amx_bf16 or avx512_bf16: bf16 is emulated "
                    "and training will be slower than float32")
        return Resolved(MIXED_BFLOAT16, "requested; no amx_bf16/avx512_bf16: emulated, slow", requested)
    if requested != AUTO:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}, got {requested!r}")
    if gpus:
        return Resolved(FLOAT32, f"auto: {gpus} GPU(s), bf16 unmeasured there", requested)
    if AMX_BF16 in flags:
        return Resolved(MIXED_BFLOAT16, "auto: CPU has amx_bf16", requested)
    if AVX512_BF16 in flags:
        if AVX512_BF16_GAINS:
            return Resolved(MIXED_BFLOAT16, "auto: CPU has avx512_bf16 (measured 1.5-1.7x over float32)", requested)
        return Resolved(FLOAT32, "auto: avx512_bf16 without a measured gain", requested)
    return Resolved(FLOAT32, "auto: CPU has no amx_bf16/avx512_bf16", requested)


def resolve_here(requested: str) -> Resolved:
    """resolve() for this process's machine: its /proc/cpuinfo flags and visible GPUs."""
    import tensorflow as tf

    return resolve(requested, cpu_flags(), len(tf.config.list_physical_devices("GPU")))


def computes_in_bf16(model: Any) -> bool:
    """Whether any layer of `model` computes in bfloat16."""
    return any(getattr(layer, "compute_dtype", None) == "bfloat16" for layer in model.layers)


def float32_copy(model: Any) -> Any:
    """`model` rebuilt with every layer in float32 (same layer names and weights, uncompiled):
    what a bf16-trained model exports as."""
    import tf_keras as keras

    def float32_layer(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=float32_layer)
    copy.set_weights(model.get_weights())
    return copy
