"""The root of every error the certfleet library raises.

This module is a leaf: it imports nothing from the project, so every other module,
including the pure format module ``certfleet.bundle``, may build its error tree on it.
Messages never contain secret material; fields carry the details a caller needs.
"""

from __future__ import annotations


class CertfleetError(Exception):
    """Base class of all certfleet errors."""
