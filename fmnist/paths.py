"""Where things live by default: the one place every command, runner and server takes them from.

The defaults are relative paths, shown as such in `--help`, and anchored at the project root
(the checkout, or the image's workdir) by `anchored`, so `fmnist report` finds what
`make run` wrote from whatever directory it is typed in. A path a user gives is left as given:
relative to the directory the command runs in.
"""

from __future__ import annotations

from pathlib import Path

# fmnist/ sits in the project root in a checkout (pip install -e .) and in the image's workdir.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

PIPELINE_NAME = "fashion-mnist"
DATA_DIR = Path("data/raw")  # the four official files (`fmnist fetch`)
SAMPLE_DIR = Path("data/sample")  # the committed 1,300-image sample (`fmnist sample`)
LANDING_DIR = Path("data/landing")  # landed spans, span-N/ (`fmnist land`)
OUTPUT_DIR = Path("outputs")  # one folder per pipeline name below
PIPELINE_ROOT = "pipeline_root"
SERVING_MODEL = "serving_model"  # the Pusher's numbered versions
MODELS_CONFIG = "models.config"  # the release file (`fmnist release`) the server re-reads
METADATA_FILE = "metadata.sqlite"  # the local runner's ML Metadata store, beside pipeline_root

# The production server's binary: `fmnist serve` runs it when it is on PATH, and the pipeline's
# serving validation starts it the same way.
TF_SERVING_BINARY = "tensorflow_model_server"


def anchored(path: Path | str) -> Path:
    """`path` if absolute, else the same path below the project root."""
    path = Path(path)
    return path if path.is_absolute() else PROJECT_ROOT / path


def pipeline_output(pipeline_name: str = PIPELINE_NAME, output_dir: Path = OUTPUT_DIR) -> Path:
    """The folder of one pipeline's outputs (relative when `output_dir` is): outputs/fashion-mnist."""
    return Path(output_dir) / pipeline_name


DEFAULT_PIPELINE_ROOT = pipeline_output() / PIPELINE_ROOT
DEFAULT_SERVING_MODEL_DIR = pipeline_output() / SERVING_MODEL
DEFAULT_MODELS_CONFIG = pipeline_output() / MODELS_CONFIG
