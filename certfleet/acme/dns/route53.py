"""DNS-01 records in Amazon Route 53 (boto3).

An UPSERT replaces the whole TXT set of a name, so every write sends the values already
there plus ours, in one change; the value counts as served when that change is INSYNC.
Removal UPSERTs what remains without our values, or DELETEs the set (exactly as read)
when nothing remains. The hosted zone is the block's ``hosted_zone_id``, or found by
name (ListHostedZonesByName). Each read-modify-write of a name holds a lock, so threads
of one sync do not overwrite each other's values. Every AWS call is bounded (timeouts
and retries in :data:`CLIENT_CONFIG`).

IAM: route53:ChangeResourceRecordSets and route53:ListResourceRecordSets on the hosted
zones, route53:GetChange, and route53:ListHostedZonesByName when no id is configured
(docs/deploy-aws.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions

from certfleet.acme.dns.backend import TTL, Backend
from certfleet.acme.dns.block import DnsProviderConfig, normalize
from certfleet.acme.dns.errors import DnsError

if TYPE_CHECKING:
    from mypy_boto3_route53 import Route53Client
    from mypy_boto3_route53.type_defs import ResourceRecordSetOutputTypeDef

CLIENT_CONFIG = botocore.config.Config(
    connect_timeout=5, read_timeout=15, retries={"max_attempts": 4, "mode": "standard"}
)
ClientFactory = Callable[[], "Route53Client"]


def default_client() -> Route53Client:
    """A Route 53 client with bounded timeouts (credentials and endpoint as boto3 finds them)."""
    return boto3.client("route53", config=CLIENT_CONFIG)


def unquote(value: str) -> str:
    """A Route 53 TXT value without its surrounding quotes."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


class Route53(Backend):
    """A ``dns "route53"`` block: UPSERTs with every value, waited on until INSYNC."""

    poll_interval = 5.0
    _names_lock = threading.Lock()  # one read-modify-write of a TXT set at a time

    def __init__(
        self,
        block: DnsProviderConfig,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        client_factory: ClientFactory = default_client,
    ) -> None:
        super().__init__(block, clock, sleep)
        self._client_factory = client_factory
        self._client_made: Route53Client | None = None
        self._zone_ids: dict[str, str] = {}
        self._changes: dict[tuple[str, str], str] = {}  # (zone, record) -> last change id
        self._last_status = ""

    @property
    def _client(self) -> Route53Client:
        if self._client_made is None:
            self._client_made = self._client_factory()
        return self._client_made

    def _call(self, record: str, operation: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except botocore.exceptions.ClientError as err:
            code = err.response.get("Error", {}).get("Code", "error")
            message = err.response.get("Error", {}).get("Message", "")
            reason = f"Route 53 {operation}: {code} {message}".rstrip()
            raise DnsError(record, self.label, reason) from err
        except botocore.exceptions.BotoCoreError as err:
            reason = f"Route 53 {operation}: {type(err).__name__}"
            raise DnsError(record, self.label, reason) from err

    def _zone_id(self, zone: str, record: str) -> str:
        if self.block.hosted_zone_id:
            return self.block.hosted_zone_id.rsplit("/", 1)[-1]
        if zone not in self._zone_ids:
            found = self._hosted_zones(zone, record)
            if not found:
                raise DnsError(record, self.label, f"no hosted zone is named {zone}")
            public = [z for z in found if not z.get("Config", {}).get("PrivateZone", False)]
            candidates = public or found
            if len(candidates) > 1:
                raise DnsError(
                    record, self.label, f"several hosted zones are named {zone}: set hosted_zone_id"
                )
            self._zone_ids[zone] = candidates[0]["Id"].rsplit("/", 1)[-1]
        return self._zone_ids[zone]

    def _hosted_zones(self, zone: str, record: str) -> Sequence[Any]:
        answer = self._call(
            record,
            "ListHostedZonesByName",
            lambda: self._client.list_hosted_zones_by_name(DNSName=zone, MaxItems="20"),
        )
        return [z for z in answer["HostedZones"] if normalize(z["Name"]) == zone]

    def find_zone(self, record: str) -> str:
        """The longest hosted zone name that holds ``record`` (or the configured id's zone)."""
        if self.block.hosted_zone_id:
            zone_id = self.block.hosted_zone_id
            answer = self._call(
                record, "GetHostedZone", lambda: self._client.get_hosted_zone(Id=zone_id)
            )
            return normalize(answer["HostedZone"]["Name"])
        labels = record.split(".")
        for start in range(len(labels) - 1):
            candidate = ".".join(labels[start:])
            if self._hosted_zones(candidate, record):
                return candidate
        raise DnsError(record, self.label, "no hosted zone holds it")

    def _current(self, zone_id: str, record: str) -> ResourceRecordSetOutputTypeDef | None:
        answer = self._call(
            record,
            "ListResourceRecordSets",
            lambda: self._client.list_resource_record_sets(
                HostedZoneId=zone_id, StartRecordName=record, StartRecordType="TXT", MaxItems="1"
            ),
        )
        for found in answer["ResourceRecordSets"]:
            if normalize(found["Name"]) == record and found["Type"] == "TXT":
                return found
        return None

    def _change(self, zone: str, record: str, zone_id: str, change: Any) -> None:
        answer = self._call(
            record,
            "ChangeResourceRecordSets",
            lambda: self._client.change_resource_record_sets(
                HostedZoneId=zone_id, ChangeBatch={"Changes": [change]}
            ),
        )
        self._changes[(zone, record)] = answer["ChangeInfo"]["Id"]

    def publish(self, zone: str, record: str, value: str, values: tuple[str, ...]) -> None:
        zone_id = self._zone_id(zone, record)
        with self._names_lock:
            current = self._current(zone_id, record)
            records = current.get("ResourceRecords", []) if current else []
            present = [r["Value"] for r in records]
            have = {unquote(raw) for raw in present}
            wanted = present + [f'"{v}"' for v in values if v not in have]
            ttl = current.get("TTL", TTL) if current else TTL  # a set already there keeps its TTL
            rrset = {"Name": record, "Type": "TXT", "TTL": ttl,
                     "ResourceRecords": [{"Value": raw} for raw in wanted]}  # fmt: skip
            self._change(zone, record, zone_id, {"Action": "UPSERT", "ResourceRecordSet": rrset})

    def served(self, zone: str, record: str, values: tuple[str, ...]) -> bool:
        change_id = self._changes.get((zone, record))
        if change_id is None:
            return True
        answer = self._call(record, "GetChange", lambda: self._client.get_change(Id=change_id))
        self._last_status = answer["ChangeInfo"]["Status"]
        return bool(self._last_status == "INSYNC")

    def withdraw(self, zone: str, record: str, values: tuple[str, ...]) -> None:
        zone_id = self._zone_id(zone, record)
        with self._names_lock:
            current = self._current(zone_id, record)
            if current is None:
                return
            present = [r["Value"] for r in current.get("ResourceRecords", [])]
            remaining = [raw for raw in present if unquote(raw) not in values]
            if len(remaining) == len(present):
                return
            if remaining:
                rrset: Any = {"Name": record, "Type": "TXT", "TTL": current.get("TTL", TTL),
                              "ResourceRecords": [{"Value": raw} for raw in remaining]}  # fmt: skip
                change = {"Action": "UPSERT", "ResourceRecordSet": rrset}
            else:
                change = {"Action": "DELETE", "ResourceRecordSet": current}
            self._change(zone, record, zone_id, change)

    def not_served_reason(self) -> str:
        status = self._last_status or "unknown"
        return f"the Route 53 change was not INSYNC before the deadline (status {status})"
