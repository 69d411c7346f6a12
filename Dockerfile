# Airflow 3 with this project installed from the lock file (the docker-compose.yml stack).
FROM apache/airflow:3.3.2-python3.11
USER airflow
WORKDIR /opt/airflow/project
COPY --chown=airflow:0 pyproject.toml uv.lock README.md ./
RUN pip install --no-cache-dir "uv>=0.5" \
 && uv export --frozen --no-dev --no-emit-project --extra eval --extra aws --no-hashes -o /tmp/requirements.txt \
 && grep -v '^apache-airflow==' /tmp/requirements.txt > /tmp/requirements-noairflow.txt \
 && pip install --no-cache-dir -r /tmp/requirements-noairflow.txt
COPY --chown=airflow:0 rag ./rag
COPY --chown=airflow:0 connectors ./connectors
COPY --chown=airflow:0 evaluation ./evaluation
RUN pip install --no-cache-dir --no-deps .
WORKDIR /opt/airflow
