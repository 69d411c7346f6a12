"""Retrieval evaluation: IR metrics, ragas suites and leak checks (see the evaluation issue)."""
