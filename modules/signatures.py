"""Serving signatures that embed the Transform graph, and the SavedModel export.

- `serving_default`: raw grey levels, float32 [N, 28, 28] -> probabilities [N, 10],
  class_id [N], class_name [N]. JSON-friendly for REST `:predict`.
- `serving_tf_example`: serialized tf.Example [N] -> probabilities (TFMA uses it).
- `classification`: TF Serving's Classify API shape: `inputs` (serialized tf.Example) ->
  `classes` [N, 10] class names and `scores` [N, 10].
- `explain`: raw grey levels `images` [N, 28, 28] -> `attributions` [N, 28, 28], integrated
  gradients (Sundararajan et al. 2017) of the predicted class's logit with respect to the grey
  levels, from a black image (all zeros) along the straight path, trapezoid rule over
  `explain_steps` intervals; plus `logits` [N, 10], `probabilities` [N, 10] and `class_id` [N]
  as serving_default gives them. Completeness: attributions[i].sum() approximates
  logits[i, c] - logits(black)[c], the integration error shrinking as explain_steps grows.
"""

from __future__ import annotations

import os

import tensorflow as tf
import tensorflow_transform as tft
from tensorflow.core.protobuf import saved_model_pb2

# Not exported by TensorFlow's public API; it is what tf.saved_model.save itself calls (TF 2.16).
from tensorflow.python.saved_model import fingerprinting_utils

from fmnist import features
from fmnist.features import (
    ATTRIBUTIONS_OUTPUT,
    CLASS_ID_OUTPUT,
    CLASSIFY_METHOD_NAME,
    CLASSIFY_SIGNATURE,
    EXPLAIN_SIGNATURE,
    IMAGES_INPUT,
    LOGITS_OUTPUT,
    PROBABILITIES_OUTPUT,
    SERVING_DEFAULT,
    TF_EXAMPLE_SIGNATURE,
)
from modules import precision
from modules.config import DEFAULT_EXPLAIN_STEPS

# Interpolated images in one gradient pass of `explain`: bounds a request's memory (1024 instances
# x 33 path points would otherwise be 34k images through the CNN at once, several GB of activations).
EXPLAIN_ROWS_PER_PASS = 4096


def _serving_feature_spec(tf_transform_output: tft.TFTransformOutput) -> dict:
    spec = tf_transform_output.raw_feature_spec()
    spec.pop(features.LABEL_KEY)
    return spec


def _logits_function(model):
    """The model's logits [N, 10] for transformed images [N, 784]: its output layer is a Dense with
    a softmax (modules.model.build_model), so the logits are that layer's kernel and bias applied
    to what it receives. Integrated gradients explain a logit: the softmax couples the classes
    and saturates, so its gradients would mostly say how sure the model is, not why."""
    import tf_keras as keras

    # By output name, not model.layers[-1]: attributes like tft_layer join the model's layers.
    head = model.get_layer(model.output_names[0])
    if not (isinstance(head, keras.layers.Dense) and head.activation is keras.activations.softmax):
        raise ValueError(f"the explain signature needs a model ending in a softmax Dense layer, got {head.name}")
    # Shares the model's layers and variables: nothing new is saved.
    hidden = keras.Model(model.inputs, head.input)

    def logits(transformed):
        return tf.matmul(hidden(transformed, training=False), head.kernel) + head.bias
    return logits


def integrated_gradients(logits_fn, grey: tf.Tensor, class_id: tf.Tensor, steps: int) -> tf.Tensor:
    """Integrated gradients of logits_fn(.)[i, class_id[i]] at grey levels `grey` [N, 784] from
    the black baseline (zeros): grey * the trapezoid-rule mean of the gradients at the steps + 1
    points alpha * grey, alpha = 0, 1/steps, ..., 1. Returns float32 [N, 784].

    The path points of many images go through logits_fn in one batch and one tape: the gradient
    of the sum of the chosen logits is each row's own gradient because rows do not interact (the
    model runs in inference mode). Images are taken EXPLAIN_ROWS_PER_PASS // (steps + 1) at a
    time, in as few equal passes as that allows (one for a typical request)."""
    points = steps + 1
    alphas = tf.linspace(0.0, 1.0, points)
    weights = tf.concat([[0.5], tf.ones([steps - 1]), [0.5]], axis=0) / steps  # trapezoid rule
    count = tf.shape(grey)[0]
    passes = -(-count // max(1, EXPLAIN_ROWS_PER_PASS // points))
    per_pass = -(-count // passes)
    pad = passes * per_pass - count  # < passes rows of zeros, dropped at the end

    def one_pass(chunk):
        images, classes = chunk
        path = tf.reshape(alphas[:, tf.newaxis, tf.newaxis] * images, [-1, features.NUM_PIXELS])
        with tf.GradientTape() as tape:
            tape.watch(path)
            chosen = tf.gather(logits_fn(path), tf.tile(classes, [points]), batch_dims=1)
        gradients = tf.reshape(tape.gradient(chosen, path), [points, -1, features.NUM_PIXELS])
        return images * tf.tensordot(weights, gradients, axes=1)

    chunks = (tf.reshape(tf.pad(grey, [[0, pad], [0, 0]]), [passes, per_pass, features.NUM_PIXELS]),
              tf.reshape(tf.pad(class_id, [[0, pad]]), [passes, per_pass]))
    attributions = tf.map_fn(one_pass, chunks, fn_output_signature=tf.float32)
    return tf.reshape(attributions, [-1, features.NUM_PIXELS])[:count]


def make_signatures(model, tf_transform_output: tft.TFTransformOutput,
                    explain_steps: int = DEFAULT_EXPLAIN_STEPS) -> dict:
    """The signatures of this module's docstring, by name; explain_steps (>= 1) is baked into
    `explain`. Tracks the Transform layer on `model` as `tft_layer`."""
    if explain_steps < 1:
        raise ValueError(f"explain_steps must be at least 1, got {explain_steps}")
    # Tracked on the model so the Transform assets are saved with it.
    model.tft_layer = tf_transform_output.transform_features_layer()
    feature_spec = _serving_feature_spec(tf_transform_output)
    class_names = tf.constant(features.CLASS_NAMES)
    image_xf = features.transformed_name(features.IMAGE_KEY)
    logits_from_transformed = _logits_function(model)
    images_spec = tf.TensorSpec([None, *features.IMAGE_SHAPE], tf.float32, name=IMAGES_INPUT)

    def transform(pixels):
        return model.tft_layer({features.IMAGE_KEY: pixels})[image_xf]

    def probabilities_from_raw(raw_features):
        transformed = model.tft_layer(raw_features)
        return model(transformed[image_xf], training=False)

    def probabilities_from_examples(serialized):
        return probabilities_from_raw(tf.io.parse_example(serialized, feature_spec))

    def grey_levels(images):
        """[N, 28, 28] float grey levels -> [N, 784] int64, what the Transform takes."""
        return tf.cast(tf.round(tf.reshape(images, [-1, features.NUM_PIXELS])), tf.int64)

    def transform_as_affine():
        """The Transform's image map as offset + slope * grey level [784] each, read off the
        layer at both ends of the grey range. Its graph casts the int64 grey levels to float
        first, so no gradient reaches the raw pixels through it; rebuilding the map from the
        layer's own output keeps the analyzer's statistics in one place (the Transform graph)."""
        ends = tf.constant([[features.PIXEL_MIN] * features.NUM_PIXELS, [features.PIXEL_MAX] * features.NUM_PIXELS],
                           tf.int64)
        transformed = transform(ends)
        slope = (transformed[1] - transformed[0]) / float(features.PIXEL_MAX - features.PIXEL_MIN)
        return transformed[0] - slope * features.PIXEL_MIN, slope

    @tf.function(input_signature=[images_spec])
    def serve_images(images):
        probabilities = probabilities_from_raw({features.IMAGE_KEY: grey_levels(images)})
        class_id = tf.argmax(probabilities, axis=1)
        return {
            PROBABILITIES_OUTPUT: probabilities,
            CLASS_ID_OUTPUT: class_id,
            "class_name": tf.gather(class_names, class_id),
        }

    @tf.function(input_signature=[images_spec])
    def explain(images):
        pixels = grey_levels(images)
        transformed = transform(pixels)
        offset, slope = transform_as_affine()
        grey = tf.cast(pixels, tf.float32)
        # The rebuilt map is exact only for an elementwise affine Transform (preprocessing_fn:
        # /255 then z-score); should that change, fail the request rather than explain another model.
        exact = tf.debugging.assert_near(offset + slope * grey, transformed, rtol=1e-4, atol=1e-4, message=(
            "explain: the Transform is not an elementwise affine map of the grey levels; "
            "integrated gradients need its gradient"))
        with tf.control_dependencies([exact]):
            probabilities = model(transformed, training=False)
        class_id = tf.argmax(probabilities, axis=1)
        attributions = integrated_gradients(lambda g: logits_from_transformed(offset + slope * g),
                                            grey, class_id, explain_steps)
        return {
            ATTRIBUTIONS_OUTPUT: tf.reshape(attributions, [-1, *features.IMAGE_SHAPE]),
            LOGITS_OUTPUT: logits_from_transformed(transformed),
            PROBABILITIES_OUTPUT: probabilities,
            CLASS_ID_OUTPUT: class_id,
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_examples(serialized):
        return {PROBABILITIES_OUTPUT: probabilities_from_examples(serialized)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(serialized):
        scores = probabilities_from_examples(serialized)
        classes = tf.tile(class_names[tf.newaxis, :], [tf.shape(scores)[0], 1])
        return {"classes": classes, "scores": scores}

    return {
        SERVING_DEFAULT: serve_images,
        TF_EXAMPLE_SIGNATURE: serve_tf_examples,
        CLASSIFY_SIGNATURE: classify,
        EXPLAIN_SIGNATURE: explain,
    }


def mark_classify_signature(export_dir: str) -> None:
    """tf.saved_model.save labels every signature as Predict; TF Serving's Classify API only
    accepts signatures whose method_name is the classify one, so rewrite that one field.

    The rewrite changes saved_model.pb, so fingerprint.pb is written again from the final file:
    a stale one would identify a different model (its checksum and signature hash) to tools and
    model registries that compare fingerprints."""
    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as stream:
        saved_model.ParseFromString(stream.read())
    for meta_graph in saved_model.meta_graphs:
        meta_graph.signature_def[CLASSIFY_SIGNATURE].method_name = CLASSIFY_METHOD_NAME
    with tf.io.gfile.GFile(path, "wb") as stream:
        stream.write(saved_model.SerializeToString())
    fingerprinting_utils.write_fingerprint(export_dir)


def export_saved_model(model, tf_transform_output: tft.TFTransformOutput, export_dir: str,
                       explain_steps: int = DEFAULT_EXPLAIN_STEPS) -> None:
    """Writes `model` as a SavedModel to export_dir, with the signatures of this module's
    docstring (the Transform graph from tf_transform_output inside them, its assets copied
    alongside; `explain` integrating over explain_steps intervals) and a fingerprint.pb that
    matches the saved_model.pb on disk. Tracks the Transform layer on the exported model as
    `tft_layer`.

    A model trained in bfloat16 (modules.precision) is exported as its float32 copy: every
    signature computes and returns float32, on any server and any CPU, and the ServingValidator's
    agreement checks hold. The copy carries no optimizer; modules.warm_start reads it all the same."""
    if precision.computes_in_bf16(model):
        model = precision.float32_copy(model)
    tf.saved_model.save(model, export_dir, signatures=make_signatures(model, tf_transform_output, explain_steps))
    mark_classify_signature(export_dir)
