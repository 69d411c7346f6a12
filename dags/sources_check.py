"""The bad entries of sources.yaml, raised as this file's DAG import error.

Airflow records import errors per file, so a bad entry raised from ingest.py would hide every
source's DAG. ingest.py makes the good entries' DAGs (and, for each bad entry, a DAG tagged
``broken-config`` that fails with its reason); this file raises the reasons, one line per bad
entry, where operators look for them: the UI's "DAG Import Errors" and
`airflow dags list-import-errors`. It defines no DAG, and loads quietly when every entry is good.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The glue module beside this file (see ingest.py).
if str(Path(__file__).parent) not in sys.path:
    sys.path.append(str(Path(__file__).parent))

import rag_airflow as glue

glue.check_sources()
