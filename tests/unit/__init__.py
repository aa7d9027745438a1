"""Unit tests (see tests/README.md)."""
