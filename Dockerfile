# The project image: every Vertex pipeline component, the Vertex Training job and the Dataflow
# SDK container (Beam needs the launcher's Python minor version on the workers: 3.11 here and
# there). Python 3.11 on Debian 12, the same pinned lock as local development, the project.
#   docker build -t REGION-docker.pkg.dev/PROJECT/fashion-mnist/pipeline:TAG .
FROM apache/beam_python3.11_sdk:2.60.0 AS beam

FROM python:3.11-slim-bookworm

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

# Vertex sets each container's command explicitly (TFX's run_executor); Dataflow uses the
# image's entrypoint, which must be Beam's boot.
ENTRYPOINT ["/opt/apache/beam/boot"]
