"""Automatic canary analysis: measure the canary against stable on a running server over a bake
window, then promote or roll it back (`fmnist release analyze|auto`, and the continuous-training
loop through auto_release()).

Evidence comes from the server's Prometheus metrics (serving/server/prometheus.py), read at the start and at
the end of the bake: only the difference counts, so traffic from before the bake (an earlier
canary, a warmup) never mixes in. The checks:

- error rate: the canary's non-OK Predict/Classify requests plus its failed shadow requests, over
  both (a shadow request is the canary answering real input too);
- p99 latency: from the deltas of the latency histogram's buckets, canary vs stable, each over its
  own Predict/Classify requests (needs --canary-traffic or clients of the canary label);
- agreement: the share of shadow-compared instances (serving/server/shadow.py: the same inputs, run on
  both) on which the canary predicts stable's class;
- class divergence: the Jensen-Shannon divergence between the predicted-class distributions of
  stable and the canary on those same shadow instances; without shadow traffic, between each
  version's own answered instances (different inputs, so sampling noise adds to it);
- accuracy: the canary's accuracy on the answers whose delayed labels came back (issue #24: the
  request log joined with `fmnist feedback`'s labels by fmnist.outcomes.join, the monitor's join),
  against stable's; n/a until both versions have `Policy.min_labelled` labelled answers.

A check with no evidence is n/a. When the canary has seen fewer than `Bake.requests` requests (its
own plus shadow) when the bake ends, the verdict is inconclusive whatever the checks say; else any
FAIL fails it, and passes (n/a included) pass it.

Thresholds (the defaults of Policy) were measured with benchmarks/canary_thresholds.py on the
official test split: see the constants below and README "Releases".

Client side: imports no TensorFlow (checked by .importlinter), only httpx and prometheus_client.
"""

from __future__ import annotations

import datetime
import functools
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from fmnist import features
from fmnist.outcomes import MIN_LABELLED, LabelledOutcome
from serving.protocol import names
from serving.release.labels import FileRelease, ReleaseError, Version, metrics_text

if TYPE_CHECKING:
    from serving.release.vertex_traffic import VertexRelease

PASS, FAIL, NA = "pass", "FAIL", "n/a"
PROMOTED, ROLLED_BACK, INCONCLUSIVE, NO_CANARY = "promoted", "rolled back", "inconclusive", "no canary"
ON_INCONCLUSIVE: Final = ("keep", "promote", "rollback")
INFERENCE_APIS: Final = ("predict", "classify")  # serving/server/service.py's api label values that run the model

# Defaults, measured with benchmarks/canary_thresholds.py (official test split; README "Releases" has
# the table): the project's CNN, 4 epochs each, stable on span 1 (20,000 training images, test
# accuracy 0.886) against canaries on spans 1+2. A clean canary (0.908) agrees with it on 0.944 of the
# test images, 0.930-0.960 over 500-image bakes (5th-95th percentile), class JS 0.0001 (at most
# 0.0011 over bakes). Pullover/coat labels swapped in span 2 (0.812): agreement 0.839 (0.814-0.866),
# JS 0.0095 (0.0034-0.021: a swap hardly moves the class distribution; agreement sees it). Dresses
# missing (0.825): agreement 0.847 (0.824-0.874), JS 0.057 (0.045-0.071). Agreement 0.90 sits
# between the clean canary's worst bake (0.930) and the bad ones' best (0.874); divergence 0.01 is 9x
# the clean canary's worst bake and 4.5x under the class-missing one's best, and leaves room for the
# sampling noise of the fallback (each version's own answers, different inputs). Fully trained models
# agree more with each other than these 4-epoch ones, which only widens the clean side's margin.
MIN_AGREEMENT: Final = 0.90
MAX_CLASS_DIVERGENCE: Final = 0.01
# A healthy server answers no request with an error (the release benchmark: 0 of 5,648).
MAX_ERROR_RATE: Final = 0.01
# p99 of a few hundred requests is noisy here: a copy of stable as the canary (same model), 12 bakes
# of 500 canary requests at 1-8 client threads, --canary-traffic 10-25, --shadow-traffic 0-50, 2
# shared cores: canary p99 / stable p99 from 0.28 to 2.49, the p99s from 6 to 203 ms (a minority
# version also waits behind the majority's batches). So: a canary fails only beyond 3x stable's p99
# and beyond 100 ms (the floor: under it, any p99 passes, so milliseconds never flap); none of the
# 12 identical-canary bakes would have failed, a canary 3x slower under load does.
MAX_P99_RATIO: Final = 3.0
P99_FLOOR_SECONDS: Final = 0.1
MIN_LATENCY_SAMPLES: Final = 20  # per side: a p99 of fewer requests is its maximum, not a percentile
MAX_ACCURACY_DROP: Final = 0.01  # for #24: canary accuracy may trail stable's by at most this


class AnalysisError(ReleaseError):
    """The analysis could not measure (metrics unreadable, the server restarted mid-bake)."""


@dataclass(frozen=True)
class Policy:
    """The thresholds a canary must meet (fractions, seconds; see the module constants)."""

    max_error_rate: float = MAX_ERROR_RATE
    max_p99_ratio: float = MAX_P99_RATIO
    p99_floor_seconds: float = P99_FLOOR_SECONDS
    min_agreement: float = MIN_AGREEMENT
    max_class_divergence: float = MAX_CLASS_DIVERGENCE
    max_accuracy_drop: float = MAX_ACCURACY_DROP
    min_labelled: int = MIN_LABELLED  # per version, before accuracy is judged (as the monitor's)

    def __post_init__(self) -> None:
        for name in ("max_error_rate", "min_agreement", "max_class_divergence", "max_accuracy_drop"):
            if not 0 <= getattr(self, name) <= 1:
                raise ReleaseError(f"{name.replace('_', '-')} is a fraction within 0..1, got {getattr(self, name):g}")
        if self.min_labelled < 1:
            raise ReleaseError(f"min-labelled must be at least 1, got {self.min_labelled}")
        if self.max_p99_ratio <= 0 or self.p99_floor_seconds < 0:
            raise ReleaseError(f"max-p99-ratio must be > 0 and the p99 floor >= 0, got {self.max_p99_ratio:g} "
                               f"and {self.p99_floor_seconds:g} s")


@dataclass(frozen=True)
class Bake:
    """How long to measure: until the canary has seen `requests` requests (its own plus shadow
    ones), or `seconds` have passed; the metrics are read every `poll_seconds`."""

    seconds: float = 300.0
    requests: int = 500
    poll_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.seconds < 0 or self.requests < 1 or self.poll_seconds <= 0:
            raise ReleaseError(f"a bake needs seconds >= 0, requests >= 1 and poll seconds > 0, got "
                               f"{self.seconds:g}, {self.requests}, {self.poll_seconds:g}")


@dataclass(frozen=True)
class Check:
    """One measured criterion: its value against its threshold, and the verdict."""

    name: str
    value: float | None
    threshold: float | None
    verdict: str  # PASS, FAIL or NA
    detail: str = ""
    comparison: str = "<="  # how value must stand to threshold to pass

    def line(self) -> str:
        value = "-" if self.value is None else _number(self.value)
        threshold = "-" if self.threshold is None else f"{self.comparison} {_number(self.threshold)}"
        return f"{self.name:<16} {value:>9}  {threshold:<12} {self.verdict:<4}  {self.detail}".rstrip()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "threshold": self.threshold, "verdict": self.verdict,
                "detail": self.detail}


def _number(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


def _judge(name: str, value: float, threshold: float, passes: bool, detail: str, comparison: str = "<=") -> Check:
    return Check(name, value, threshold, PASS if passes else FAIL, detail, comparison)


# -- the metrics, as numbers ----------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """The server's samples at one moment: {metric sample name: [(labels, value)]}."""

    samples: Mapping[str, tuple[tuple[Mapping[str, str], float], ...]]

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        """From Prometheus text exposition (what GET /monitoring/prometheus/metrics answers)."""
        from prometheus_client.parser import text_string_to_metric_families

        found: dict[str, list] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
        return cls({name: tuple(series) for name, series in found.items()})

    def series(self, name: str, **labels: str | Iterable[str]) -> list[tuple[Mapping[str, str], float]]:
        """The samples of `name` whose labels match: a string equals, an iterable contains."""
        def matches(sample_labels: Mapping[str, str]) -> bool:
            for key, wanted in labels.items():
                value = sample_labels.get(key)
                if (value != wanted) if isinstance(wanted, str) else (value not in wanted):
                    return False
            return True
        return [(sample_labels, value) for sample_labels, value in self.samples.get(name, ()) if matches(sample_labels)]

    def total(self, name: str, **labels: str | Iterable[str]) -> float:
        return sum(value for _, value in self.series(name, **labels))

    def minus(self, before: Snapshot) -> Snapshot:
        """What happened between `before` and this snapshot (counters and histograms only grow; a
        series absent before counts from 0). Raises AnalysisError when one shrank: the server
        restarted in between, and nothing before and after can be compared."""
        earlier = {(name, tuple(sorted(labels.items()))): value
                   for name, series in before.samples.items() for labels, value in series}
        delta: dict[str, list] = {}
        for name, series in self.samples.items():
            for labels, value in series:
                change = value - earlier.get((name, tuple(sorted(labels.items()))), 0.0)
                if change < 0 and name.endswith(("_total", "_bucket", "_count")):
                    raise AnalysisError(f"{name} went down during the bake ({labels}): the server restarted, "
                                        "analyze again")
                delta.setdefault(name, []).append((labels, change))
        return Snapshot({name: tuple(series) for name, series in delta.items()})


def histogram_quantile(quantile: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The `quantile` of a Prometheus histogram from its cumulative buckets [(upper bound `le`,
    count of observations <= le)], +inf last, interpolated linearly inside the bucket it falls in,
    as PromQL's histogram_quantile does (a quantile in the +inf bucket is the largest finite
    bound). None without observations."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = quantile * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def js_divergence(first: Sequence[float], second: Sequence[float]) -> float:
    """Jensen-Shannon divergence (base 2: 0 for the same distribution, 1 for disjoint ones)
    between two distributions given as counts or weights over the same classes."""
    total_first, total_second = float(sum(first)), float(sum(second))
    if total_first <= 0 or total_second <= 0 or len(first) != len(second):
        raise ValueError("JS divergence needs two non-empty distributions over the same classes")
    p = [x / total_first for x in first]
    q = [x / total_second for x in second]
    middle = [(a + b) / 2 for a, b in zip(p, q, strict=True)]

    def kl(a: Sequence[float]) -> float:
        return sum(x * math.log2(x / m) for x, m in zip(a, middle, strict=True) if x > 0)
    return max(0.0, (kl(p) + kl(q)) / 2)


# -- the evidence of one bake ---------------------------------------------------------------------
@dataclass(frozen=True)
class Evidence:
    """What the server counted for a stable/canary pair over the bake (Snapshot deltas)."""

    canary_requests: int
    canary_errors: int
    shadow_requests: int
    shadow_errors: int
    shadow_dropped: int
    shadow_instances: int
    shadow_agreements: int
    stable_latency: tuple[tuple[float, float], ...]  # cumulative buckets (le, count)
    canary_latency: tuple[tuple[float, float], ...]
    shadow_classes: Mapping[str, tuple[int, ...]]  # side (stable/canary) -> count per class id
    answered_classes: Mapping[str, tuple[int, ...]]  # label (stable/canary) -> count per class id

    @property
    def seen(self) -> int:
        """Requests the canary has run: its own plus shadow ones (what --bake-requests counts)."""
        return self.canary_requests + self.shadow_requests

    @classmethod
    def between(cls, delta: Snapshot, model: str, stable: Version, canary: Version) -> Evidence:
        stable, canary = str(stable), str(canary)
        pair = {"model": model, "stable": stable, "canary": canary}
        own = {"model": model, "version": canary, "api": INFERENCE_APIS}

        def buckets(version: str) -> tuple[tuple[float, float], ...]:
            summed: dict[float, float] = {}
            for labels, value in delta.series(names.LATENCY_BUCKET, model=model, version=version, api=INFERENCE_APIS):
                bound = float(labels["le"])
                summed[bound] = summed.get(bound, 0.0) + value
            return tuple(sorted(summed.items()))

        def classes(name: str, **labels: str) -> tuple[int, ...]:
            counts = [0] * features.NUM_CLASSES
            for sample_labels, value in delta.series(name, **labels):
                index = int(sample_labels["class"])
                if 0 <= index < features.NUM_CLASSES:
                    counts[index] += int(value)
            return tuple(counts)

        total = delta.total(names.REQUESTS, **own)
        ok = delta.total(names.REQUESTS, **own, code="OK")
        return cls(
            canary_requests=int(total), canary_errors=int(total - ok),
            shadow_requests=int(delta.total(names.SHADOW_REQUESTS, **pair)),
            shadow_errors=int(delta.total(names.SHADOW_ERRORS, **pair)),
            shadow_dropped=int(delta.total(names.SHADOW_DROPPED, **pair)),
            shadow_instances=int(delta.total(names.SHADOW_INSTANCES, **pair)),
            shadow_agreements=int(delta.total(names.SHADOW_AGREEMENTS, **pair)),
            stable_latency=buckets(stable), canary_latency=buckets(canary),
            shadow_classes={side: classes(names.SHADOW_CLASS, **pair, side=side)
                            for side in (names.STABLE_SIDE, names.CANARY_SIDE)},
            answered_classes={names.STABLE_SIDE: classes(names.PREDICTED_CLASS, model=model, version=stable),
                              names.CANARY_SIDE: classes(names.PREDICTED_CLASS, model=model, version=canary)})

    def as_dict(self) -> dict[str, Any]:
        """For the history: the counts (not the histograms)."""
        return {"canary_requests": self.canary_requests, "canary_errors": self.canary_errors,
                "shadow_requests": self.shadow_requests, "shadow_errors": self.shadow_errors,
                "shadow_dropped": self.shadow_dropped, "shadow_instances": self.shadow_instances,
                "shadow_agreements": self.shadow_agreements}


# -- the checks -------------------------------------------------------------------------------------
def error_rate_check(evidence: Evidence, policy: Policy) -> Check:
    runs = evidence.canary_requests + evidence.shadow_requests
    errors = evidence.canary_errors + evidence.shadow_errors
    if runs == 0:
        return Check("error rate", None, policy.max_error_rate, NA, "the canary ran no request")
    return _judge("error rate", errors / runs, policy.max_error_rate, errors / runs <= policy.max_error_rate,
                  f"{errors} of {runs} requests ({evidence.canary_requests} own, {evidence.shadow_requests} shadow)")


def latency_check(evidence: Evidence, policy: Policy) -> Check:
    """Canary p99 <= max(max_p99_ratio x stable p99, p99_floor_seconds), value and threshold in ms."""
    counts = [side[-1][1] if side else 0 for side in (evidence.canary_latency, evidence.stable_latency)]
    if min(counts) < MIN_LATENCY_SAMPLES:
        return Check("p99 latency ms", None, None, NA,
                     f"{int(counts[0])} canary and {int(counts[1])} stable requests timed, fewer than "
                     f"{MIN_LATENCY_SAMPLES} each (--canary-traffic sends the canary its own)")
    canary = histogram_quantile(0.99, evidence.canary_latency)
    stable = histogram_quantile(0.99, evidence.stable_latency)
    limit = max(policy.max_p99_ratio * stable, policy.p99_floor_seconds)
    return _judge("p99 latency ms", canary * 1000, limit * 1000, canary <= limit,
                  f"stable p99 {stable * 1000:.2f} ms; limit max({policy.max_p99_ratio:g} x stable, "
                  f"{policy.p99_floor_seconds * 1000:g} ms)")


def agreement_check(evidence: Evidence, policy: Policy) -> Check:
    if evidence.shadow_instances == 0:
        return Check("agreement", None, policy.min_agreement, NA, "no shadow comparisons (fmnist serve "
                     "--shadow-traffic)", ">=")
    value = evidence.shadow_agreements / evidence.shadow_instances
    return _judge("agreement", value, policy.min_agreement, value >= policy.min_agreement,
                  f"{evidence.shadow_agreements} of {evidence.shadow_instances} shadow instances", ">=")


def divergence_check(evidence: Evidence, policy: Policy) -> Check:
    for source, counts in (("shadow pairs", evidence.shadow_classes), ("answered", evidence.answered_classes)):
        stable, canary = counts[names.STABLE_SIDE], counts[names.CANARY_SIDE]
        if sum(stable) and sum(canary):
            value = js_divergence(stable, canary)
            return _judge("class JS div", value, policy.max_class_divergence,
                          value <= policy.max_class_divergence,
                          f"{source}: stable {sum(stable)}, canary {sum(canary)} instances")
    return Check("class JS div", None, policy.max_class_divergence, NA, "no predicted classes of both versions")


# (wall-clock start, end of the bake) -> the labelled answers of the calls logged in between: read
# when the bake ends (cli/labelled.py joins a server's request log with its feedback).
OutcomeSource = Callable[[float, float], Sequence[LabelledOutcome]]
Outcomes = Sequence[LabelledOutcome] | OutcomeSource


def accuracy_check(outcomes: Sequence[LabelledOutcome], stable: Version, canary: Version, policy: Policy) -> Check:
    """The canary's accuracy on its labelled outcomes may trail stable's on theirs by at most
    policy.max_accuracy_drop; n/a until both have policy.min_labelled labelled answers."""
    mine = {str(v): [o for o in outcomes if str(o.version) == str(v)] for v in (stable, canary)}
    counts = {v: len(found) for v, found in mine.items()}
    if not all(counts.values()):
        return Check("accuracy", None, None, NA, "n/a (no labels)" if not any(counts.values()) else
                     f"n/a (labelled: stable {counts[str(stable)]}, canary {counts[str(canary)]})", ">=")
    if min(counts.values()) < policy.min_labelled:
        return Check("accuracy", None, None, NA, f"n/a (labelled: stable {counts[str(stable)]}, canary "
                     f"{counts[str(canary)]}; {policy.min_labelled} each needed)", ">=")
    accuracy = {v: sum(o.predicted == o.label for o in found) / len(found) for v, found in mine.items()}
    floor = accuracy[str(stable)] - policy.max_accuracy_drop
    return _judge("accuracy", accuracy[str(canary)], floor, accuracy[str(canary)] >= floor,
                  f"stable {accuracy[str(stable)]:.4f} minus {policy.max_accuracy_drop:g}; labelled: stable "
                  f"{counts[str(stable)]}, canary {counts[str(canary)]}", ">=")


def run_checks(evidence: Evidence, policy: Policy, stable: Version, canary: Version,
               outcomes: Sequence[LabelledOutcome] = ()) -> tuple[Check, ...]:
    return (error_rate_check(evidence, policy), latency_check(evidence, policy), agreement_check(evidence, policy),
            divergence_check(evidence, policy), accuracy_check(outcomes, stable, canary, policy))


@dataclass(frozen=True)
class Analysis:
    """A bake's result: the checks, the evidence, and the verdict (pass, fail or inconclusive)."""

    model: str
    stable: Version
    canary: Version
    seconds: float
    required: int  # Bake.requests
    evidence: Evidence
    checks: tuple[Check, ...]

    @property
    def verdict(self) -> str:
        if self.evidence.seen < self.required:
            return INCONCLUSIVE
        return "fail" if any(check.verdict == FAIL for check in self.checks) else "pass"

    @classmethod
    def judged(cls, model: str, stable: Version, canary: Version, seconds: float, bake: Bake, evidence: Evidence,
               policy: Policy, outcomes: Sequence[LabelledOutcome] = ()) -> Analysis:
        """The checks of `evidence` against `policy`, as one bake's result."""
        return cls(model, stable, canary, seconds, bake.requests, evidence,
                   run_checks(evidence, policy, stable, canary, outcomes))

    def lines(self) -> list[str]:
        evidence = self.evidence
        return [f"canary {self.canary} vs stable {self.stable} of {self.model}: {self.seconds:.0f} s bake, "
                f"{evidence.seen} canary requests ({evidence.canary_requests} own, {evidence.shadow_requests} "
                f"shadow, {evidence.shadow_dropped} shadow dropped) of {self.required} wanted",
                *(check.line() for check in self.checks)]


def read_metrics(server: str) -> Snapshot:
    """The metrics of the server at REST `server` (host:port or URL). AnalysisError when they cannot
    be read or are not this project's server's (tensorflow_model_server counts per model only)."""
    text, url = metrics_text(server)
    snapshot = Snapshot.parse(text)
    if not any(name.startswith("fmnist_serving_") for name in snapshot.samples):
        raise AnalysisError(f"{url} has no fmnist_serving_* metrics: canary analysis needs `fmnist serve` "
                            "(tensorflow_model_server counts per model, not per version)")
    return snapshot


def bake_until(seen: Callable[[], int], bake: Bake = Bake(), clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> float:
    """Calls `seen` (the requests the canary has run so far) now, then every bake.poll_seconds,
    until it reaches bake.requests or bake.seconds have passed; returns the seconds elapsed. The
    bake of every evidence source (a server's metrics, a Vertex endpoint's monitoring)."""
    began = clock()
    while True:
        count = seen()
        elapsed = clock() - began
        if count >= bake.requests or elapsed >= bake.seconds:
            return elapsed
        sleep(min(bake.poll_seconds, max(0.0, bake.seconds - elapsed)))


def analyze(server: str, model: str, stable: Version, canary: Version, policy: Policy = Policy(),
            bake: Bake = Bake(), outcomes: Outcomes = (),
            read: Callable[[str], Snapshot] = read_metrics, clock: Callable[[], float] = time.monotonic,
            sleep: Callable[[float], None] = time.sleep, wall: Callable[[], float] = time.time) -> Analysis:
    """Bakes the canary on `server`: reads its metrics now, then every bake.poll_seconds until
    the canary has run bake.requests requests or bake.seconds have passed, and judges the deltas.
    `outcomes`: labelled answers (#24), or an OutcomeSource asked, when the bake ends, for those
    of the calls logged during it. AnalysisError if it cannot measure."""
    began = wall()
    start = read(server)
    latest: list[Evidence] = []

    def seen() -> int:
        latest[:] = [Evidence.between(read(server).minus(start), model, stable, canary)]
        return latest[0].seen
    elapsed = bake_until(seen, bake, clock, sleep)
    labelled = outcomes(began, wall()) if callable(outcomes) else outcomes
    return Analysis.judged(model, stable, canary, elapsed, bake, latest[0], policy, labelled)


# What auto_release measures with: (model, stable, canary, policy, bake, outcomes) -> the bake's
# Analysis; `analyze` on one server (a REST address given to auto_release), or the Vertex one
# (serving/release/vertex_canary.py).
Measure = Callable[[str, Version, Version, Policy, Bake, Outcomes], "Analysis"]


# -- deciding ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """What auto_release did: `action` is PROMOTED, ROLLED_BACK, INCONCLUSIVE (the canary kept) or
    NO_CANARY (nothing to judge); `checks` and `analysis` are the evidence (empty/None without a
    canary); line() is one console line, as the loop prints it."""

    action: str
    model: str
    stable: Version | None
    canary: Version | None
    actor: str
    time: str
    checks: tuple[Check, ...] = ()
    analysis: Analysis | None = None
    note: str = ""

    def line(self) -> str:
        if self.action == NO_CANARY:
            return f"release: no canary to analyze (stable {self.stable})" + (f"; {self.note}" if self.note else "")
        verdicts = ", ".join(f"{c.name} {'-' if c.value is None else _number(c.value)} {c.verdict}"
                             for c in self.checks)
        seen = f"{self.analysis.evidence.seen} requests in {self.analysis.seconds:.0f} s; " if self.analysis else ""
        return (f"release: canary {self.canary} {self.action} (stable {self.stable}): {seen}{verdicts}"
                + (f"; {self.note}" if self.note else ""))

    def evidence(self) -> dict[str, Any]:
        """The history entry's evidence fields."""
        found: dict[str, Any] = {"decision": self.action, "checks": [c.as_dict() for c in self.checks]}
        if self.analysis is not None:
            found.update(bake_seconds=round(self.analysis.seconds, 1), bake_requests=self.analysis.required,
                         evidence=self.analysis.evidence.as_dict())
        if self.note:
            found["note"] = self.note
        return found


def auto_release(release: FileRelease | VertexRelease, server: str | Measure, policy: Policy = Policy(),
                 bake: Bake = Bake(), actor: str = "fmnist release auto", on_inconclusive: str = "keep",
                 outcomes: Outcomes = ()) -> Decision:
    """Analyzes the canary of `release` on `server` (REST host:port of the `fmnist serve` running
    that release; or a Measure, e.g. serving.release.vertex_canary's for a VertexRelease), then promotes
    it (every check passes), rolls it back (any check fails), or on too little evidence does
    `on_inconclusive` (keep: the canary goes on, by default). Every decision but NO_CANARY is
    appended to the release history with its evidence and `actor`.

    For the continuous-training loop, after each push: `print(auto_release(FileRelease(config),
    "127.0.0.1:8501", bake=Bake(seconds=120, requests=300), actor="fmnist watch").line())`.
    Raises ReleaseError (one line) when the metrics cannot be read or the release changed under it.
    """
    if on_inconclusive not in ON_INCONCLUSIVE:
        raise ReleaseError(f"on-inconclusive is one of {', '.join(ON_INCONCLUSIVE)}, got {on_inconclusive!r}")
    state = release.status()

    def decided(action: str, **extra: Any) -> Decision:
        return Decision(action, state.model, state.stable, state.canary, actor,
                        datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), **extra)

    if state.canary is None or state.stable is None:
        return decided(NO_CANARY)
    measure = functools.partial(analyze, server) if isinstance(server, str) else server
    analysis = measure(state.model, state.stable, state.canary, policy, bake, outcomes)
    verdict = analysis.verdict
    action = {"pass": PROMOTED, "fail": ROLLED_BACK}.get(verdict, INCONCLUSIVE)
    note = ""
    if verdict == INCONCLUSIVE and on_inconclusive != "keep":
        action = PROMOTED if on_inconclusive == "promote" else ROLLED_BACK
        note = (f"inconclusive ({analysis.evidence.seen} of {bake.requests} requests): "
                f"--on-inconclusive {on_inconclusive}")
    elif verdict == INCONCLUSIVE:
        note = f"{analysis.evidence.seen} of {bake.requests} requests: canary kept"
    decision = decided(action, checks=analysis.checks, analysis=analysis, note=note)
    if action == PROMOTED:
        release.promote(actor=actor, expect_canary=state.canary, evidence=decision.evidence())
    elif action == ROLLED_BACK:
        release.rollback(actor=actor, expect_canary=state.canary, evidence=decision.evidence())
    else:
        release.record(INCONCLUSIVE, actor, decision.evidence())
    return decision


HISTORY_COLUMNS: Final = ("time", "action", "stable", "canary", "actor", "evidence")


def history_rows(entries: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    """`fmnist release history`'s table rows: one per entry, its checks (or note) in one cell."""
    rows = []
    for entry in entries:
        checks = entry.get("checks") or []
        summary = ", ".join(f"{c['name']} {'-' if c.get('value') is None else _number(c['value'])} {c['verdict']}"
                            for c in checks)
        if entry.get("by") is not None:
            summary = f"by {entry['by']}"
        if entry.get("note"):
            summary = f"{summary}; {entry['note']}" if summary else entry["note"]
        rows.append([str(entry.get("time", "")), str(entry.get("action", "")), _or_dash(entry.get("stable")),
                     _or_dash(entry.get("canary")), str(entry.get("actor", "")), summary])
    return rows


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)

