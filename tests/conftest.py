import gc
import importlib
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, settings

from fmnist import tf_env

tf_env.configure()

# Parallel workers (make test): each worker's TensorFlow processes (its tests', and the servers
# and commands they start, which inherit the variable) get an intra-op pool of their share of the
# cores. TF's default, a pool as large as the machine in every process, oversubscribes them: two
# concurrent 6-epoch sample fits took 22.5 s each, 11.5 s with one intra-op thread each, the time
# one fit alone takes with the default (2-core AMD EPYC, 2026-12-06).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

# Property-based tests (tests/test_fuzz_*.py): a bounded number of examples by default, so the
# suite stays fast; `make fuzz` runs them with the `fuzz` profile. Derandomized in CI: a failure
# is reproducible from the same commit; the fuzz profile explores new examples each run.
# Every case talks to a live server or writes files: no per-example deadline, and module fixtures
# (one server for all examples) are what these tests want.
_FUZZ = dict(print_blob=True, deadline=None,
             suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("ci", max_examples=60, derandomize=True, **_FUZZ)
settings.register_profile("fuzz", max_examples=3000, **_FUZZ)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO / "data" / "sample"
# The full official files: beside the checkout in CI (../shared), or where `make run` fetched them.
FULL_DATA_CANDIDATES = [REPO.parent / "shared" / "data" / "fashion-mnist", REPO / "data" / "raw"]
# Test files whose histories start from one session fixture's pipeline run (tests/e2e/conftest.py),
# by that fixture: under `make test`'s parallel workers they run on one worker, one after the
# other, so the run is made once. Collection fails if a file uses such a fixture unlisted.
SHARED_RUN_FILES = {"tests/e2e/test_evaluation.py": "first_sample_run",
                    "tests/e2e/test_pipeline.py": "first_sample_run"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` (make test), refined: a test file runs whole on one worker, in order (its
    module fixtures build on each other), and the files of SHARED_RUN_FILES that share a run go
    to one worker together. (xdist 3.8's `--dist loadgroup` does not group under pytest 9.2: the
    tests of one `xdist_group` mark ran on both workers.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedRunScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return SHARED_RUN_FILES.get(path, path)
    return SharedRunScheduling(config, log)


def _file(item) -> str:
    return item.nodeid.split("::")[0]  # as xdist's loadfile scopes it: tests/...py


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture in set(SHARED_RUN_FILES.values()) & set(item.fixturenames):
            if SHARED_RUN_FILES.get(_file(item)) != fixture:
                raise pytest.UsageError(f"{_file(item)} uses the shared run `{fixture}`: list it in "
                                        "SHARED_RUN_FILES (tests/conftest.py)")
    # Workers take files in this order: the long ones first (end-to-end, then by their number of
    # pipeline or slow tests), so the run ends on short files and both workers finish together. (In
    # collection order the 70-second Evaluator file, tests/test_tfma_metrics.py, started last.)
    heavy = Counter(_file(item) for item in items
                    if item.get_closest_marker("pipeline") or item.get_closest_marker("slow"))
    # stable: each file's tests keep their order
    items.sort(key=lambda item: (not _file(item).startswith("tests/e2e/"), -heavy[_file(item)]))


@pytest.fixture(scope="module", autouse=True)
def _old_objects_frozen():
    """Each test file starts with what is alive then (imports, session fixtures; the previous file's
    module fixtures are torn down and collected first) moved out of the garbage collector's reach:
    its full collections then scan what the file itself makes, not the whole TensorFlow/TFX heap.
    Six serving and evaluation files, one process: 22.0 s of collections, 16.2 s with this."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def training(sample_dir, tmp_path_factory) -> Path:
    """The sample's train split statistics, as StatisticsGen writes them (labels as `label`): what
    `fmnist monitor --training-statistics` compares logged windows with."""
    import numpy as np
    import tensorflow_data_validation as tfdv

    from fmnist.dataset import read_split
    from monitoring.examples import ServedExamples
    from monitoring.statistics import window_statistics

    schema = tfdv.load_schema_text(str(REPO / "schema" / "schema.pbtxt"))
    raw = read_split(sample_dir, "train")
    examples = ServedExamples(raw.images.reshape(len(raw.labels), -1).astype(np.int64), raw.labels.astype(np.int64),
                              np.zeros(len(raw.labels), np.int64), np.zeros(len(raw.labels), np.int64))
    path = tmp_path_factory.mktemp("training") / "FeatureStats.pb"
    path.write_bytes(window_statistics(examples, schema).SerializeToString())
    return path


@pytest.fixture(scope="session")
def full_data_dir() -> Path:
    for candidate in FULL_DATA_CANDIDATES:
        if (candidate / "train-images-idx3-ubyte.gz").is_file():
            return candidate
    pytest.skip("full Fashion-MNIST files not found (run `fmnist fetch`)")


@pytest.fixture(scope="session")
def import_benchmark():
    """Imports a benchmark script as a module: benchmarks run as scripts, so their directory goes on
    sys.path (`common` is a top-level module there)."""
    benchmarks = str(Path(__file__).resolve().parent.parent / "benchmarks")
    sys.path.insert(0, benchmarks)
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(benchmarks)


@pytest.fixture(scope="session")
def screenshot():
    """Renders an HTML file in headless Chromium and returns the screenshot as a grey-level array
    [height, width]; skips the test where Chromium is not installed (scripts/setup_browser.sh)."""
    import shutil
    import subprocess
    import tempfile

    import numpy as np
    from PIL import Image

    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("headless Chromium not installed (scripts/setup_browser.sh installs it)")

    def take(page: Path, width: int = 1200, height: int = 3000) -> np.ndarray:
        with tempfile.TemporaryDirectory() as scratch:
            shot = Path(scratch) / "shot.png"
            # The network flags keep Chromium from calling Google's hosts from a closed network.
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update", "--disable-sync",
                            f"--user-data-dir={scratch}/profile", f"--window-size={width},{height}",
                            f"--screenshot={shot}", Path(page).resolve().as_uri()],
                           check=True, capture_output=True, timeout=120)
            return np.asarray(Image.open(shot).convert("L"))
    return take


@pytest.fixture(scope="module")
def rest(server):
    """An HTTP client on the module's `server` fixture (a RunningServer): its REST port."""
    import httpx

    with httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def predict_cli(sample_dir):
    """Runs `fmnist predict test:0-N ...` in a fresh interpreter: (exit code, output lines, stderr);
    the last line says whether TensorFlow's runtime was loaded."""
    import subprocess
    import sys

    def run(count: int, *args: str) -> tuple[int, list[str], str]:
        argv = ["predict", f"test:0-{count - 1}", "--data-dir", str(sample_dir), *args]
        script = (f"import sys\nfrom cli.main import main\ncode = main({argv!r})\n"
                  "print('TF runtime loaded:', 'tensorflow.python' in sys.modules)\nsys.exit(code)\n")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        return done.returncode, done.stdout.strip().splitlines(), done.stderr
    return run


class TransformedSample(NamedTuple):
    transform_dir: Path  # what TFX's Transform writes: the transform graph and the raw metadata
    split: Any  # modules.data.Split: the sample's train images, transformed


def _built_once(tmp_path_factory, name: str, build) -> Path:
    """A directory `build(directory)` fills, made once per session, whatever the number of workers:
    under `make test`'s parallel workers the first worker to ask builds it (the others wait on a
    lock) in the directory all workers share. Session fixtures that train or transform are what
    both workers would otherwise repeat (about 30 s of work each)."""
    import fcntl
    import shutil

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the session's, not older ones'
    target = shared / f"built-{name}"
    with open(shared / f"built-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_dir():
            partial = shared / f"built-{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            build(partial)
            partial.rename(target)  # whole or absent: a worker that failed half-way leaves no target
    return target


@pytest.fixture(scope="session")
def transformed_sample(tmp_path_factory, sample_dir) -> TransformedSample:
    """The sample's train split through the project's Transform (preprocessing_fn's analyzers run
    on it), as the Trainer receives it."""
    import numpy as np

    from modules import data

    work = _built_once(tmp_path_factory, "transformed-sample", lambda out: _transform_sample(sample_dir, out))
    with np.load(work / "split.npz") as split:
        return TransformedSample(work / "transform", data.Split(images=split["images"], labels=split["labels"]))


def _transform_sample(sample_dir: Path, work: Path) -> None:
    import apache_beam as beam
    import numpy as np
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

    from fmnist import features
    from fmnist.dataset import read_split
    from modules.preprocessing import preprocessing_fn

    raw = read_split(sample_dir, "train")
    instances = [{features.IMAGE_KEY: image, features.LABEL_KEY: int(label)}
                 for image, label in zip(raw.images, raw.labels, strict=True)]
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec({
        features.IMAGE_KEY: tf.io.FixedLenFeature([features.NUM_PIXELS], tf.int64),
        features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }))
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(work / "tft-tmp")):
        transform_fn = (pipeline | beam.Create(instances), metadata) | tft_beam.AnalyzeDataset(preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(str(work / "transform"))
    # The raw schema TFX's Transform writes beside the transform graph (the signatures parse with it).
    metadata_io.write_metadata(metadata, str(work / "transform" / tft.TFTransformOutput.RAW_METADATA_DIR))
    tf_transform_output = tft.TFTransformOutput(str(work / "transform"))
    transformed = tf_transform_output.transform_raw_features({
        features.IMAGE_KEY: tf.constant(raw.images, tf.int64), features.LABEL_KEY: tf.constant(raw.labels, tf.int64)})
    np.savez(work / "split.npz",
             images=transformed[features.transformed_name(features.IMAGE_KEY)].numpy().astype(np.float32),
             labels=transformed[features.transformed_name(features.LABEL_KEY)].numpy().astype(np.int64))


def _train_and_export(transformed_sample: TransformedSample, export_dir: Path, labels=None) -> None:
    """Trains the project's model for 15 steps on the sample (with `labels` instead of the true
    ones, if given) in float32 whatever the CPU, and exports it with the project's signatures."""
    import tensorflow_transform as tft

    from modules import data, signatures, trainer
    from modules.model import HParams

    split = transformed_sample.split
    if labels is not None:
        split = data.Split(images=split.images, labels=labels)
    model = trainer.fit(HParams.tuned({"epochs": 1, "batch_size": 64}), split, split, seed=0, max_steps=15,
                        precision="float32").model
    signatures.export_saved_model(model, tft.TFTransformOutput(str(transformed_sample.transform_dir)),
                                  str(export_dir))


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory, transformed_sample) -> Path:
    """A SavedModel exported by the project's own code (Transform analyzers, Trainer fit,
    signatures), trained for a few steps on the sample: what the Pusher would push. It trains in
    float32 whatever the CPU, so the tests that use it see the same numbers everywhere."""
    return _built_once(tmp_path_factory, "exported-model",
                       lambda out: _train_and_export(transformed_sample, out / "model")) / "model"


@pytest.fixture(scope="session")
def exported_model_base(tmp_path_factory, exported_model) -> Path:
    """A model base path with exported_model as version 1, for servers that only read it."""
    import shutil

    base = tmp_path_factory.mktemp("served") / "models"
    shutil.copytree(exported_model, base / "1")
    return base


@pytest.fixture(scope="module")
def fuzzed_server(exported_model_base):
    """The project's server on exported_model_base with a 1 MiB request bound, for the fuzz tests."""
    from serving.server.process import RunningServer, ServerOptions

    running = RunningServer(ServerOptions(base_path=str(exported_model_base), rest_port=0, grpc_port=0,
                                          host="127.0.0.1", max_request_bytes=1 << 20)).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def disagreeing_model(tmp_path_factory, transformed_sample) -> Path:
    """A real SavedModel with the project's signatures that disagrees with exported_model: trained
    the same way on labels shifted by one class (c -> c+1 mod 10), as a labelling error upstream
    would, so it predicts a neighbour of what exported_model predicts: a canary to roll back."""
    from fmnist import features

    shifted = (transformed_sample.split.labels + 1) % features.NUM_CLASSES
    return _built_once(tmp_path_factory, "disagreeing-model",
                       lambda out: _train_and_export(transformed_sample, out / "model", shifted)) / "model"
