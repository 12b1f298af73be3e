"""Deployment files cannot run here (no Docker, no cluster): check that the fields which must agree
do agree, with each other and with the server's and clients' defaults."""

import json
import re
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.client.clients import DEFAULT_MODEL
from serving.protocol.names import PROMETHEUS_PATH
from serving.server.process import ServerOptions

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
REPO = DEPLOY.parent
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


def _stages(dockerfile: Path) -> dict[str, str]:
    """Build stage name (or its index, unnamed) -> its instructions, continuation lines joined."""
    text = dockerfile.read_text().replace("\\\n", " ")
    stages = {}
    for index, stage in enumerate(re.split(r"^(?=FROM )", text, flags=re.M)[1:]):
        named = re.match(r"FROM \S+ AS (\S+)", stage)
        stages[named[1] if named else str(index)] = stage
    return stages


def _user_uid(stage: str) -> int:
    """The numeric uid the stage ends up running as; fails on a root, named or missing USER."""
    users = re.findall(r"^USER (\S+)$", stage, re.M)
    first_non_root = next((i for i, user in enumerate(users) if user.split(":")[0] not in ("root", "0")), None)
    assert first_non_root is not None, f"no non-root USER line (USER lines: {users}): it would run as root"
    for user in users[first_non_root:]:  # nothing after it switches back to root
        uid = user.split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"USER {user}: not a numeric non-root uid"
    return int(users[-1].split(":")[0])


# The images that serve: the TF Serving image, and the project image's `serving` target.
SERVING_STAGES = {"tensorflow_model_server": (DEPLOY / "serving" / "Dockerfile", "0"),
                  "fmnist serve": (REPO / "Dockerfile", "serving")}


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
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if "configMap" in volumes[m["name"]]]
    configmap = manifests[f"ConfigMap/{volumes[mount['name']]['configMap']['name']}"]
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


# -- least privilege -------------------------------------------------------------------------
@pytest.mark.parametrize("server", sorted(SERVING_STAGES))
def test_serving_images_run_as_a_numeric_non_root_user_with_home_in_tmp(server):
    dockerfile, stage = SERVING_STAGES[server]
    instructions = _stages(dockerfile)[stage]
    assert _user_uid(instructions) > 0
    assert re.search(r"^ENV HOME=/tmp$", instructions, re.M)


def test_the_project_server_image_listens_beyond_loopback_and_the_default_target_is_the_pipeline():
    stages = _stages(REPO / "Dockerfile")
    command = json.loads(re.search(r"^CMD (\[.*\])$", stages["serving"], re.M)[1])
    assert command[:1] == ["serve"] and command[command.index("--host") + 1] == "0.0.0.0"
    # `docker build .` (cloudbuild.yaml) builds the last stage: the pipeline image, Beam's boot first.
    assert list(stages)[-1] == "pipeline" and 'ENTRYPOINT ["/opt/apache/beam/boot"]' in stages["pipeline"]


def test_every_deployment_runs_non_root_read_only_without_privileges():
    image_uid = _user_uid(_stages(DEPLOY / "serving" / "Dockerfile")["0"])
    deployments = [d for name, d in _manifests().items() if name.startswith("Deployment/")]
    assert deployments
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            where = f"{deployment['metadata']['name']}/{container['name']}"
            context = container.get("securityContext", {})
            effective = {**pod.get("securityContext", {}), **context}  # the container's own win
            assert effective.get("runAsNonRoot") is True, where
            assert effective.get("runAsUser") == image_uid, where
            assert effective.get("seccompProfile") == {"type": "RuntimeDefault"}, where
            # Container-only fields: a pod-level value would not exist.
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert "emptyDir" in volumes[tmp["name"]], where


def _gcloud_run_deploys(text: str) -> list[str]:
    """Every `gcloud run deploy` command in a shell script or Markdown, continuation lines joined."""
    return [line for line in text.replace("\\\n", " ").splitlines() if "gcloud run deploy" in line]


@pytest.mark.parametrize("path", ["cloudbuild.yaml", "deploy/README.md", "docs/gcp.md"])
def test_cloud_run_is_never_deployed_open_to_unauthenticated_calls(path):
    text = (REPO / path).read_text()
    if path.endswith(".yaml"):  # the shell inside the build steps
        text = "\n".join(arg for step in yaml.safe_load(text)["steps"] for arg in step.get("args", []))
    deploys = _gcloud_run_deploys(text)
    assert deploys, f"no gcloud run deploy in {path}"
    assert all("--no-allow-unauthenticated" in deploy for deploy in deploys)
    assert "--allow-unauthenticated" not in text  # (not a substring of --no-allow-unauthenticated)
    # One named account may call it, with roles/run.invoker on the service.
    assert re.search(r"gcloud run services add-iam-policy-binding fashion-mnist-serving .*"
                     r"--member \"?serviceAccount:\S+ --role roles/run.invoker", text.replace("\\\n", " "))


# -- the monitoring job on Cloud Run (deploy/monitoring/) ----------------------------------------
MONITORING = DEPLOY / "monitoring"


def test_the_monitoring_job_runs_fmnist_monitor_on_the_logging_table_with_state_on_its_bucket():
    from cli import monitor
    from cli.main import build_parser
    from fmnist import bigquery, settings

    job = yaml.safe_load((MONITORING / "job.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("run.googleapis.com/v1", "Job")
    task = job["spec"]["template"]["spec"]["template"]["spec"]
    assert task["maxRetries"] == 0  # an alert is an answer: a retry would only page twice
    assert task["serviceAccountName"].startswith("fmnist-monitor@")
    (container,) = task["containers"]
    assert container["image"].endswith("/fashion-mnist/fmnist:TAG")  # the project image's `serving` target
    parsed = build_parser().parse_args(container["args"])  # the flags exist and parse
    assert parsed.handler.handler is monitor.main
    args = settings.resolve(monitor.MonitorSettings, parsed, environ={}).build(monitor.MonitorSettings)
    assert args.requests is None and bigquery.check_table_id(args.bigquery_table.replace("PROJECT", "my-project"))
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (volume,) = task["volumes"]
    assert volume["csi"]["driver"] == "gcsfuse.run.googleapis.com" and volume["name"] in mounts
    for path in (args.out, args.training_statistics):  # state and statistics live on the bucket
        assert str(path).startswith(mounts[volume["name"]] + "/"), path


def test_the_alert_policy_pages_on_a_failed_execution_of_that_job():
    from cli import monitor

    job = yaml.safe_load((MONITORING / "job.yaml").read_text())
    policy = json.loads((MONITORING / "alert-policy.json").read_text())
    (condition,) = policy["conditions"]
    text = condition["conditionThreshold"]["filter"]
    assert f'resource.labels.job_name = "{job["metadata"]["name"]}"' in text
    assert 'metric.type = "run.googleapis.com/job/completed_execution_count"' in text
    assert 'metric.labels.result = "failed"' in text
    assert f"exits {monitor.ALERT_EXIT} when" in policy["documentation"]["content"]


@pytest.mark.parametrize("path", ["deploy/README.md", "docs/gcp.md"])
def test_the_docs_shell_never_doubles_the_bucket_scheme_or_clobbers_the_pipeline_account(path):
    text = (REPO / path).read_text()
    # BUCKET is set with its scheme (BUCKET=gs://...): gs://$BUCKET would be gs://gs://...
    assert "BUCKET=gs://" in (REPO / "docs" / "gcp.md").read_text()
    assert not re.search(r"gs://\$\{?BUCKET", text)
    # $SA is the pipeline account (docs/gcp.md); other identities get their own variable.
    assignments = re.findall(r"^(\w*SA)=(\S+)", text, re.M)
    pipeline_account = "pipelines@$PROJECT.iam.gserviceaccount.com"
    assert [value for name, value in assignments if name == "SA"] in ([], [pipeline_account])
