"""The agent's post-reload checks against real nginx on loopback: shared by the probe,
backoff and nginx tests.

Fixture ``site`` (function): a :class:`Site`, nginx serving www.example.com from an agent's
state directory (a ``file://`` store, the publisher plugin playing the sync, first install
done); ``site.agent(...)`` and ``site.probing(on_update)`` make agents for it, and it reads
what nginx serves and what the node's ack says. Plain helpers: :func:`closed_port` (a
127.0.0.1 port nothing listens on) and :func:`weak_bundle` (a bundle every agent check
accepts but nginx refuses).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from certfleet.bundle import Bundle, open_ack
from certfleet.config import parse_agent_config
from node_agent.ack import ack_key
from node_agent.agent import Agent
from tests.plugins.nginx import SERVER_NAME as WWW
from tests.plugins.nginx import Nginx

if TYPE_CHECKING:
    from tests.plugins.publisher import Publisher


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once closed


def weak_bundle(pub: Publisher) -> Bundle:
    """A bundle every agent check accepts but nginx refuses: a P-192 leaf key."""
    now = int(time.time())
    weak_key = ec.generate_private_key(ec.SECP192R1())
    return pub.make_bundle(WWW, key=weak_key, not_before=now - 3600, lifetime=3600 + 86400)


class Site:
    """nginx serving www.example.com from an agent's state directory (first install done)."""

    def __init__(self, tmp: Path, pub: Publisher, nginx: Nginx) -> None:
        self.tmp = tmp
        self.pub = pub
        self.nginx = nginx
        self.root = tmp / "root.pem"
        self.root.write_bytes(pub.ca.root_pem)
        self.state = tmp / "state"
        self.crt = self.state / "orders" / WWW / "ecdsa.crt.pem"
        self.first = pub.issue(WWW)
        pub.publish()
        assert self.agent().poll_once().installed == (WWW,)
        order_dir = self.crt.parent
        nginx.write_config(order_dir / "ecdsa.chained.pem", order_dir / "ecdsa.key.pem")
        nginx.start()

    def agent(self, on_update: str = "", probe: str = "") -> Agent:
        block = ""
        if on_update:
            block = f'default {{\n  on_update = ["{on_update}"]\n{probe}}}\n'
        text = (
            f'store = "{self.pub.store.url}"\nstate_dir = "{self.state}"\n'
            f'hook_timeout = "20s"\nmetrics_file = "{self.tmp / "agent.prom"}"\n'
            + self.pub.cluster_stanza()
            + block
        )
        return Agent(parse_agent_config(text, str(self.tmp / "agent.conf")))

    def probing(self, on_update: str) -> Agent:
        """An agent that runs ``on_update`` and then probes nginx (1 s at most)."""
        probe = f'  probe = "127.0.0.1:{self.nginx.port}"\n  probe_timeout = "1s"\n'
        return self.agent(on_update, probe)

    def served_serial(self) -> int:
        return int(self.nginx.served(self.root).serial_number)

    def served_after_reload(self, serial: str) -> int:
        """The serial served once ``serial`` is (old workers may answer for a moment)."""
        return int(self.nginx.served_after_reload(self.root, int(serial, 16)).serial_number)

    def ack(self, agent: Agent) -> dict[str, tuple[str, str, str]]:
        """The orders of this node's ack: name -> (state, serial, detail)."""
        path = Path(self.pub.store.url[len("file://") :]) / ack_key("web", agent.node_id)
        ack = open_ack(
            path.read_bytes(), cluster="web", node_id=agent.node_id, secrets=self.pub.secrets
        )
        return {o.order_name: (o.state, o.serial, o.detail) for o in ack.orders}


@pytest.fixture
def site(tmp_path: Path, make_publisher: Callable[..., Publisher], nginx: Nginx) -> Site:
    (tmp_path / "store").mkdir()
    return Site(tmp_path, make_publisher(f"file://{tmp_path}/store"), nginx)
