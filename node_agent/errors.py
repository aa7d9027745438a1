"""The agent's error tree: ``AgentError`` is the root of everything ``node_agent`` raises.

Every error names the thing it is about (an object in the store, an order, a path or a
command) and never carries key material. A ``RefusedError`` means something read from the
store was not installed because it failed a check; the installed files are untouched.
"""

from __future__ import annotations

from certfleet.errors import CertfleetError


class AgentError(CertfleetError):
    """Base class of every error the node agent raises."""


class RefusedError(AgentError):
    """An object from the store failed a check (integrity, names, certificates...).

    ``permanent`` is True when the same stored bytes would fail again (content-addressed
    objects: a bad bundle stays bad), False when a later try may pass (the bytes under the
    key did not match their hash, a certificate not valid yet).
    """

    def __init__(self, object_name: str, reason: str, *, permanent: bool = True) -> None:
        self.object_name = object_name
        self.reason = reason
        self.permanent = permanent
        super().__init__(f"{object_name}: {reason}")


class InstallError(AgentError):
    """Writing, switching or removing files on disk failed."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what}: {reason}")


class StateError(AgentError):
    """The agent's durable state in state_dir is unreadable or cannot be written."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"agent state {path}: {reason}")


class PidFileError(AgentError):
    """The pid file names a running agent, or cannot be written."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"pid file {path}: {reason}")
