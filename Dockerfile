# Airflow 3 with this project installed from the lock file (the docker-compose.yml stack).

# The nightly suite's reranker model (BAAI bge-small-en-v1.5, int8 ONNX; see the script): fetched
# from Maven Central at build time and checked against its SHA-256 pins.
FROM maven:3.9-eclipse-temurin-17 AS rerank-model
RUN apt-get update && apt-get install -y --no-install-recommends unzip && rm -rf /var/lib/apt/lists/*
COPY scripts/fetch-rerank-model.sh /fetch-rerank-model.sh
RUN bash /fetch-rerank-model.sh /model

FROM apache/airflow:3.3.2-python3.11
USER airflow
WORKDIR /opt/airflow/project
COPY --chown=airflow:0 pyproject.toml uv.lock README.md ./
# the extras the DAGs use: parsing, both stores' clients, AWS, SharePoint, the directory, traces,
# the Celery workers, the nightly evaluation (Airflow itself comes with the base image)
RUN pip install --no-cache-dir "uv>=0.5" \
 && uv export --frozen --no-dev --no-emit-project --no-hashes -o /tmp/requirements.txt \
      --extra ingest --extra opensearch --extra aws --extra sharepoint --extra directory \
      --extra telemetry --extra celery --extra eval \
 && grep -v '^apache-airflow==' /tmp/requirements.txt > /tmp/requirements-noairflow.txt \
 && pip install --no-cache-dir -r /tmp/requirements-noairflow.txt
COPY --chown=airflow:0 rag ./rag
COPY --chown=airflow:0 connectors ./connectors
COPY --chown=airflow:0 evaluation ./evaluation
RUN pip install --no-cache-dir --no-deps .
WORKDIR /opt/airflow
# The mount points of the named volumes the stack writes (rag-data, airflow-logs, airflow-auth),
# owned by the Airflow user (uid 50000, group 0) and writable by group 0, which every container
# of the stack runs with: Docker copies this into a new, empty volume. The compose file's
# volumes-init service does the same for volumes made before, or for another AIRFLOW_UID.
USER root
RUN mkdir -p /opt/airflow/rag-data/reports /opt/airflow/logs /opt/airflow/auth /opt/airflow/eval-data \
 && chown -R 50000:0 /opt/airflow/rag-data /opt/airflow/logs /opt/airflow/auth \
 && chmod -R 0775 /opt/airflow/rag-data /opt/airflow/logs \
 && chmod 0770 /opt/airflow/auth
# where scifact-nightly.toml's model_dir (.cache/models/bge-small-en-v1.5-q) resolves: the tasks'
# working directory is /opt/airflow
COPY --from=rerank-model --chown=airflow:0 /model /opt/airflow/.cache/models/bge-small-en-v1.5-q
USER airflow
