"""ExampleGen over the production BigQuery table (fmnist.bigquery's layout): one span of it, split
into `train` and `eval` by hash buckets."""

from __future__ import annotations

from tfx import v1 as tfx
from tfx.components.example_gen import utils as example_gen_utils
from tfx.dsl.components.base.base_component import BaseComponent
from tfx.orchestration import data_types
from tfx.proto import range_config_pb2

from fmnist import bigquery, dataset

HASH_BUCKETS = 100  # eval_percent buckets of 100 go to `eval`


def bigquery_example_gen(
    table: str, eval_percent: int,
    range_config: range_config_pb2.RangeConfig | data_types.RuntimeParameter | None = None,
    compiled_span: int | None = None,
) -> BaseComponent:
    """TFX's BigQueryExampleGen reading `image` and `label` of one span of `table`
    (PROJECT.DATASET.TABLE), `eval_percent` % of it into `eval` and the rest into `train`.

    The span is `range_config`'s (a RangeConfig with static_range start = end = N, or a
    RuntimeParameter that gives one at run time); it reaches the query through TFX's
    QueryBasedDriver, which fills `@span_begin_timestamp` (see fmnist.bigquery.query_for_span).
    Without a range_config the driver resolves span 0, which `fmnist bq-load` never writes, and
    a rolling range is refused for queries, so pipelines should pass a static range. The
    LocalDagRunner, BeamDagRunner and Kubeflow (v1) entrypoint run that driver;
    KubeflowV2DagRunner (Vertex) gives only FileBasedExampleGen a driver, so there the
    placeholder would reach BigQuery unfilled (an undeclared query parameter: the job fails).
    For it, `compiled_span` fills the query now, with the driver's own function, instead.

    Why hash buckets, not the file path's stratified hold-out: the file path reads a whole split
    into memory in a fixed file order, so it can pick exactly `eval_holdout` examples, the
    same number per class, with a seed. A query's rows arrive as a parallel Beam PCollection in
    no defined order, with no global view of the labels, so an index- or order-based pick would
    neither be reproducible nor scale. TFX's hash split buckets each example by a hash of its
    own serialized content: deterministic whatever the order or sharding, an example keeps its
    split across runs (identical duplicates land on the same side, so none leaks from train
    into eval), and no shuffle or count is needed. The price: split sizes and class balance are
    `eval_percent` % only in expectation, not exact (binomial noise: at 10 % of a
    60,000-example span, about 0.4 points per class, one standard deviation).
    """
    if not 0 < eval_percent < HASH_BUCKETS:
        raise ValueError(f"eval_percent must be in 1..{HASH_BUCKETS - 1}, got {eval_percent}")
    output_config = tfx.proto.Output(split_config=tfx.proto.SplitConfig(splits=[
        tfx.proto.SplitConfig.Split(name=dataset.TRAIN, hash_buckets=HASH_BUCKETS - eval_percent),
        tfx.proto.SplitConfig.Split(name=dataset.EVAL, hash_buckets=eval_percent),
    ]))
    query = bigquery.query_for_span(table)
    if compiled_span is not None:
        query, range_config = example_gen_utils.get_query_for_span(query, compiled_span), None
    return tfx.extensions.google_cloud_big_query.BigQueryExampleGen(
        query=query, output_config=output_config, range_config=range_config)
