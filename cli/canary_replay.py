"""The canary's answers to replayed instances, for the Vertex canary analysis
(serving/release/vertex_canary.py): a :predict on an endpoint cannot pick its deployed model, so the job
loads the canary's SavedModel from its Model Registry artifact_uri (gs://..., read by TensorFlow's GCS
filesystem) and scores the instances stable answered through its `serving_default` signature,
as a client of the endpoint would be answered. TensorFlow loads only when a replay runs; this
module sits in cli/ because serving/ never imports TensorFlow or the model code."""

from __future__ import annotations

from typing import Any

import numpy as np

from fmnist import tf_env


def artifact_uri(endpoint: Any, deployed_model_id: str) -> str:
    """The Model Registry artifact_uri of deployed model `deployed_model_id` of `endpoint` (an
    aiplatform.Endpoint). KeyError when the endpoint no longer deploys it."""
    from google.cloud import aiplatform

    deployed = {model.id: model for model in endpoint.list_models()}
    if deployed_model_id not in deployed:
        raise KeyError(f"{endpoint.resource_name} deploys no model {deployed_model_id}")
    return aiplatform.Model(deployed[deployed_model_id].model).uri


def canary_classes(endpoint: Any, deployed_model_id: str, images: np.ndarray) -> np.ndarray:
    """Class ids [N] that deployed model `deployed_model_id`'s SavedModel answers for `images`."""
    uri = artifact_uri(endpoint, deployed_model_id)
    tf_env.configure()
    from modules import inference

    return inference.predict_probabilities(uri, images).argmax(axis=1)
