"""Retrieval evaluation: BEIR datasets with an ACL overlay, IR and ragas metrics per persona,
leak checks, suites as TOML data, and a nightly HTML/JSON/markdown report."""
