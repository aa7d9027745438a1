"""The order registry's errors (one root, subclasses with fields)."""

from __future__ import annotations

from certfleet.errors import CertfleetError


class RegistryError(CertfleetError):
    """The registry could not be read or written (names the cluster; never a secret)."""


class RegistryNotFound(RegistryError):
    """No order of that name in any cluster the registry serves."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no order named {name!r}")
        self.name = name


class OrderExists(RegistryError):
    """An order of that name exists already (the API's 409 ``order_exists``)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"an order named {name!r} already exists")
        self.name = name


class UnknownCluster(RegistryError):
    """A cluster the registry does not serve (not configured, or not in ACME mode)."""

    def __init__(self, cluster: str, known: tuple[str, ...]) -> None:
        shown = ", ".join(known) or "none"
        super().__init__(f"cluster {cluster!r} has no order registry here (clusters: {shown})")
        self.cluster = cluster
        self.known = known


class RegistryContended(RegistryError):
    """Conditional writes kept losing to other writers; nothing was changed."""

    def __init__(self, cluster: str, attempts: int) -> None:
        super().__init__(
            f"the order registry of cluster {cluster!r} kept changing under {attempts} "
            "attempts; try again"
        )
        self.cluster = cluster


class RegistryRolledBack(RegistryError):
    """The registry went back from the revision the sync acted on: deleted (no object), an
    older sealed copy written back by someone with write access to the store, or one that
    does not descend from it (``forked``: such a copy written over since, or one made anew
    after a delete)."""

    def __init__(self, cluster: str, key: str, found: int, held: int, *, forked: bool) -> None:
        if found == 0:
            what = "is missing (deleted)"
        elif forked:
            what = (
                f"at revision {found} does not descend from it (an old copy written over, or "
                "one made anew after a delete)"
            )
        else:
            what = f"is at revision {found} (an old copy)"
        super().__init__(
            f"the order registry of cluster {cluster!r} ({key}) {what}, but this sync has "
            f"acted on its revision {held}: refused, nothing removed; rebuild it with "
            f"'certfleet registry restore --cluster {cluster} --config FILE'"
        )
        self.cluster = cluster
        self.found = found
        self.held = held
        self.forked = forked
