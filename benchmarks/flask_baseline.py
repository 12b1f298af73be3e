"""The hand-rolled prediction service the serving benchmark compares against: a Flask app that
loads the model once and calls Keras `model.predict` on every request (no batching, threaded
development server). Not used anywhere else.

    python benchmarks/flask_baseline.py --model-dir outputs/fashion-mnist/serving_model/<version> --port 5000
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # quieter than tf_env's default: a benchmark subject

from fmnist import tf_env

tf_env.configure()


def keras_model(model_dir: str):
    """A tf_keras Model around the exported signature, so the app can call `model.predict`."""
    import tensorflow as tf
    import tf_keras

    loaded = tf.saved_model.load(model_dir)

    class Signature(tf_keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.loaded = loaded  # the signature's variables live as long as the layer

        def call(self, images):
            return self.loaded.signatures["serving_default"](images=images)["probabilities"]

    images = tf_keras.Input((28, 28), dtype=tf.float32)
    return tf_keras.Model(images, Signature()(images))


def create_app(model_dir: str):
    import numpy as np
    from flask import Flask, jsonify, request

    model = keras_model(model_dir)
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        images = np.asarray(request.get_json()["instances"], dtype=np.float32)
        return jsonify({"predictions": model.predict(images, verbose=0).tolist()})

    @app.get("/health")
    def health():
        return "ok"

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    create_app(args.model_dir).run(host="127.0.0.1", port=args.port, threaded=True)
