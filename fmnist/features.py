"""The one source of truth for Fashion-MNIST feature names, class names and shapes.

Pure Python on purpose: the pipeline, the model code, the serving code and the clients all
import it, and none of them should pay for a TensorFlow import to learn a feature name.
"""

from typing import Final

IMAGE_KEY: Final = "image"
LABEL_KEY: Final = "label"
ID_KEY: Final = "id"  # unlabelled examples only (batch inference): "<file name>:<row>", to join predictions back

IMAGE_HEIGHT: Final = 28
IMAGE_WIDTH: Final = 28
IMAGE_SHAPE: Final = (IMAGE_HEIGHT, IMAGE_WIDTH)
NUM_PIXELS: Final = IMAGE_HEIGHT * IMAGE_WIDTH
PIXEL_MIN: Final = 0
PIXEL_MAX: Final = 255

# Index = label id, in the order Zalando published them.
CLASS_NAMES: Final = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES: Final = len(CLASS_NAMES)
# For chart axes and table headers, same order.
SHORT_CLASS_NAMES: Final = ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                            "Boot")


# The serving contract: modules/signatures.py exports it, serving/ and its clients rely on it.
MODEL_NAME: Final = "fashion_mnist"  # the name clients ask for, unless a model config says otherwise
SERVING_DEFAULT: Final = "serving_default"  # float32 `images` [N, 28, 28] of grey levels
TF_EXAMPLE_SIGNATURE: Final = "serving_tf_example"  # serialized tf.Example `examples` [N]
CLASSIFY_SIGNATURE: Final = "classification"  # TF Serving Classify API: `inputs` -> classes, scores
CLASSIFY_METHOD_NAME: Final = "tensorflow/serving/classify"
IMAGES_INPUT: Final = "images"
PROBABILITIES_OUTPUT: Final = "probabilities"  # float32 [N, 10]
CLASS_ID_OUTPUT: Final = "class_id"  # int64 [N], the argmax of the probabilities
# float32 `images` [N, 28, 28] -> attributions [N, 28, 28] (integrated gradients of the predicted
# class's logit w.r.t. the grey levels, from a black image), logits [N, 10], probabilities, class_id.
EXPLAIN_SIGNATURE: Final = "explain"
ATTRIBUTIONS_OUTPUT: Final = "attributions"
LOGITS_OUTPUT: Final = "logits"


def transformed_name(key: str) -> str:
    """Name of a feature after Transform (TFX template convention)."""
    return f"{key}_xf"

# TF Serving's SavedModel warmup: PredictionLog TFRecords it replays before a version is AVAILABLE
# (https://www.tensorflow.org/tfx/serving/saved_model_warmup). Its loader refuses more records.
WARMUP_FILE: Final = "assets.extra/tf_serving_warmup_requests"
MAX_WARMUP_RECORDS: Final = 1000

# Version labels of a release (TF Serving's ModelServerConfig.version_labels): requests without a
# version or label go to STABLE; a new push is served as CANARY until promoted or rolled back.
STABLE_LABEL: Final = "stable"
CANARY_LABEL: Final = "canary"
# The release (TF Serving ModelServerConfig with the labels above), beside the push directory.
RELEASE_CONFIG_FILE: Final = "models.config"
