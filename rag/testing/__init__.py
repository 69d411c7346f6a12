"""Test doubles shipped with the library: loopback servers speaking AWS wire protocols."""
