"""TFDV statistics of a window of served examples, computed in this process.

generate_statistics_in_memory is TFDV's own statistics code (the generators StatisticsGen runs)
on one Arrow record batch, without Beam: 10,000 images take about a second, where a DirectRunner
pipeline over a TFRecord file (tfdv.generate_statistics_from_tfrecord) spends longer starting
than computing (benchmarks/monitoring.py measures both). The schema goes into the options, as
StatisticsGen gets it, so `label` is categorical (rank histograms) on both sides of a comparison.
"""

from __future__ import annotations

import tensorflow_data_validation as tfdv
from tensorflow_data_validation.statistics import stats_impl
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from monitoring.examples import PREDICTED_KEY, ServedExamples

Statistics = statistics_pb2.DatasetFeatureStatisticsList


def window_statistics(examples: ServedExamples, schema: schema_pb2.Schema) -> Statistics:
    """Statistics of `image` and of the predicted class (as `label`) over the window's images."""
    return stats_impl.generate_statistics_in_memory(examples.record_batch(), tfdv.StatsOptions(schema=schema))


def without_feature(statistics: Statistics, name: str = PREDICTED_KEY) -> Statistics:
    """A copy without one feature: the window as the SERVING environment sees it (no label)."""
    copy = Statistics()
    copy.CopyFrom(statistics)
    for dataset in copy.datasets:
        kept = [f for f in dataset.features if ".".join(f.path.step) != name]
        del dataset.features[:]
        dataset.features.extend(kept)
    return copy


def feature_statistics(statistics: Statistics, name: str) -> statistics_pb2.FeatureNameStatistics | None:
    """One feature's statistics in the first dataset (None if absent)."""
    for feature in statistics.datasets[0].features if statistics.datasets else ():
        if ".".join(feature.path.step) == name or feature.name == name:
            return feature
    return None


def grey_level_histogram(statistics: Statistics, name: str) -> list[tuple[float, float, float]]:
    """The standard histogram of a numeric feature's values: (low, high, share) per bucket."""
    feature = feature_statistics(statistics, name)
    if feature is None:
        return []
    histogram = next((h for h in feature.num_stats.histograms if h.type == h.STANDARD), None)
    if histogram is None:
        return []
    total = sum(b.sample_count for b in histogram.buckets) or 1.0
    return [(b.low_value, b.high_value, b.sample_count / total) for b in histogram.buckets]


def class_shares(statistics: Statistics, name: str, classes: int) -> list[float]:
    """The share of each class id 0..classes-1 of a categorical feature (its rank histogram)."""
    feature = feature_statistics(statistics, name)
    counts = [0.0] * classes
    if feature is not None:
        for bucket in feature.string_stats.rank_histogram.buckets:
            if bucket.label.isdigit() and int(bucket.label) < classes:
                counts[int(bucket.label)] = bucket.sample_count
    total = sum(counts) or 1.0
    return [count / total for count in counts]
