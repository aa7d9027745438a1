"""Fuzzing the decoders that tests/unit/test_bundle_fuzz.py and tests/unit/test_config_*.py do
not reach: the sync's state (authentic, sealed with the sync secret, but hostile JSON
inside), the sync's lease object, the agent's state file, the provider's JSON answers, and
both config loaders fed mutations of valid files (rather than random text). Bounded by
``MAX_EXAMPLES``; only the documented error types may escape: ``StateError`` (sync and
agent), ``ApiError``, ``ConfigError``. (These tests found three such escapes — huge numbers
as provider times, and JSON of the wrong shape in both state files — which are fixed.)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certfleet.apiv3 import ApiError
from certfleet.apiv3.model import parse_cert_result, parse_csr_result, parse_order, parse_order_page
from certfleet.bundle import ClusterSecret, SigningKey
from certfleet.config import ConfigError, parse_agent_config
from certfleet.config.sync import parse_sync_config
from certfleet.store import open_store
from certfleet.sync import state as state_module
from certfleet.sync.errors import StateError
from certfleet.sync.layout import state_key
from certfleet.sync.lease import encode_lease, lease_expiry, mac_key
from certfleet.sync.sealing import SyncKeys
from certfleet.sync.state import ClusterState, StateStore
from node_agent.errors import StateError as AgentStateError
from node_agent.statestore import StateStore as AgentStateStore
from tests.plugins.faults import LEDGER

MAX_EXAMPLES = 150
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # seeded: the same examples on every run
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CLUSTER = "web"
SECRET = ClusterSecret.generate("k1")
SYNC_KEYS = SyncKeys(SigningKey.generate().sync_secret("state"), (), (SECRET,))
NOW_MS = 1_800_000_000_000

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


SMALL_JSON = st.recursive(  # numbers a time can hold (huge ones: see the explicit test)
    st.none()
    | st.booleans()
    | st.integers(-(2**31), 2**31)
    | st.floats(-(2.0**31), 2.0**31, allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def mutate_json(data: st.DataObject, document: Any, values: Any = JSON) -> Any:
    """``document`` with one subtree (chosen by ``data``) replaced by random JSON."""
    if isinstance(document, dict) and document and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(document)))
        return {**document, key: mutate_json(data, document[key], values)}
    if isinstance(document, list) and document and data.draw(st.booleans()):
        index = data.draw(st.integers(0, len(document) - 1))
        spoiled = mutate_json(data, document[index], values)
        return [*document[:index], spoiled, *document[index + 1 :]]
    return data.draw(values)


def valid_sync_state() -> dict[str, Any]:
    """A state with one order, one pending key, a tombstone and a head."""
    document: dict[str, Any] = json.loads(ClusterState.new().encode())
    order = {
        "dns_names": ["a.example"],
        "key_type": "ecdsa",
        "bundle": "00" * 32,
        "pubkey_hash": "11" * 32,
        "serial": "1",
        "not_before": 1,
        "not_after": 2,
        "install_after": 1,
        "secret_ids": ["k1"],
    }
    pending = {
        "object": "22" * 32,
        "pubkey_hash": "33" * 32,
        "dns_names": ["b.example"],
        "key_type": "ecdsa",
        "created_at": 1,
        "reason": "new",
    }
    document.update(orders={"a.example": order}, pending={"b.example": pending},
                    tombstones={"c.example": 5}, rekey=["a.example"],
                    head={"generation": 3, "issued_at": 1, "valid_until": 9,
                          "secret_ids": ["k1"]})  # fmt: skip
    ClusterState.decode(json.dumps(document).encode())  # valid before it is spoiled
    return document


# -- the sync state -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def state_store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return open_store(tmp_path_factory.mktemp("fuzz-store").as_uri())


def load_sync_state(store: Any, plain: bytes) -> None:
    sealed = SYNC_KEYS.seal(state_module.KIND, CLUSTER, state_module.IDENTITY, plain)
    store.put(state_key(CLUSTER), sealed)
    try:
        StateStore(store, CLUSTER, SYNC_KEYS).load(now_ms=NOW_MS)
    except StateError:
        pass


@SETTINGS
@given(JSON)
def test_sync_state_with_arbitrary_json_raises_only_state_error(
    state_store: Any, value: Any
) -> None:
    LEDGER.tried()
    load_sync_state(state_store, json.dumps(value).encode())


@SETTINGS
@given(st.data())
def test_sync_state_with_one_field_spoiled_raises_only_state_error(
    state_store: Any, data: st.DataObject
) -> None:
    LEDGER.tried()
    load_sync_state(state_store, json.dumps(mutate_json(data, valid_sync_state())).encode())


def test_a_deeply_nested_sync_state_raises_only_state_error(state_store: Any) -> None:
    LEDGER.tried()
    with pytest.raises(StateError, match="not valid JSON"):
        deep = b"[" * 200_000 + b"]" * 200_000
        store_state(state_store, deep)
        StateStore(state_store, CLUSTER, SYNC_KEYS).load(now_ms=NOW_MS)


def store_state(store: Any, plain: bytes) -> None:
    sealed = SYNC_KEYS.seal(state_module.KIND, CLUSTER, state_module.IDENTITY, plain)
    store.put(state_key(CLUSTER), sealed)


# -- the lease ----------------------------------------------------------------------------

LEASE_KEY = mac_key(SYNC_KEYS.current)


@SETTINGS
@given(st.one_of(JSON.map(lambda value: json.dumps(value).encode()), st.binary(max_size=600)))
def test_any_lease_object_is_an_expiry_or_broken(data: bytes) -> None:
    LEDGER.tried()
    expiry = lease_expiry(LEASE_KEY, CLUSTER, data)
    assert expiry is None  # nothing made without the sync key is authentic


def test_deep_huge_or_forged_leases_are_broken_and_an_authentic_one_is_read() -> None:
    LEDGER.tried(4)
    assert lease_expiry(LEASE_KEY, CLUSTER, b"[" * 100_000 + b"]" * 100_000) is None
    assert lease_expiry(LEASE_KEY, CLUSTER, b'{"owner":"' + b"x" * 10_000 + b'"}') is None
    forged = {"owner": "me", "expires_at": 2e18, "mac": "00" * 32}
    assert lease_expiry(LEASE_KEY, CLUSTER, json.dumps(forged).encode()) is None
    authentic = encode_lease(LEASE_KEY, CLUSTER, "me", 1234.5)
    assert lease_expiry(LEASE_KEY, CLUSTER, authentic) == 1234.5
    assert lease_expiry(LEASE_KEY, "other", authentic) is None, "bound to its cluster"


# -- the agent state file -----------------------------------------------------------------


def valid_agent_state() -> dict[str, Any]:
    return {
        "schema": 1,
        "clusters": {"web": {"applied_etag": "e", "applied_generation": 1,
                             "accepted_generation": 1, "valid_until": 2, "shard_count": 16,
                             "shards": {"0": {"hash": "00", "entries": [], "tombstones": []}}}},
        "orders": {"a.example": {"cluster": "web", "safe_name": "a.example", "bundle_hash": "00",
                                 "serial": "1", "key_type": "ecdsa", "not_after": 5,
                                 "version": "v1"}},
        "owed": [{"command": "true", "updated": ["a.example"]}],
    }  # fmt: skip


def load_agent_state(directory: Path, raw: bytes) -> None:
    (directory / "state.json").write_bytes(raw)
    try:
        AgentStateStore(str(directory)).load()
    except AgentStateError:
        pass


@SETTINGS
@given(st.data())
def test_agent_state_file_spoiled_raises_only_state_error(
    tmp_path: Path, data: st.DataObject
) -> None:
    LEDGER.tried()
    load_agent_state(tmp_path, json.dumps(mutate_json(data, valid_agent_state())).encode())


@SETTINGS
@given(st.binary(max_size=200))
def test_agent_state_file_of_random_bytes_raises_only_state_error(
    tmp_path: Path, raw: bytes
) -> None:
    LEDGER.tried()
    load_agent_state(tmp_path, raw)


# -- the provider's answers ---------------------------------------------------------------

ORDER = {
    "name": "a.example", "cluster": "web", "state": "active",
    "identifiers": [{"type": "dns", "value": "a.example", "approval": "http"}],
    "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
}  # fmt: skip
ANSWERS = {
    "order": (ORDER, parse_order),
    "page": ({"orders": [ORDER], "next": None}, parse_order_page),
    "csr": ({"pubkey_hash": "ab" * 32, "state": "pending"}, parse_csr_result),
    "cert": ({"state": "issued", "crt": "x", "chain": ["y"], "serial": "1",
              "not_before": "2024-01-01T00:00:00Z", "not_after": "2024-02-01T00:00:00Z"},
             parse_cert_result),
}  # fmt: skip


@SETTINGS
@given(st.sampled_from(sorted(ANSWERS)), st.data())
def test_provider_answers_spoiled_raise_only_api_errors(kind: str, data: st.DataObject) -> None:
    LEDGER.tried()
    valid, parse = ANSWERS[kind]
    try:
        parse(mutate_json(data, copy.deepcopy(valid), SMALL_JSON), "GET /fuzz")
    except ApiError:
        pass


@pytest.mark.parametrize("value", [1e20, 10**30, -(10**30), float("inf")])
@pytest.mark.parametrize("field", ["not_before", "not_after"])
def test_a_time_out_of_range_is_a_malformed_answer(field: str, value: float) -> None:
    LEDGER.tried()
    answer = {**ANSWERS["cert"][0], field: value}
    with pytest.raises(ApiError):
        parse_cert_result(answer, "GET /orders/a.example/certs/ab")


# -- both config loaders, fed mutations of valid files ------------------------------------

SECRET_TEXT = SECRET.export()
PUBLISHER = SigningKey.generate().public_key().export()
AGENT_CONFIG = f"""store = "s3://bucket/certfleet"
store_endpoint = "http://127.0.0.1:8333"
state_dir = "/var/lib/certfleet"
poll_interval = "60s"
cluster "webservers" {{
  secret    = "{SECRET_TEXT}"
  publisher = "{PUBLISHER}"
}}
default {{
  on_update = ["systemctl reload nginx"]
  files {{ combined = "/etc/haproxy/certs/${{ORDER_NAME}}.pem" }}
}}
order "example.com" {{ on_update = ["systemctl reload postfix"] }}
"""
SYNC_CONFIG = f"""api_key = "key"
store = "s3://my-bucket/certfleet"
signing_key = "{SigningKey.generate().export()}"
cluster "webservers" {{
  secret   = ["{SECRET_TEXT}"]
  key_type = "ecdsa"
  order "legacy.example.com" {{ key_type = "rsa" }}
}}
"""
PIECES = st.sampled_from(['"', "{", "}", "[", "]", "=", "\n", "#", "${", "\\", "\x00", "ü", " "])


def mutate_text(data: st.DataObject, text: str) -> str:
    for _ in range(data.draw(st.integers(1, 3))):
        start = data.draw(st.integers(0, len(text)))
        end = data.draw(st.integers(start, min(len(text), start + 8)))
        piece = data.draw(PIECES | st.text(max_size=6))
        text = text[:start] + piece + text[end:]
    return text


def test_the_unmutated_configs_load() -> None:
    parse_agent_config(AGENT_CONFIG, "agent.conf")
    parse_sync_config(SYNC_CONFIG, "sync.conf")


@SETTINGS
@given(st.sampled_from(["agent", "sync"]), st.data())
def test_mutated_configs_give_a_config_or_a_config_error(kind: str, data: st.DataObject) -> None:
    LEDGER.tried()
    text = mutate_text(data, AGENT_CONFIG if kind == "agent" else SYNC_CONFIG)
    parse = parse_agent_config if kind == "agent" else parse_sync_config
    try:
        parse(text, f"{kind}.conf")
    except ConfigError as err:
        assert SECRET_TEXT.split(":", 1)[1] not in str(err), "a config error echoed a secret"
