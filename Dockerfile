# Cormorant's Airflow image: the official image of the pinned Airflow version plus Cormorant's
# pinned requirements and code. Build: docker build -t cormorant:0.1.0 .
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION} AS airflow

USER airflow
WORKDIR /opt/airflow
COPY --chown=airflow:root requirements.txt constraints.txt pyproject.toml README.md ./
# torch==2.13.0 from PyPI is the CUDA build; the CPU wheel index can be added with
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu for smaller scheduler/api images.
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt
COPY --chown=airflow:root include/ include/
COPY --chown=airflow:root plugins/ plugins/
COPY --chown=airflow:root dags/ dags/
COPY --chown=airflow:root scripts/ scripts/
RUN pip install --no-cache-dir --no-deps -e .

# Every spec gets a DAG file of its own (cormorant_provider.bundle): one malformed spec is an import error
# of its own file, and the other specs' DAGs keep running (cormorant.config.dag_bundles writes this value).
ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airflow/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST='[{"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle", "kwargs": {}}, {"name": "cormorant-specs", "classpath": "cormorant_provider.bundle.SpecBundle", "kwargs": {"refresh_interval": 10}}]' \
    CORMORANT_SPECS_DIR=/opt/airflow/include/specs

# The trainer image (docker build --target trainer -t cormorant-trainer:0.1.0 .): the trainer CLI with
# CUDA-enabled torch and xgboost, no Airflow. The GPU comes from the node (NVIDIA container runtime).
FROM python:${PYTHON_VERSION}-slim AS trainer
RUN useradd --uid 50000 --gid 0 --create-home trainer
WORKDIR /opt/airflow
COPY requirements-trainer.txt constraints.txt pyproject.toml README.md ./
RUN pip install --no-cache-dir -r requirements-trainer.txt -c constraints.txt
COPY include/ include/
# Compiled now: the pod's user cannot write include/, so every pod would compile Cormorant's modules
# again on start (0.1 s of a trial's start-up, measured without and with the bytecode).
RUN pip install --no-cache-dir --no-deps -e . && python -m compileall -q include/
USER 50000
ENV PYTHONUNBUFFERED=1
CMD ["python", "-m", "cormorant.trainer", "--help"]
