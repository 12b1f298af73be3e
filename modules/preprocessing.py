"""TensorFlow Transform preprocessing_fn, referenced by the pipeline as
`modules.preprocessing.preprocessing_fn`.

Pixels are standardised with the mean and standard deviation of *all training pixels*, a
full-pass statistic that Transform computes once and bakes into the serving graph, so serving
applies exactly the training preprocessing.
"""


import tensorflow as tf
import tensorflow_transform as tft

from fmnist import features


def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Takes the raw features (IMAGE_KEY: int64 grey levels [N, 784], LABEL_KEY: int64 [N]);
    returns the transformed ones, named by features.transformed_name: float32 images
    standardised over all training pixels [N, 784] and the label unchanged."""
    pixels = tf.cast(inputs[features.IMAGE_KEY], tf.float32) / float(features.PIXEL_MAX)
    return {
        # elementwise=False: one mean/std over every pixel of every training image.
        features.transformed_name(features.IMAGE_KEY): tft.scale_to_z_score(pixels),
        features.transformed_name(features.LABEL_KEY): inputs[features.LABEL_KEY],
    }
