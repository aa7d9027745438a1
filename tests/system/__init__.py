"""System tests (see tests/README.md)."""
