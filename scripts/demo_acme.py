"""``make demo-acme``: certfleet with the ACME provider on this machine, step by step.

It starts, all on 127.0.0.1 and as the current user: SeaweedFS (the S3 store), bind9 (the
authoritative DNS server of ``example.test``, updatable by a TSIG key), pebble (Let's
Encrypt's test CA, which resolves names and validates DNS-01 through that bind9) and nginx
(answering HTTP-01 on pebble's validation port with docs/acme.md's stateless snippet); the
servers are the test suite's own (tests/plugins/acme_lab.py and pebble.py). Then it runs
what an operator runs: ``certfleet init --provider acme``, the ``dns "rfc2136"`` block,
``certfleet acme thumbprint``, ``certfleet clusters add``, ``certfleet add`` (two names by
HTTP-01, a wildcard by DNS-01), ``certfleet sync --once`` and ``certfleet-agent --once``,
and ends with ``openssl verify`` of what the agent installed against pebble's root.

It needs the system packages ``pebble``, ``bind9`` (``named``), ``nginx`` and ``openssl``
(it says how to install the missing ones and stops). Everything lives in
``.stack/demo-acme/`` (emptied at start); every server it started is stopped at the end,
also after a failure or Ctrl-C. Exit status 0 when every step worked, 1 otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # certfleet, when the venv's editable install is missing

from demo import (  # noqa: E402  (scripts/demo.py: the same printing and checks)
    DemoFailed,
    heading,
    installed_files,
    run,
    run_demo,
    show,
    shown_path,
    started_servers,
)

from certfleet.sandbox.devstack import (  # noqa: E402
    SeaweedFS,
    StackError,
    find_weed,
    write_private,
)
from tests.plugins.acme_lab import TSIG_KEY_NAME, Bind9, free_port  # noqa: E402
from tests.plugins.pebble import Http01Nginx, Pebble, docs_nginx_snippet  # noqa: E402

WORK = REPO / ".stack" / "demo-acme"
BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
ZONE = "example.test"
CLUSTER = "web"
# program -> the Debian/Ubuntu package that ships it
PACKAGES = {
    "pebble": "pebble", "pebble-challtestsrv": "pebble", "named": "bind9", "nginx": "nginx",
    "openssl": "openssl",
}  # fmt: skip


def find_program(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def missing_packages() -> list[str]:
    return sorted({package for name, package in PACKAGES.items() if not find_program(name)})


def certfleet_has_acme() -> bool:
    """Whether this certfleet's CLI offers the ACME provider (``init --provider``)."""
    done = subprocess.run(
        [str(BIN / "certfleet"), "init", "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return "--provider" in done.stdout


def demo() -> None:
    if not certfleet_has_acme():
        raise DemoFailed(
            "this certfleet has no ACME provider: `certfleet init --help` lacks --provider"
        )
    absent = missing_packages()
    if absent:
        raise DemoFailed(
            f"missing system packages: {' '.join(absent)}. On Debian or Ubuntu: "
            f"sudo apt-get install {' '.join(absent)}  (the demo runs them as your user on "
            "127.0.0.1; no service needs to be enabled)"
        )
    env = dict(os.environ)
    with started_servers(WORK, "all stopped") as servers:
        heading(
            1,
            "Start the store, the DNS server and the CA",
            "SeaweedFS stands in for Amazon S3. bind9 is the authoritative server of",
            f"{ZONE}; a TSIG key may update its TXT records. pebble is Let's Encrypt's TEST CA:",
            "it resolves names and checks DNS-01 records through that bind9. All on 127.0.0.1.",
        )
        started = time.monotonic()
        store = SeaweedFS(find_weed(), WORK / "seaweedfs", bucket="certfleet")
        servers.append(store)
        store.start()
        bind9 = Bind9(str(find_program("named")), WORK / "bind9", free_port())
        servers.append(bind9)
        bind9.add_zone(ZONE, f"@ IN A {LOOPBACK}\nwww IN A {LOOPBACK}\n")
        bind9.start()
        pebble = Pebble(
            str(find_program("pebble")), str(find_program("pebble-challtestsrv")),
            WORK / "pebble",
        )  # fmt: skip
        pebble.dns_server = bind9.server  # its A lookups (HTTP-01) and TXT lookups (DNS-01)
        servers.append(pebble)
        pebble.start()  # real validation, pebble's default 5 % of nonces rejected
        show(f"   S3 store (SeaweedFS):   {store.endpoint}, bucket {store.bucket!r}")
        show(f"   bind9 ({ZONE}):     {bind9.server}, TSIG key {TSIG_KEY_NAME}")
        show(f"   pebble (ACME CA):       {pebble.directory_url}")
        show(f"   all up in {time.monotonic() - started:.1f} s")
        env.update(store.env)
        steps(env, store, pebble, bind9, servers)


def steps(
    env: dict[str, str],
    store: SeaweedFS,
    pebble: Pebble,
    bind9: Bind9,
    servers: list[Any],
) -> None:
    certfleet, agent = str(BIN / "certfleet"), str(BIN / "certfleet-agent")
    sync_conf, stanza = WORK / "sync.conf", WORK / f"cluster-{CLUSTER}.conf"
    store_url = f"s3://{store.bucket}/demo"
    config = ["--config", str(sync_conf)]

    heading(
        2,
        "Write the sync config for the ACME provider",
        "A new ACME account key goes into the config (no network yet: the account is",
        "registered at the first sync). --acme-ca-bundle trusts pebble's own HTTPS.",
    )
    run(
        [certfleet, "init", "--provider", "acme", "--acme-directory", pebble.directory_url,
         "--acme-email", "ops@example.test", "--acme-ca-bundle", str(pebble.ca_bundle),
         *config, "--store", store_url, "--store-endpoint", store.endpoint],
        env=env,
    )  # fmt: skip
    show("   and the DNS-01 block (RFC 2136 to bind9, TSIG secret elided here):")
    block = (
        f'\ndns "rfc2136" {{\n  server         = "{bind9.server}"\n'
        f'  tsig_key_name  = "{TSIG_KEY_NAME}"\n  tsig_algorithm = "hmac-sha256"\n'
        f'  tsig_secret    = "{bind9.tsig_secret}"\n  zones          = ["{ZONE}"]\n}}\n'
        f'dns_resolvers = ["{bind9.server}"]\n'
    )
    with sync_conf.open("a") as out:
        out.write(block)
    for line in block.strip().splitlines():
        show("     " + (line.split('"')[0] + '"…"' if "tsig_secret" in line else line))

    heading(
        3,
        "Answer HTTP-01 statelessly with nginx",
        "The answer to token T is T.<thumbprint of the account key>, so a static nginx",
        "snippet answers every challenge; nothing is published per challenge.",
    )
    thumbprint = run([certfleet, "acme", "thumbprint", *config], env=env).strip()
    snippet = docs_nginx_snippet(thumbprint)  # exactly as docs/acme.md gives it
    for line in snippet.strip().splitlines():
        show(f"     {line}")
    nginx = Http01Nginx(str(find_program("nginx")), WORK / "nginx", pebble.http_port, snippet)
    servers.append(nginx)
    show(f"   nginx answers /.well-known/acme-challenge/T on {LOOPBACK}:{pebble.http_port}")

    heading(4, f"Add the cluster {CLUSTER!r} and configure a server for it")
    run([certfleet, "clusters", "add", CLUSTER, *config], env=env, stdout_to=stanza)
    write_private(
        WORK / "server1.conf",
        f'store          = "{store_url}"\nstore_endpoint = "{store.endpoint}"\n'
        f'state_dir      = "{WORK / "server1"}"\n' + stanza.read_text(),
    )

    heading(
        5,
        "Order: two names by HTTP-01, a wildcard by DNS-01",
        "In ACME mode the orders live in the store's order registry, sealed for the sync.",
    )
    run([certfleet, "add", *config, "--cluster", CLUSTER, f"www.{ZONE}", ZONE], env=env)
    run([certfleet, "add", *config, "--cluster", CLUSTER, "--approval", "dns", f"*.{ZONE}"],
        env=env)  # fmt: skip

    heading(
        6,
        "Run the sync once",
        "It registers the account, orders, writes the DNS-01 TXT value into bind9 (and waits",
        "until bind9 serves it), lets pebble validate both challenges, finalizes, removes the",
        "TXT value, and publishes the signed, encrypted bundles to the store.",
    )
    run([certfleet, "sync", "--once", *config], env=env)
    left = bind9.txt(f"_acme-challenge.{ZONE}")
    show(f"   bind9 now serves {len(left)} TXT value(s) at _acme-challenge.{ZONE} (removed)")
    if left:
        raise DemoFailed(f"the DNS-01 values were left in bind9: {sorted(left)}")

    heading(7, "Run the node agent once", "It verifies, decrypts and installs the files.")
    run([agent, "--config", str(WORK / "server1.conf"), "--once"], env=env)
    found = installed_files(WORK / "server1")
    for order, files in found.items():
        show(f"     {order}/  {' '.join(f.name for f in files)}")
    expected = {f"www.{ZONE}", f"_.{ZONE}"}
    if set(found) != expected:
        raise DemoFailed(f"server1 has orders {sorted(found)}, not {sorted(expected)}")

    heading(8, "Check the installed chains with openssl, against pebble's root")
    root = WORK / "pebble-root.pem"
    root.write_bytes(pebble.root_pem())
    show(f"   pebble's root saved as {shown_path(root)}")
    for order, files in found.items():
        for leaf in (f for f in files if f.name.endswith(".crt.pem")):
            chain = leaf.with_name(leaf.name.replace(".crt.pem", ".chain.pem"))
            run(["openssl", "x509", "-in", str(leaf), "-noout", "-ext", "subjectAltName"],
                env=env)  # fmt: skip
            run(["openssl", "verify", "-CAfile", str(root), "-untrusted", str(chain), str(leaf)],
                env=env)  # fmt: skip
        show(f"   {order}: verified")


def main() -> int:
    # AssertionError too: the lab's servers assert
    return run_demo(demo, "demo-acme", (DemoFailed, StackError, AssertionError))


if __name__ == "__main__":
    sys.exit(main())
