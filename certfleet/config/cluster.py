"""What the two configs' ``cluster "NAME" { ... }`` blocks share: the name and the secrets."""

from __future__ import annotations

from typing import Callable

from certfleet.bundle import ClusterSecret, UnsafeNameError
from certfleet.config.section import Section

CLUSTER_KEYS_VALID = '"<id>:<base64url of 32 bytes>", or a list of them (the newest first)'


def check_label(section: Section, validate: Callable[[str], str], label: str) -> str:
    """``label`` (the block's name); an error at the block's line if ``validate`` refuses it."""
    try:
        validate(label)
    except UnsafeNameError as err:
        section.block_error(f"{err.object_name} {err.reason}")
    return label


def cluster_secrets(section: Section) -> tuple[ClusterSecret, ...]:
    """The block's ``secret`` option: one secret or a list, required, ids unique.

    Secret values never reach a message: a bad entry is named by its position in the list.
    """
    if not section.has("secret"):
        section.error("secret", "is required", valid=CLUSTER_KEYS_VALID)
        return ()
    secrets = section.parsed(
        "secret", ClusterSecret.parse, valid=CLUSTER_KEYS_VALID, secret=True, many=True
    )
    ids = [secret.id for secret in secrets]
    repeated = sorted({secret_id for secret_id in ids if ids.count(secret_id) > 1})
    if repeated:
        section.error(
            "secret",
            f"secret id {', '.join(repeated)} is listed twice",
            valid="each secret with its own id",
        )
    return secrets
