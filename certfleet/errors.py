"""The root of every error the certfleet library raises.

This module is a leaf: it imports nothing from the project, so every other module,
including the pure format module ``certfleet.bundle``, may build its error tree on it.
Messages never contain secret material; fields carry the details a caller needs.

``printable`` is the one escaping rule for text from outside (a provider's or a store
server's answer, an object's contents, an order name read from a bundle): the sync, the
agent and the admin CLI pass such text through it before it reaches a message, a log line
or a status display, so it can never hold a newline, an escape sequence or a bidi override.
"""

from __future__ import annotations

MAX_MESSAGE = 400


def printable(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` with each non-printable character repr-escaped (newline as ``\\n``, ESC as
    ``\\x1b``, U+202E as ``\\u202e``), cut to about ``limit`` characters."""
    shown = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return shown if len(shown) <= limit else shown[:limit] + "...(cut)"


class CertfleetError(Exception):
    """Base class of all certfleet errors."""
