"""The local servers' ports (``certfleet.sandbox.devstack``): below 45000 with their gRPC twins, out
of the ephemeral range, and picked again when a restart finds them taken.

The pure rules run on a fake "is this port free"; the re-pick runs real servers: a SeaweedFS
``weed mini`` and a sandbox are stopped, one of their ports (for SeaweedFS: a gRPC twin, the
port the issue saw taken) is bound by someone else, and ``start()`` must come up elsewhere.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfleet.sandbox import devstack
from tests.plugins.binaries import require_binary


@pytest.mark.parametrize("ephemeral", [32768, 40000, 20000, 1024])
@pytest.mark.parametrize("seed", range(5))
def test_picked_ports_and_their_twins_stay_below_45000(ephemeral: int, seed: int) -> None:
    ports = devstack.pick_ports(5, random.Random(seed), free=lambda port: True, ephemeral=ephemeral)
    twins = [port + devstack.GRPC_OFFSET for port in ports]
    assert len(set(ports + twins)) == 10  # no port is another one's twin
    assert all(devstack.PORT_FLOOR <= port for port in ports)
    assert all(twin < devstack.PORT_CEILING for twin in twins)
    if ephemeral - devstack.GRPC_OFFSET - devstack.PORT_FLOOR >= 2000:
        assert all(twin < ephemeral for twin in twins)  # out of the ephemeral range


def test_the_default_ephemeral_range_leaves_every_port_below_it() -> None:
    assert devstack.port_range(twins=True, ephemeral=32768) == (10000, 22768)
    assert devstack.port_range(twins=False, ephemeral=32768) == (10000, 32768)
    assert devstack.port_range(twins=True, ephemeral=50000) == (10000, 35000)


def test_a_port_or_a_twin_that_is_taken_is_not_picked() -> None:
    taken = set(range(10000, 22000)) | {port + devstack.GRPC_OFFSET for port in range(22000, 22700)}
    ports = devstack.pick_ports(
        3, random.Random(1), free=lambda port: port not in taken, ephemeral=32768
    )
    assert all(22700 <= port < 22768 for port in ports), ports


def test_stack_configs_holding_a_secret_are_private_even_over_a_wider_file(
    tmp_path: Path,
) -> None:
    fresh, older = tmp_path / "server1.conf", tmp_path / "cluster-web.conf"
    older.write_text("old")
    older.chmod(0o644)
    for path in (fresh, older):
        devstack.write_private(path, 'secret = "k1:..."\n')
        assert path.read_text() == 'secret = "k1:..."\n'
        assert path.stat().st_mode & 0o777 == 0o600


def test_no_free_port_is_an_error_not_a_hang() -> None:
    with pytest.raises(devstack.StackError, match="no 2 free ports"):
        devstack.pick_ports(2, random.Random(1), free=lambda port: False)


@pytest.fixture
def squatter() -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


def occupy(port: int, sockets: list[socket.socket]) -> None:
    """Listen on ``port`` (over the stopped server's connections still in TIME_WAIT)."""
    sock = socket.socket()
    sockets.append(sock)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((devstack.LOOPBACK, port))
    sock.listen(1)


def test_a_seaweedfs_restart_whose_grpc_twin_was_taken_picks_new_ports(
    tmp_path: Path, squatter: list[socket.socket]
) -> None:
    server = devstack.SeaweedFS(require_binary("weed"), tmp_path / "weed", bucket="devstack-test")
    try:
        server.start()
        first = dict(server.ports)
        assert all(port + devstack.GRPC_OFFSET < 45000 for port in first.values())
        server.stop()
        occupy(first["s3"] + devstack.GRPC_OFFSET, squatter)  # what a busy host did
        server.start()
        assert server.running and server.ports != first
        assert all(port + devstack.GRPC_OFFSET < 45000 for port in server.ports.values())
        assert server.endpoint == f"http://127.0.0.1:{server.ports['s3']}"
        assert server.env["AWS_ENDPOINT_URL_S3"] == server.endpoint
        server.stop()
        server.start()  # nothing taken this time: the same ports again
        assert server.endpoint == f"http://127.0.0.1:{server.ports['s3']}"
    finally:
        server.stop()


def test_a_sandbox_restart_whose_port_was_taken_picks_another(
    tmp_path: Path, squatter: list[socket.socket]
) -> None:
    sandbox = devstack.Sandbox(tmp_path / "sandbox" / "data")
    try:
        sandbox.start()
        first = sandbox.port
        assert devstack.PORT_FLOOR <= first < 45000
        sandbox.stop()
        occupy(first, squatter)
        sandbox.start()
        assert sandbox.running and sandbox.port != first and sandbox.port < 45000
        assert sandbox.url == f"http://127.0.0.1:{sandbox.port}/api/v3"
        assert sandbox.root_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    finally:
        sandbox.stop()
