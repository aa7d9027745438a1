"""The sandbox's orders and certificates, in memory and as JSON files in ``--data``.

Layout of a data directory (format 1)::

    ca.json                    the test CA: root, intermediate and its key (mode 0600)
    orders/<sha256(name)>.json one order with every certificate requested for it

Each file is replaced atomically (temp file in the same directory, fsync, rename), so a
sandbox killed at any instant restarts with each order either before or after its last
change. :func:`bulk_create` writes order files directly, for benchmarks that need many
orders fast; run it while no sandbox is using the directory.
"""

from __future__ import annotations

import bisect
import datetime
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from certfleet.bundle.names import validate_cluster_name, validate_dns_name, validate_order_name
from certfleet.orders import Identifier
from certfleet.sandbox.ca import SandboxCa
from certfleet.sandbox.errors import DataDirError, SpecRefused

FORMAT = 1


@dataclass(frozen=True)
class CertRecord:
    """A CSR submitted for an order, and the certificate once issued."""

    pubkey_hash: str
    public_key_pem: str
    names: tuple[str, ...]
    submitted_at: float
    ready_at: float
    crt_pem: str | None = None
    serial: int | None = None
    not_before: float | None = None
    not_after: float | None = None


@dataclass(frozen=True)
class OrderRecord:
    """An order; ``certs`` in submission order (the last is the newest)."""

    name: str
    cluster: str
    identifiers: tuple[Identifier, ...]
    created_at: float
    updated_at: float
    certs: tuple[CertRecord, ...] = field(default=())

    @property
    def dns_names(self) -> list[str]:
        return [i.value for i in self.identifiers]

    def cert(self, pubkey_hash: str) -> CertRecord | None:
        """The certificate requested with that key, if any."""
        for record in self.certs:
            if record.pubkey_hash == pubkey_hash:
                return record
        return None


@dataclass(frozen=True)
class OrderSpec:
    """What :func:`bulk_create` makes: an order with ``dns_names`` (the first is the CN)."""

    cluster: str
    dns_names: tuple[str, ...]
    name: str | None = None
    approval: str = "dns"


def order_to_json(order: OrderRecord) -> dict[str, object]:
    return {"format": FORMAT, **asdict(order)}


def order_from_json(data: object, path: str) -> OrderRecord:
    """The order stored by :func:`order_to_json`; :class:`DataDirError` if malformed."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DataDirError(path, f"not a format {FORMAT} sandbox order file")
    try:
        return OrderRecord(
            name=data["name"],
            cluster=data["cluster"],
            identifiers=tuple(Identifier(**i) for i in data["identifiers"]),
            created_at=data["created_at"],
            updated_at=data["updated_at"],
            certs=tuple(CertRecord(**{**c, "names": tuple(c["names"])}) for c in data["certs"]),
        )
    except (KeyError, TypeError) as err:
        raise DataDirError(path, "malformed sandbox order file") from err


def write_json_atomically(path: Path, data: object, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` as JSON: temp file (mode 0600), fsync, rename."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, separators=(",", ":"))
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataDirError(str(path), f"unreadable: {err}") from err


def open_ca(data_dir: Path) -> SandboxCa:
    """The CA kept in ``data_dir/ca.json``, made (and saved, mode 0600) on first use."""
    path = data_dir / "ca.json"
    if path.exists():
        return SandboxCa.from_json(read_json(path), str(path))
    ca = SandboxCa.create(datetime.datetime.now(datetime.timezone.utc))
    write_json_atomically(path, ca.to_json())
    return ca


def _order_path(orders_dir: Path, name: str) -> Path:
    return orders_dir / (hashlib.sha256(name.encode()).hexdigest() + ".json")


class OrderBook:
    """Every order, by name, kept sorted for stable pages; thread-safe.

    Callers hold :attr:`lock` across a read-modify-write (:meth:`get` then :meth:`put`).
    """

    def __init__(self, data_dir: Path) -> None:
        self.lock = threading.RLock()
        self._dir = data_dir / "orders"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._orders: dict[str, OrderRecord] = {}
        for path in self._dir.glob("*.json"):
            order = order_from_json(read_json(path), str(path))
            self._orders[order.name] = order
        self._names = sorted(self._orders)

    def __len__(self) -> int:
        return len(self._orders)

    def get(self, name: str) -> OrderRecord | None:
        """The order named ``name``, or None if there is none."""
        return self._orders.get(name)

    def put(self, order: OrderRecord) -> None:
        """Store ``order`` (new or replacing the one of the same name), on disk first."""
        with self.lock:
            write_json_atomically(_order_path(self._dir, order.name), order_to_json(order))
            if order.name not in self._orders:
                bisect.insort(self._names, order.name)
            self._orders[order.name] = order

    def delete(self, name: str) -> None:
        """Forget the order ``name`` (which must exist) and its certificates."""
        with self.lock:
            _order_path(self._dir, name).unlink(missing_ok=True)
            del self._orders[name]
            del self._names[bisect.bisect_left(self._names, name)]

    def page(
        self, cluster: str | None, after: str | None, limit: int
    ) -> tuple[list[OrderRecord], str | None]:
        """Up to ``limit`` orders named after ``after``, by name; and the last name if more."""
        with self.lock:
            start = 0 if after is None else bisect.bisect_right(self._names, after)
            found: list[OrderRecord] = []
            for name in self._names[start:]:
                order = self._orders[name]
                if cluster is not None and order.cluster != cluster:
                    continue
                if len(found) == limit:
                    return found, found[-1].name
                found.append(order)
            return found, None


def numbered_specs(
    cluster: str, count: int, domain: str = "example.test", names_per_order: int = 1
) -> Iterator[OrderSpec]:
    """``count`` specs ``host<i>.<domain>`` (plus ``alt<j>.host<i>.<domain>`` SANs)."""
    for index in range(count):
        first = f"host{index}.{domain}"
        alts = tuple(f"alt{j}.{first}" for j in range(1, names_per_order))
        yield OrderSpec(cluster=cluster, dns_names=(first, *alts))


def bulk_create(
    data_dir: str | os.PathLike[str],
    specs: Iterable[OrderSpec],
    *,
    unsafe_names: bool = False,
    skip_existing: bool = False,
    now: float | None = None,
) -> int:
    """Create orders straight in a sandbox data directory, without HTTP; return how many.

    For benchmarks: 100,000 orders take seconds (files are renamed into place but not
    fsynced one by one). Names are checked as the API checks them (unless
    ``unsafe_names``; a bad name raises ``certfleet.bundle.UnsafeNameError``, a bad
    approval :class:`SpecRefused`); an order whose name already exists raises :class:`DataDirError`,
    or is left as it is with ``skip_existing`` (then it does not count).
    The sandbox must not be running on ``data_dir``; start it afterwards.
    Example: ``bulk_create(path, numbered_specs("web", 100_000))``.
    """
    orders_dir = Path(data_dir) / "orders"
    orders_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.time() if now is None else now
    count = 0
    for spec in specs:
        names = (
            spec.dns_names if unsafe_names else tuple(validate_dns_name(n) for n in spec.dns_names)
        )
        name = names[0] if spec.name is None else spec.name
        if not unsafe_names:
            validate_order_name(name)
        validate_cluster_name(spec.cluster)
        if spec.approval not in ("http", "dns"):
            raise SpecRefused(name, "approval must be http or dns")
        if spec.approval == "http" and any(n.startswith("*.") for n in names):
            raise SpecRefused(name, "wildcard names need dns approval")
        path = _order_path(orders_dir, name)
        if path.exists():
            if skip_existing:
                continue
            raise DataDirError(str(path), f"order {name!r} already exists")
        order = OrderRecord(
            name=name,
            cluster=spec.cluster,
            identifiers=tuple(Identifier(n, spec.approval) for n in names),
            created_at=stamp,
            updated_at=stamp,
        )
        write_json_atomically(path, order_to_json(order), durable=False)
        count += 1
    return count
