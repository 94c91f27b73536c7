# Cormorant's images, from one file:
#   docker build -t cormorant:0.1.0 .                          the Airflow image (every Airflow service)
#   docker build --target trainer -t cormorant-trainer:0.1.0 .  the trainer (a sweep trial's pod), no Airflow
#
# Build arguments (the defaults are the official images and PyPI's builds):
#   AIRFLOW_BASE_IMAGE, PYTHON_BASE_IMAGE  the base images: point them at your registry's mirror
#   TORCH_VARIANT=cuda|cpu                 cuda: PyPI's torch (CUDA-enabled on Linux x86_64, GBs);
#                                          cpu: torch's CPU build (the trainer on CPU nodes, slim images)
#   TORCH_CPU_INDEX_URL                    where the CPU build comes from (empty: pip's own indexes and
#                                          find-links only, for a mirror that carries it)
# pip's cache is a BuildKit cache mount: a rebuild after a code change reinstalls nothing, and a rebuild
# after a requirements change downloads only what changed.
# (written out, not composed from version arguments, so tools that read a Dockerfile's base images see them)
ARG AIRFLOW_BASE_IMAGE=apache/airflow:3.3.2-python3.11
ARG PYTHON_BASE_IMAGE=python:3.11-slim

FROM ${AIRFLOW_BASE_IMAGE} AS airflow
ARG TORCH_VARIANT=cuda
ARG TORCH_CPU_INDEX_URL=https://download.pytorch.org/whl/cpu
USER airflow
WORKDIR /opt/airflow
COPY --chown=airflow:root requirements.txt constraints.txt pyproject.toml README.md ./
RUN --mount=type=cache,target=/home/airflow/.cache/pip,uid=50000,gid=0 \
    if [ "$TORCH_VARIANT" = cpu ]; then \
      pip install ${TORCH_CPU_INDEX_URL:+--extra-index-url "$TORCH_CPU_INDEX_URL"} "torch==2.13.0+cpu"; \
    fi \
 && pip install -r requirements.txt -c constraints.txt
COPY --chown=airflow:root include/ include/
COPY --chown=airflow:root plugins/ plugins/
COPY --chown=airflow:root dags/ dags/
COPY --chown=airflow:root scripts/ scripts/
# The folders the compose stack mounts volumes on exist here, owned by the airflow user: a new named
# volume takes the owner of the folder it is mounted on (a folder the image lacks would be root's).
RUN pip install --no-cache-dir --no-deps -e . \
 && mkdir -p /opt/airflow/logs /home/airflow/.mlflow \
 && python -m compileall -q include/ plugins/

# Every spec gets a DAG file of its own (cormorant_provider.bundle): one malformed spec is an import error
# of its own file, and the other specs' DAGs keep running (cormorant.config.dag_bundles writes this value).
ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airflow/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST='[{"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle", "kwargs": {}}, {"name": "cormorant-specs", "classpath": "cormorant_provider.bundle.SpecBundle", "kwargs": {"refresh_interval": 10}}]' \
    CORMORANT_SPECS_DIR=/opt/airflow/include/specs \
    GX_ANALYTICS_ENABLED=False \
    MLFLOW_ENABLE_TELEMETRY=false \
    DO_NOT_TRACK=true

# The trainer: the trainer CLI (python -m cormorant.trainer), torch and xgboost, no Airflow. The pod's
# user is 50000 and its root file system is read-only: everything it writes goes to /tmp (a scratch
# volume) or to the lake and MLflow. With TORCH_VARIANT=cuda the GPU comes from the node (NVIDIA
# container runtime).
FROM ${PYTHON_BASE_IMAGE} AS trainer
ARG TORCH_VARIANT=cuda
ARG TORCH_CPU_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN useradd --uid 50000 --gid 0 --create-home trainer
WORKDIR /opt/airflow
COPY requirements-trainer.txt constraints.txt pyproject.toml README.md ./
RUN --mount=type=cache,target=/root/.cache/pip \
    if [ "$TORCH_VARIANT" = cpu ]; then \
      pip install ${TORCH_CPU_INDEX_URL:+--extra-index-url "$TORCH_CPU_INDEX_URL"} "torch==2.13.0+cpu"; \
    fi \
 && pip install -r requirements-trainer.txt -c constraints.txt
COPY include/ include/
# Compiled now: the pod's user cannot write include/, so every pod would compile Cormorant's modules
# again on start (0.1 s of a trial's start-up, measured without and with the bytecode).
RUN pip install --no-cache-dir --no-deps -e . && python -m compileall -q include/
USER 50000
ENV PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    MLFLOW_ENABLE_TELEMETRY=false \
    DO_NOT_TRACK=true
CMD ["python", "-m", "cormorant.trainer", "--help"]
