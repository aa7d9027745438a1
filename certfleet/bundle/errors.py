"""The format's error tree: one type for each reason an object is refused.

Every error names the object it is about (``object_name``, e.g. "head of cluster web" or
"bundle for order example.com in cluster web") and says why it was refused. No message ever
contains key material: secrets are named by their id only.
"""

from __future__ import annotations

from collections.abc import Sequence

from certfleet.bundle.isotime import iso_utc
from certfleet.errors import CertfleetError


class FormatError(CertfleetError):
    """Root of every refusal of a format object; the only kind a decoder raises."""

    def __init__(self, object_name: str, reason: str) -> None:
        self.object_name = object_name
        self.reason = reason
        super().__init__(f"{object_name}: {reason}")


class MalformedError(FormatError):
    """The bytes (or text) do not follow the format: truncated, trailing, unknown version..."""


class BadSignatureError(FormatError):
    """The head's signature does not verify under the publisher key it names."""

    def __init__(self, object_name: str) -> None:
        super().__init__(object_name, "integrity check failed: bad signature")


class UnknownPublisherError(FormatError):
    """The head is signed by a publisher key that is not pinned."""

    def __init__(self, object_name: str, publisher: str) -> None:
        self.publisher = publisher
        super().__init__(object_name, f"signed by {publisher}, which is not a pinned publisher")


class WrongClusterError(FormatError):
    """The object belongs to another cluster than the one it was fetched for."""

    def __init__(self, object_name: str, expected: str, found: str) -> None:
        self.expected = expected
        self.found = found
        super().__init__(object_name, f"belongs to cluster {found!r}, not {expected!r}")


class NoUsableSecretError(FormatError):
    """None of the secret ids the object is wrapped for is held by the reader."""

    def __init__(self, object_name: str, wrapped_for: Sequence[str], held: Sequence[str]) -> None:
        self.wrapped_for = tuple(wrapped_for)
        self.held = tuple(held)
        super().__init__(
            object_name,
            f"wrapped for secret ids {', '.join(self.wrapped_for) or '(none)'}; "
            f"this reader holds {', '.join(self.held) or '(none)'}",
        )


class IntegrityError(FormatError):
    """An AEAD check failed: tampered bytes, a wrong key, or an object moved elsewhere."""

    def __init__(self, object_name: str, reason: str = "integrity check failed") -> None:
        super().__init__(object_name, reason)


class RollbackError(FormatError):
    """The head's generation is below the floor (the last applied one, or min_generation)."""

    def __init__(self, object_name: str, generation: int, min_generation: int) -> None:
        self.generation = generation
        self.min_generation = min_generation
        super().__init__(
            object_name,
            f"generation {generation} is lower than {min_generation} (rollback refused)",
        )


class ExpiredHeadError(FormatError):
    """The head's valid_until is in the past."""

    def __init__(self, object_name: str, valid_until: int, now: int) -> None:
        self.valid_until = valid_until
        self.now = now
        super().__init__(
            object_name, f"expired: valid until {iso_utc(valid_until)}, now is {iso_utc(now)}"
        )


class UnsafeNameError(FormatError):
    """A cluster, order or DNS name breaks the naming rules (docs/format.md, "Text forms and
    names")."""

    def __init__(self, object_name: str, reason: str, name: object = None) -> None:
        self.name = name
        super().__init__(object_name, reason)
