"""Deployment files cannot run here (no Docker, no cluster): check that the fields which must agree
do agree, with each other and with the server's and clients' defaults."""

import json
import re
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.client import DEFAULT_MODEL
from serving.metrics import PROMETHEUS_PATH
from serving.server import ServerOptions

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
GRPC_PORT, REST_PORT = ServerOptions.grpc_port, ServerOptions.rest_port


def _dockerfile_cmd() -> list[str]:
    text = (DEPLOY / "serving" / "Dockerfile").read_text().replace("\\\n", " ")
    return json.loads(re.search(r"^CMD (\[.*\])", text, re.M)[1])


def _flags(args: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in args if "=" in a)


def _manifests() -> dict[str, dict]:
    documents = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            documents[f"{document['kind']}/{document['metadata']['name']}"] = document
    return documents


def _model_config(text: str) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def test_image_serves_the_baked_model_under_the_clients_model_name():
    dockerfile = (DEPLOY / "serving" / "Dockerfile").read_text()
    assert re.search(r"^FROM tensorflow/serving:2\.16\.\d+$", dockerfile, re.M)
    flags = _flags(_dockerfile_cmd())
    assert (flags["port"], flags["rest_api_port"]) == (str(GRPC_PORT), str(REST_PORT))
    assert f"EXPOSE {GRPC_PORT} {REST_PORT}" in dockerfile
    (model,) = _model_config((DEPLOY / "serving" / "models.config").read_text()).model_config_list.config
    assert model.name == DEFAULT_MODEL == ServerOptions.model_name
    assert re.search(rf"^COPY \$\{{MODEL_DIR\}} {re.escape(model.base_path)}$", dockerfile, re.M)
    for name in ("models.config", "monitoring.config", "batching.config"):
        assert f"/config/{name}" in flags.values()
    # (the MonitoringConfig proto is not in the tensorflow-serving-api wheel: check its two fields)
    monitoring = (DEPLOY / "serving" / "monitoring.config").read_text()
    assert re.search(r"\benable: true\b", monitoring)
    assert re.search(r'\bpath: "([^"]+)"', monitoring)[1] == PROMETHEUS_PATH


@pytest.mark.parametrize("deployment", ["fashion-mnist-serving", "fashion-mnist-serving-canary"])
def test_deployments_agree_with_the_image_and_the_service(deployment):
    manifests = _manifests()
    spec = manifests[f"Deployment/{deployment}"]["spec"]
    pod = spec["template"]
    assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": GRPC_PORT, "rest": REST_PORT}
    flags = _flags(container["args"])
    assert (flags["port"], flags["rest_api_port"]) == (str(GRPC_PORT), str(REST_PORT))
    assert container["readinessProbe"]["httpGet"] == {"path": f"/v1/models/{DEFAULT_MODEL}", "port": REST_PORT}
    annotations = pod["metadata"]["annotations"]
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == (str(REST_PORT), PROMETHEUS_PATH)

    # The model config it reads is the ConfigMap it mounts, and that config is valid TF Serving config.
    (mount,) = container["volumeMounts"]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    configmap = manifests[f"ConfigMap/{volume['configMap']['name']}"]
    config_file = flags["model_config_file"]
    assert config_file.startswith(mount["mountPath"] + "/")
    (model,) = _model_config(configmap["data"][config_file.rsplit("/", 1)[1]]).model_config_list.config
    assert model.name == DEFAULT_MODEL
    labelled = set(model.version_labels.values())
    assert set(model.version_labels) == {"stable", "canary"}
    assert labelled <= set(model.model_version_policy.specific.versions)  # labels must name loaded versions

    service = manifests["Service/fashion-mnist-serving"]["spec"]
    assert service["selector"].items() <= pod["metadata"]["labels"].items()  # the Service reaches it
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["ports"]} == {
        "grpc": (GRPC_PORT, "grpc"), "rest": (REST_PORT, "rest")}


def test_canary_differs_from_stable_only_where_it_should():
    manifests = _manifests()
    stable, canary = (manifests[f"Deployment/{n}"] for n in ("fashion-mnist-serving", "fashion-mnist-serving-canary"))
    assert stable["spec"]["template"]["metadata"]["labels"]["track"] == "stable"
    assert canary["spec"]["template"]["metadata"]["labels"]["track"] == "canary"
    assert canary["spec"]["replicas"] < stable["spec"]["replicas"]
    stable_image = stable["spec"]["template"]["spec"]["containers"][0]["image"]
    canary_image = canary["spec"]["template"]["spec"]["containers"][0]["image"]
    assert stable_image.rsplit(":", 1)[0] == canary_image.rsplit(":", 1)[0] and stable_image != canary_image


def test_autoscaler_targets_the_stable_deployment_and_kustomize_lists_every_manifest():
    manifests = _manifests()
    hpa = manifests["HorizontalPodAutoscaler/fashion-mnist-serving"]["spec"]
    target = hpa["scaleTargetRef"]
    assert f"{target['kind']}/{target['name']}" in manifests
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    files = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_the_project_image_selects_keras_2_like_every_entry_point():
    from fmnist import tf_env

    dockerfile = (DEPLOY.parent / "Dockerfile").read_text()
    assert re.search(rf"\b{tf_env.LEGACY_KERAS_VARIABLE}={tf_env.LEGACY_KERAS_VALUE}\b", dockerfile)
