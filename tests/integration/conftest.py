"""Integration fixtures live in tests/opensearch_node.py, a plugin of tests/conftest.py."""
