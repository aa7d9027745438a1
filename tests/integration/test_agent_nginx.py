"""What clients see: nginx serving the files the agent installs, checked with openssl s_client.

nginx runs as a user process on a free 127.0.0.1 port, with its own prefix, pid file, error
log and temp paths, and serves ``orders/www.example.com/ecdsa.chained.pem`` and its key. The
agent's ``check_command`` is ``nginx -t`` and its ``on_update`` ``nginx -s reload`` (both with
the test's ``-c``/``-p``). Steps: the first install is served; a renewal is served after the
reload; a certificate nginx refuses (a P-192 key, "ee key too small" under OpenSSL's default
security level) fails ``nginx -t``, so the agent rolls back and nginx keeps serving the
previous certificate; ``--status`` and the metrics file tell the same story.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from certfleet.config import parse_agent_config
from node_agent.agent import Agent
from node_agent.status import build_status
from tests.plugins.nginx import SERVER_NAME as WWW
from tests.plugins.nginx import Nginx
from tests.plugins.nginx_site import weak_bundle

if TYPE_CHECKING:
    from tests.plugins.publisher import Publisher


def test_nginx_serves_what_the_agent_installs(
    tmp_path: Path, make_publisher: Callable[..., Publisher], nginx: Nginx
) -> None:
    (tmp_path / "store").mkdir()
    pub = make_publisher(f"file://{tmp_path}/store")
    root = tmp_path / "root.pem"
    root.write_bytes(pub.ca.root_pem)
    state = tmp_path / "state"
    base = (
        f'store = "{pub.store.url}"\nstate_dir = "{state}"\nhook_timeout = "20s"\n'
        f'metrics_file = "{tmp_path / "agent.prom"}"\n' + pub.cluster_stanza()
    )

    def agent(extra: str = "") -> Agent:
        return Agent(parse_agent_config(base + extra, str(tmp_path / "agent.conf")))

    first = pub.issue(WWW)
    pub.publish()
    assert agent().poll_once().installed == (WWW,)
    order_dir = state / "orders" / WWW
    nginx.write_config(order_dir / "ecdsa.chained.pem", order_dir / "ecdsa.key.pem")
    nginx.start()
    assert nginx.served(root).serial_number == int(first.serial, 16)

    # With nginx up, the agent checks its config and reloads it after every update.
    running = agent(
        f'default {{\n  check_command = "{nginx.command("-t", "-q")}"\n'
        f'  on_update = ["{nginx.command("-s", "reload")}"]\n}}\n'
    )
    renewed = pub.issue(WWW)
    pub.publish()
    result = running.poll_once()
    assert result.ok and result.installed == (WWW,), result.problems
    assert [run.ok for run in result.commands] == [True, True]  # nginx -t, then the reload
    renewed_serial = int(renewed.serial, 16)
    assert nginx.served_after_reload(root, renewed_serial).serial_number == renewed_serial

    # A certificate nginx refuses: nginx -t fails, the agent rolls back, nginx is untouched.
    weak = weak_bundle(pub)
    pub.set_entry(weak, pub.put_bundle(weak))
    pub.publish()
    result = running.poll_once()
    assert result.rolled_back == (WWW,) and not result.ok
    assert "rolled back to the previous version" in result.problems[0].message
    assert [run.ok for run in result.commands] == [False]  # no reload after a failed check
    assert (order_dir / "ecdsa.crt.pem").read_bytes() == renewed.certificate_pem
    done = subprocess.run(nginx.command("-t", "-q").split(), capture_output=True, check=False)
    assert done.returncode == 0  # the files on disk are good again
    time.sleep(0.3)
    assert nginx.served(root).serial_number == renewed_serial
    assert nginx.process is not None and nginx.process.poll() is None

    # --status and the metrics file after the rollback.
    report = build_status(running.config, now=int(time.time()))
    (order,) = report["orders"]
    assert order["serial"] == renewed.serial and order["names"] == [WWW]
    assert order["on_update"][0]["ok"] is True  # the last reload (the renewal's) succeeded
    assert report["hook_failures_total"] == 1  # the failed nginx -t
    prom = (tmp_path / "agent.prom").read_text()
    assert "certfleet_agent_hook_failures_total 1\n" in prom
    assert f'certfleet_agent_certificate_not_after_timestamp_seconds{{order="{WWW}"}} ' in prom
