"""The ACME provider's errors, rooted at ``AcmeError``, and the CA's problem documents.

A ``Problem`` keeps what RFC 8555 section 6.7 declares (type, detail, status, the
per-identifier subproblems); text from the CA is repr-escaped and cut before it reaches a
message, since the CA (or whoever answers in its place) is not trusted to be polite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from certfleet.errors import CertfleetError

ACME_ERROR_PREFIX = "urn:ietf:params:acme:error:"
_MAX_TEXT = 300
_SUB_TEXT = 80


def _text(value: object, limit: int = _MAX_TEXT) -> str:
    """Untrusted text made printable: repr-escaped past ASCII printables, cut."""
    text = str(value)
    if not all(" " <= char <= "~" for char in text):
        text = repr(text)[1:-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Problem:
    """An RFC 7807 problem document from the CA; ``subproblems`` per identifier."""

    type: str
    detail: str = ""
    status: Optional[int] = None
    identifier: Optional[str] = None
    subproblems: tuple[Problem, ...] = ()

    @property
    def code(self) -> str:
        """The ACME error code (``badNonce``, ``rateLimited``...), or the whole type."""
        return (
            self.type[len(ACME_ERROR_PREFIX) :]
            if self.type.startswith(ACME_ERROR_PREFIX)
            else self.type
        )

    def summary(self) -> str:
        """One line: code, detail and each subproblem's identifier and detail (details cut
        shorter when there are subproblems, so that every identifier fits a run summary's
        message; the whole document stays in the ACME state)."""
        limit = _SUB_TEXT if self.subproblems else _MAX_TEXT
        text = _text(self.code)
        if self.detail:
            text += f": {_text(self.detail, limit)}"
        for sub in self.subproblems:
            who = f"{_text(sub.identifier)}: " if sub.identifier else ""
            text += f"; {who}{_text(sub.code)}: {_text(sub.detail, _SUB_TEXT)}"
        return text

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": self.type, "detail": self.detail}
        if self.status is not None:
            doc["status"] = self.status
        if self.identifier is not None:
            doc["identifier"] = self.identifier
        if self.subproblems:
            doc["subproblems"] = [sub.as_json() for sub in self.subproblems]
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> Problem:
        """A problem from stored or received JSON; ValueError if it is not one."""
        if not isinstance(doc, dict) or not isinstance(doc.get("type", ""), str):
            raise ValueError("not a problem document")
        identifier = doc.get("identifier")
        if isinstance(identifier, dict):
            identifier = identifier.get("value")
        status = doc.get("status")
        subs = doc.get("subproblems") or ()
        return cls(
            type=str(doc.get("type") or "about:blank"),
            detail=str(doc.get("detail") or ""),
            status=status if isinstance(status, int) else None,
            identifier=str(identifier) if identifier is not None else None,
            subproblems=tuple(cls.from_json(sub) for sub in subs if isinstance(sub, dict)),
        )


class AcmeError(CertfleetError):
    """An ACME request or step failed.

    ``operation`` names the step; ``problem`` is the CA's problem document when it sent
    one; ``retry_after`` is the Retry-After the CA asked for, in seconds from now;
    ``transient`` says a later retry may succeed without any change on our side;
    ``status`` is the HTTP status of the CA's answer when there was one.
    """

    def __init__(
        self,
        operation: str,
        reason: str,
        *,
        problem: Problem | None = None,
        retry_after: float | None = None,
        transient: bool = False,
        status: int | None = None,
    ) -> None:
        self.operation = operation
        self.status = status
        self.problem = problem
        self.retry_after = retry_after
        self.transient = transient
        self.reason = problem.summary() if problem is not None else _text(reason)
        super().__init__(f"ACME {operation} failed: {self.reason}")


class AcmeOrderInvalid(AcmeError):
    """The CA marked the order (or one of its authorizations) invalid."""


class AcmeAnswerRefused(AcmeError):
    """An answer of the CA refused before it was used (``certfleet.acme.wire``): over its
    size cap, or not complete within the request's deadline. ``url`` is the URL of the
    request; ``detail`` says which limit. Transient: the order is kept (no new order at the
    CA at each run) and tried again after the backoff."""

    def __init__(self, operation: str, url: str, detail: str) -> None:
        self.url = url
        self.detail = detail
        super().__init__(
            operation, f"{detail}; answer of '{_text(url, 200)}' refused", transient=True
        )

    def during(self, operation: str) -> AcmeAnswerRefused:
        """The same refusal, reported as the failure of ``operation``."""
        return AcmeAnswerRefused(operation, self.url, self.detail)
