"""How long Airflow takes to parse the DAG folder (``python -m bench dagbag``): the scheduler's
dag-processor parses it every ``min_file_process_interval``; the median of ``--runs`` parses,
against parsing an empty folder in the same run (Airflow's own overhead)."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

DAGS = Path(__file__).resolve().parents[1] / "dags"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench dagbag")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    from airflow.dag_processing.dagbag import DagBag

    def median_parse(folder: Path) -> float:
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            bag = DagBag(dag_folder=str(folder), include_examples=False)
            times.append(time.perf_counter() - start)
            if bag.import_errors and folder == DAGS:
                raise SystemExit(f"import errors: {bag.import_errors}")
        return statistics.median(times)

    with tempfile.TemporaryDirectory() as empty:
        base = median_parse(Path(empty))
    ours = median_parse(DAGS)
    print(
        f"DAG folder parse, median of {args.runs}: {ours * 1000:.0f} ms "
        f"(empty folder {base * 1000:.0f} ms, ratio {ours / max(base, 1e-9):.1f}x)"
    )
