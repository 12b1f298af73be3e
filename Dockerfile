# The project image: every Vertex pipeline component, the Vertex Training job and the Dataflow
# SDK container (Beam needs the launcher's Python minor version on the workers: 3.11 here and
# there). Python 3.11 on Debian 12, the same pinned lock as local development, the project.
#   docker build -t REGION-docker.pkg.dev/PROJECT/fashion-mnist/pipeline:TAG .
# and, from the same layers, `fmnist serve` as a non-root user (target `serving`, below):
#   docker build --target serving -t REGION-docker.pkg.dev/PROJECT/fashion-mnist/fmnist-serve:TAG .
FROM apache/beam_python3.11_sdk:2.60.0 AS beam

FROM python:3.11-slim-bookworm AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_USE_LEGACY_KERAS=1

# Dataflow starts SDK workers through Beam's boot binary; it must match the pinned apache-beam.
COPY --from=beam /opt/apache/beam /opt/apache/beam

WORKDIR /pipeline
COPY requirements/ requirements/
RUN python -m pip install --no-cache-dir uv==0.13.9 \
 && python -m uv pip install --system --no-deps --no-cache -r requirements/requirements.lock.txt \
 && python -m pip install --no-cache-dir --no-deps --ignore-requires-python -r requirements/tfx-wheels.txt

# The project (see .dockerignore). Editable, so code and schema/ resolve from /pipeline, the
# layout kubeflow_runner.py compiles against (IMAGE_WORKDIR) and a checkout has.
COPY . .
RUN python -m pip install --no-cache-dir --no-deps --no-build-isolation -e .

# `fmnist serve` (the project's TF Serving-protocol server) on the Pusher's directory, mounted
# read-only at /models/fashion_mnist:
#   docker run --read-only --tmpfs /tmp -p 8500:8500 -p 8501:8501 \
#     -v $PWD/outputs/fashion-mnist/serving_model:/models/fashion_mnist:ro IMAGE
# A numeric USER, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd. The code
# and packages stay root-owned (the server cannot change them); everything it writes (TF's caches
# under HOME, temporary files) goes to /tmp, the one writable mount under a read-only root.
FROM base AS serving
RUN groupadd --gid 10001 fmnist \
 && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin fmnist
ENV HOME=/tmp
EXPOSE 8500 8501
USER 10001:10001
# --host 0.0.0.0: inside a container, loopback would be unreachable from outside it.
ENTRYPOINT ["fmnist"]
CMD ["serve", "--host", "0.0.0.0", "--model-base-path", "/models/fashion_mnist"]

# The default target, last so that `docker build .` keeps producing it. It stays root: Dataflow
# starts Beam's boot with its semi-persistent directory on a root-owned host mount
# (/var/opt/google) that boot writes staged files to. Vertex sets each container's command
# explicitly (TFX's run_executor); Dataflow uses the image's entrypoint, which must be Beam's boot.
FROM base AS pipeline
ENTRYPOINT ["/opt/apache/beam/boot"]
