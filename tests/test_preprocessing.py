"""preprocessing_fn through real TensorFlow Transform (Beam) on the sample's real images."""

import numpy as np
import pytest
import tensorflow as tf

from fmnist import features
from fmnist.dataset import read_split
from modules.preprocessing import preprocessing_fn

tft_beam = pytest.importorskip("tensorflow_transform.beam")


def test_pixels_are_standardised_with_training_statistics(sample_dir, tmp_path):
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    raw = read_split(sample_dir, "train")
    instances = [{features.IMAGE_KEY: image, features.LABEL_KEY: int(label)}
                 for image, label in zip(raw.images[:200], raw.labels[:200], strict=False)]
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec({
        features.IMAGE_KEY: tf.io.FixedLenFeature([features.NUM_PIXELS], tf.int64),
        features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }))
    with tft_beam.Context(temp_dir=str(tmp_path)):
        (transformed, _), _ = (instances, metadata) | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)

    images = np.stack([row[features.transformed_name(features.IMAGE_KEY)] for row in transformed])
    labels = [row[features.transformed_name(features.LABEL_KEY)] for row in transformed]
    assert images.shape == (200, features.NUM_PIXELS)
    assert images.mean() == pytest.approx(0.0, abs=1e-4)
    assert images.std() == pytest.approx(1.0, abs=1e-3)
    assert labels == raw.labels[:200].tolist()
    # An order-preserving map of the raw pixels: the darkest pixel stays the darkest.
    assert np.argmin(images[0]) == np.argmin(raw.images[0])
