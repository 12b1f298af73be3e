# Image for every pipeline component (and, with issue #6, the Dataflow SDK container).
# Python 3.11 on Debian 12, the same pinned lock as local development, the project installed.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_USE_LEGACY_KERAS=1

WORKDIR /pipeline
COPY requirements/ requirements/
RUN python -m pip install --no-cache-dir uv==0.13.9 \
 && python -m uv pip install --system --no-deps --no-cache -r requirements/requirements.lock.txt \
 && python -m pip install --no-cache-dir --no-deps --ignore-requires-python -r requirements/tfx-wheels.txt

COPY setup.py local_runner.py kubeflow_runner.py ./
COPY fmnist/ fmnist/
COPY modules/ modules/
COPY tfx_pipeline/ tfx_pipeline/
COPY schema/ schema/
# Editable, so code and schema/ resolve from /pipeline, the same layout as a checkout.
RUN python -m pip install --no-cache-dir --no-deps --no-build-isolation -e .

ENTRYPOINT ["python", "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]
