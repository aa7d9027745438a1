"""``certfleet serve`` over real HTTP: the help page's curl verbatim, API keys right, wrong and
limited to clusters, concurrent POSTs of one name, the HTTP-01 route, the abuse limits; the
``api-keys`` and ``http-config`` commands; and the CLI's order commands in ACME mode, which
write the same registry that the order API reads."""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from certfleet.bundle import SigningKey
from certfleet.config.serve import parse_serve_config
from certfleet.serve import HttpApi, Request, build_api
from certfleet.serve.ratelimit import RateLimiter
from tests.plugins.cli import run_cli as cli
from tests.plugins.help_page import curl_help_page
from tests.plugins.nginx import Nginx
from tests.plugins.serve_process import Served, start_serve

# RFC 7638 section 3.1's example thumbprint (any 43 base64url characters would do here).
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@dataclass
class Setup:
    config: Path
    store: Path
    key: str  # every cluster
    limited: str  # cluster "other" only
    thumbprint: str


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    store = tmp_path / "store"
    store.mkdir()
    secret = SigningKey.generate().sync_secret("registry").export()
    config = tmp_path / "http.conf"
    config.write_text(
        f'store = "file://{store}"\n'
        f'registry_secret = "{secret}"\n'
        f'acme_thumbprint = "{RFC7638_THUMBPRINT}"\n'
        'clusters = ["webservers", "other"]\n'
    )
    code, key, _ = cli("api-keys", "add", "ops", "--config", str(config))
    assert code == 0
    code, limited, _ = cli(
        "api-keys", "add", "partner", "--cluster", "other", "--config", str(config)
    )
    assert code == 0
    return Setup(config, store, key.strip(), limited.strip(), RFC7638_THUMBPRINT)


@pytest.fixture
def served(setup: Setup) -> Iterator[Served]:
    served = start_serve(setup.config)
    try:
        yield served
    finally:
        assert served.stop() == 0


def init(config: Path, store: str) -> None:
    argv = ["--store", store, "--api-endpoint", "https://127.0.0.1:9/api/v3", "--api-key", "apikey"]
    assert cli("init", "--config", str(config), *argv)[0] == 0


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def orders(served: Served) -> str:
    return served.url + "/api/v3/orders"


# -- the help page, keys ----------------------------------------------------------------------


def test_the_help_page_curl_verbatim(setup: Setup, served: Served) -> None:
    status, body = curl_help_page(setup.key, served.url + "/api/v3")
    assert status == "201", body
    order = json.loads(body)
    assert order["name"] == "example.com" and order["cluster"] == "webservers"
    assert order["dns_names"] == ["example.com", "www.example.com"]
    assert [i["approval"] for i in order["identifiers"]] == ["http", "http"]
    status, body = curl_help_page(setup.key, served.url + "/api/v3")
    assert status == "409"
    assert json.loads(body)["code"] == "order_exists"
    fetched = requests.get(orders(served) + "/example.com", headers=auth(setup.key), timeout=10)
    assert fetched.json() == order
    assert not any(setup.key in line for line in served.stderr)
    assert any("key ops created order 'example.com'" in line for line in served.stderr)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer 0123456789_wrong"},
        {"Authorization": "Basic !!!"},
        {"Authorization": "Token abc"},
    ],
)
def test_a_missing_or_wrong_key_is_401(served: Served, headers: dict[str, str]) -> None:
    answer = requests.get(orders(served), headers=headers, timeout=10)
    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthorized"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


def test_basic_auth_needs_an_empty_password(setup: Setup, served: Served) -> None:
    assert requests.get(orders(served), auth=(setup.key, ""), timeout=10).status_code == 200
    assert requests.get(orders(served), auth=(setup.key, "x"), timeout=10).status_code == 401


def test_a_key_limited_to_clusters_cannot_see_or_touch_others(setup: Setup, served: Served) -> None:
    mine = {"cluster": "other", "dns_names": ["partner.example"]}
    theirs = {"cluster": "webservers", "dns_names": ["private.example"]}
    assert requests.post(orders(served), json=theirs, headers=auth(setup.key), timeout=10).ok
    limited = auth(setup.limited)
    made = requests.post(orders(served), json=mine, headers=limited, timeout=10)
    assert made.status_code == 201
    refused = requests.post(
        orders(served),
        json={"cluster": "webservers", "dns_names": ["x.example"]},
        headers=limited,
        timeout=10,
    )
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_cluster")
    for method in ("GET", "DELETE"):
        hidden = requests.request(
            method, orders(served) + "/private.example", headers=limited, timeout=10
        )
        assert (hidden.status_code, hidden.json()["code"]) == (404, "not_found")
        assert hidden.json() == requests.request(
            method, orders(served) + "/absent.example", headers=limited, timeout=10
        ).json() | {"message": hidden.json()["message"]}
    patch = requests.patch(
        orders(served) + "/private.example",
        json={"dns_names": ["evil.example"]},
        headers=limited,
        timeout=10,
    )
    assert patch.status_code == 404
    listed = requests.get(orders(served), headers=limited, timeout=10).json()
    assert [o["name"] for o in listed["orders"]] == ["partner.example"]
    other = requests.get(orders(served) + "?cluster=webservers", headers=limited, timeout=10)
    assert other.status_code == 400
    everything = requests.get(orders(served), headers=auth(setup.key), timeout=10).json()
    assert [o["name"] for o in everything["orders"]] == ["partner.example", "private.example"]
    assert requests.get(
        orders(served) + "/private.example", headers=auth(setup.key), timeout=10
    ).json()["dns_names"] == ["private.example"]


# -- writes -----------------------------------------------------------------------------------


def test_concurrent_posts_of_one_name_one_201_the_rest_409(setup: Setup, served: Served) -> None:
    barrier = threading.Barrier(6)
    statuses: list[int] = []

    def post(index: int) -> None:
        body = {"cluster": "webservers", "name": "race", "dns_names": [f"r{index}.example"]}
        barrier.wait()
        answer = requests.post(orders(served), json=body, headers=auth(setup.key), timeout=30)
        statuses.append(answer.status_code)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [201, 409, 409, 409, 409, 409]


def test_patch_pages_and_delete(setup: Setup, served: Served) -> None:
    headers = auth(setup.key)
    for index in range(5):
        body = {"cluster": "webservers", "dns_names": [f"h{index}.example"]}
        assert requests.post(orders(served), json=body, headers=headers, timeout=10).ok
    names: list[str] = []
    cursor = ""
    while True:
        page = requests.get(
            orders(served) + f"?cluster=webservers&limit=2{cursor}", headers=headers, timeout=10
        ).json()
        names += [o["name"] for o in page["orders"]]
        if page["next"] is None:
            break
        cursor = f"&after={page['next']}"
    assert names == [f"h{i}.example" for i in range(5)]
    bad = requests.get(orders(served) + "?after=%%%", headers=headers, timeout=10)
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_cursor")
    patched = requests.patch(
        orders(served) + "/h0.example",
        json={"identifiers": [{"type": "dns", "value": "*.h0.example", "approval": "dns"}]},
        headers=headers,
        timeout=10,
    )
    assert patched.status_code == 200 and patched.json()["dns_names"] == ["*.h0.example"]
    moved = requests.patch(
        orders(served) + "/h0.example", json={"cluster": "other"}, headers=headers, timeout=10
    )
    assert moved.status_code == 400
    gone = requests.delete(orders(served) + "/h1.example", headers=headers, timeout=10)
    assert gone.status_code == 204 and gone.content == b""
    again = requests.delete(orders(served) + "/h1.example", headers=headers, timeout=10)
    assert again.status_code == 404


def test_abuse_limits(setup: Setup, served: Served) -> None:
    headers = auth(setup.key)
    huge = b'{"cluster": "webservers", "dns_names": ["' + b"a" * 100_000 + b'"]}'
    big = requests.post(orders(served), data=huge, headers=headers, timeout=10)
    assert (big.status_code, big.json()["code"]) == (413, "request_too_large")
    many = {"cluster": "webservers", "dns_names": [f"n{i}.example" for i in range(101)]}
    refused = requests.post(orders(served), json=many, headers=headers, timeout=10)
    assert (refused.status_code, refused.json()["code"]) == (400, "too_many_identifiers")
    hostile = {"cluster": "webservers", "dns_names": ["a.example\r\nX-Injected: 1"]}
    refused = requests.post(orders(served), json=hostile, headers=headers, timeout=10)
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_dns_name")
    both = {"cluster": "webservers", "dns_names": ["a.example"], "identifiers": []}
    refused = requests.post(orders(served), json=both, headers=headers, timeout=10)
    assert (refused.status_code, refused.json()["code"]) == (400, "conflicting_fields")
    junk = requests.post(orders(served), data=b"{not json", headers=headers, timeout=10)
    assert (junk.status_code, junk.json()["code"]) == (400, "invalid_json")
    assert requests.put(orders(served), headers=headers, timeout=10).status_code == 405
    assert (
        requests.get(served.url + "/api/v3/other", headers=headers, timeout=10).status_code == 404
    )


def test_a_key_beyond_its_rate_gets_429_with_retry_after(setup: Setup) -> None:
    now = [0.0]
    api = build_api(
        parse_serve_config(setup.config.read_text(), str(setup.config)),
        limiter=RateLimiter(rate=1.0, burst=2.0, clock=lambda: now[0]),
    )
    request = Request("GET", "/api/v3/orders", headers={"authorization": f"Bearer {setup.key}"})
    assert [api.handle(request).status for _ in range(3)] == [200, 200, 429]
    limited = api.handle(request)
    assert dict(limited.headers)["Retry-After"] == "1"
    other = Request("GET", "/api/v3/orders", headers={"authorization": f"Bearer {setup.limited}"})
    assert api.handle(other).status == 200  # each key has its own bucket
    now[0] = 1.0
    assert api.handle(request).status == 200


# -- the HTTP-01 route ------------------------------------------------------------------------


def test_the_challenge_route_answers_any_well_formed_token(setup: Setup, served: Served) -> None:
    token = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
    answer = requests.get(served.url + f"/.well-known/acme-challenge/{token}", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "text/plain"
    assert answer.text == f"{token}.{setup.thumbprint}"
    for bad in ("a.b", "a%2Fb", "", "x" * 300, "%00"):
        refused = requests.get(served.url + f"/.well-known/acme-challenge/{bad}", timeout=10)
        assert refused.status_code == 404, bad
    assert (
        requests.post(served.url + "/.well-known/acme-challenge/abc", timeout=10).status_code == 405
    )


# -- the commands -----------------------------------------------------------------------------


def test_api_keys_add_prints_the_key_once_and_keeps_only_its_hash(setup: Setup) -> None:
    text = setup.config.read_text()
    assert setup.key not in text and setup.limited not in text
    assert hashlib.sha256(setup.key.encode()).hexdigest() in text
    key_id, _, secret = setup.key.partition("_")
    assert len(key_id) == 10 and len(secret) == 43
    assert setup.config.stat().st_mode & 0o777 == 0o600
    code, out, _ = cli("api-keys", "list", "--config", str(setup.config))
    assert code == 0 and "ops" in out and "partner" in out and "other" in out
    assert setup.key not in out
    assert cli("api-keys", "add", "ops", "--config", str(setup.config))[0] == 2
    assert cli("api-keys", "add", "x", "--cluster", "nope", "--config", str(setup.config))[0] == 2
    assert cli("api-keys", "add", "bad name", "--config", str(setup.config))[0] == 2
    code, out, _ = cli("api-keys", "rm", "partner", "--config", str(setup.config))
    assert (code, out.strip()) == (0, "removed API key partner")
    config = parse_serve_config(setup.config.read_text(), str(setup.config))
    assert [e.name for e in config.api_keys] == ["ops"]
    assert cli("api-keys", "rm", "partner", "--config", str(setup.config))[0] == 2


def test_http_config_holds_the_registry_secret_and_no_signing_or_cluster_secret(
    tmp_path: Path,
) -> None:
    config = tmp_path / "sync.conf"
    init(config, f"file://{tmp_path}/s")
    code, _, _ = cli("clusters", "add", "webservers", "--config", str(config))
    assert code == 0
    code, key, _ = cli("api-keys", "add", "ops", "--config", str(config))
    assert code == 0
    code, out, _ = cli("http-config", "--config", str(config))
    assert code == 0
    from certfleet.config.sync import load_sync_config

    sync = load_sync_config(config)
    assert sync.signing_key.sync_secret("registry").export() in out
    assert sync.signing_key.export() not in out
    assert sync.clusters[0].secrets[0].export() not in out
    assert "apikey" not in out and key.strip() not in out
    http = parse_serve_config(out, "http-config")
    assert http.api_keys == sync.api_keys
    assert http.registry_secret == sync.signing_key.sync_secret("registry")


def test_cli_orders_in_acme_mode_use_the_registry_the_api_serves(
    setup: Setup, tmp_path: Path
) -> None:
    config = tmp_path / "sync.conf"
    argv = ["--provider", "acme", "--acme-directory", "https://127.0.0.1:9/dir",
            "--acme-email", "ops@example.test", "--store", f"file://{setup.store}"]  # fmt: skip
    assert cli("init", "--config", str(config), *argv)[0] == 0
    assert cli("clusters", "add", "webservers", "--config", str(config))[0] == 0
    code, out, _ = cli("add", "example.com", "*.example.com", "--config", str(config))
    assert code == 0, out
    assert "example.com (http)" in out and "*.example.com (dns)" in out
    code, _, err = cli("add", "example.com", "--config", str(config))
    assert code == 1 and "already exists" in err
    code, out, _ = cli("edit", "--add-dnsname", "www.example.com", "example.com",
                       "--config", str(config), "--json")  # fmt: skip
    assert code == 0
    assert json.loads(out)["dns_names"] == ["example.com", "*.example.com", "www.example.com"]
    code, out, _ = cli("list", "--config", str(config))
    assert code == 0 and "example.com" in out and "webservers" in out
    code, _, err = cli("add", "--cluster", "nope", "x.example", "--config", str(config))
    assert code == 2 and "nope" in err
    from certfleet.serve.settings import load_settings

    settings = load_settings(config)
    thumb = cli("acme", "thumbprint", "--config", str(config))[1].strip()
    assert settings.acme_thumbprint == thumb and settings.clusters == ("webservers",)
    api = build_api(settings)
    served = api.handle(Request("GET", "/api/v3/orders/example.com", headers={}))
    assert served.status == 401
    code, key, _ = cli("api-keys", "add", "ops", "--config", str(config))
    api = build_api(load_settings(config))
    answer = api.handle(
        Request(
            "GET", "/api/v3/orders/example.com", headers={"authorization": f"Bearer {key.strip()}"}
        )
    )
    assert answer.status == 200
    assert json.loads(answer.body)["dns_names"] == [
        "example.com",
        "*.example.com",
        "www.example.com",
    ]
    code, out, _ = cli("rm", "example.com", "--config", str(config))
    assert (code, out.strip()) == (0, "removed order example.com")
    code, _, err = cli("show", "example.com", "--config", str(config))
    assert code == 1 and "no order named 'example.com'" in err


def test_an_api_without_acme_clusters_serves_no_orders() -> None:
    api = HttpApi(registry=None, keys=(), thumbprint=None)
    assert api.handle(Request("GET", "/api/v3/orders")).status == 401
    assert api.handle(Request("GET", "/.well-known/acme-challenge/abc")).status == 404


def test_serve_refuses_a_port_in_use(setup: Setup, served: Served) -> None:
    port = served.url.rsplit(":", 1)[1]
    code, _, err = cli("serve", "--config", str(setup.config), "--port", port)
    assert code == 1 and f"cannot listen on 127.0.0.1:{port}" in err


def test_nginx_proxying_the_challenge_path_to_certfleet_serve(
    setup: Setup, served: Served, nginx: Nginx
) -> None:
    """The frontends' snippet of docs/deploy-aws.md with certfleet serve as the upstream."""
    nginx.write_servers(
        f"""  server {{
    listen 127.0.0.1:{nginx.port};
    server_name _;
    location ^~ /.well-known/acme-challenge/ {{
        proxy_pass {served.url};
    }}
    location / {{
        return 301 https://$host$request_uri;
    }}
  }}
"""
    )
    nginx.start()
    token = "9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
    answer = requests.get(
        f"http://127.0.0.1:{nginx.port}/.well-known/acme-challenge/{token}",
        headers={"Host": "www.example.com"},
        timeout=10,
        allow_redirects=False,
    )
    assert answer.status_code == 200
    assert answer.text == f"{token}.{setup.thumbprint}"
    other = requests.get(
        f"http://127.0.0.1:{nginx.port}/index.html", timeout=10, allow_redirects=False
    )
    assert other.status_code == 301


def test_sighup_reloads_the_keys_and_keeps_serving_on_a_broken_config(
    setup: Setup, served: Served
) -> None:
    code, new_key, _ = cli("api-keys", "add", "late", "--config", str(setup.config))
    assert code == 0
    assert (
        requests.get(orders(served), headers=auth(new_key.strip()), timeout=10).status_code == 401
    )
    served.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while (
        requests.get(orders(served), headers=auth(new_key.strip()), timeout=10).status_code != 200
    ):
        assert time.monotonic() < deadline, served.stderr
        time.sleep(0.1)
    good = setup.config.read_text()
    setup.config.write_text(good + "\nbogus = 1\n")
    served.process.send_signal(signal.SIGHUP)
    while not any("config not reloaded" in line for line in served.stderr):
        assert time.monotonic() < deadline + 10, served.stderr
        time.sleep(0.1)
    assert any('option "bogus"' in line for line in served.stderr)
    assert (
        requests.get(orders(served), headers=auth(new_key.strip()), timeout=10).status_code == 200
    )


def test_the_apiv3_client_works_against_the_order_api(setup: Setup, served: Served) -> None:
    """certfleet's own APIv3 client, pointed at certfleet serve: the same contract."""
    from certfleet.apiv3 import ApiClient, Identifier, NotFound

    client = ApiClient(served.url + "/api/v3", setup.key)
    try:
        made = client.create_order(
            [Identifier("api.example", "http"), Identifier("*.api.example", "dns")],
            cluster="webservers",
        )
        assert made.dns_names == ("api.example", "*.api.example")
        assert client.get_order("api.example") == made
        assert [o.name for o in client.iter_orders("webservers", page_size=1)] == ["api.example"]
        changed = client.update_order("api.example", [Identifier("api.example", "dns")])
        assert changed.identifiers == (Identifier("api.example", "dns"),)
        client.delete_order("api.example")
        with pytest.raises(NotFound):
            client.get_order("api.example")
    finally:
        client.close()
