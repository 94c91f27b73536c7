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

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airflow/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    CORMORANT_SPECS_DIR=/opt/airflow/include/specs
