"""A CA as the adversary (``tests.plugins.hostile_http``, ``trickle``): the ACME client reads
every answer to a cap within a total deadline (``certfleet.acme.wire``).

- A 64 MiB directory or certificate chain, announced or streamed without a length, is
  refused (``AcmeAnswerRefused``, naming the operation, the URL escaped and the cap) after
  at most the cap is read: the Python heap never holds it.
- A chain is capped lower (``MAX_CHAIN``) than a JSON document (``MAX_JSON``).
- A CA that trickles its answer is given up at the request's deadline (a transient error).
- An honest small answer still goes through.
"""

from __future__ import annotations

import base64
import json
import time
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

pytest.importorskip("acme", reason="the ACME provider needs certbot's acme (Python >= 3.10)")

from certfleet.acme.client import AcmeClient
from certfleet.acme.errors import AcmeAnswerRefused
from certfleet.acme.wire import MAX_CHAIN, MAX_JSON
from certfleet.config.accountkey import generate_account_key
from tests.plugins.hostile_http import HostileHttp, Request, answer_with
from tests.plugins.trickle import Trickle

MiB = 1024 * 1024
NONCE = base64.urlsafe_b64encode(b"a nonce of the hostile CA").rstrip(b"=").decode()


def directory(base: str) -> bytes:
    return json.dumps(
        {"newNonce": f"{base}/nonce", "newAccount": f"{base}/account", "newOrder": f"{base}/order"}
    ).encode()


def huge(total: int, block: bytes) -> Iterator[bytes]:
    chunk = block * (MiB // len(block))
    for _ in range(total // len(chunk)):
        yield chunk


class HostileCa:
    """A CA that answers a real directory and nonces, and ``hostile`` paths with 64 MiB."""

    def __init__(self, server: HostileHttp, *, announced: bool) -> None:
        self.server = server
        self.announced = announced
        server.answer = self.answer

    def answer(self, request: Request) -> Iterator[bytes]:
        headers = {"Replay-Nonce": NONCE, "Content-Type": "application/json"}
        if "hostile" in request.target:
            block = b"-----BEGIN CERTIFICATE-----\nMIIB" + b"A" * 60 + b"\n"
            if self.announced:
                headers["Content-Length"] = str(64 * MiB)
            return answer_with(200, headers, huge(64 * MiB, block))
        if request.target == "/directory":
            body = directory(self.server.url)
        else:
            body = b""
        headers["Content-Length"] = str(len(body))
        return answer_with(200, headers, [body])


def client(directory: str, request_deadline: float = 60.0) -> AcmeClient:
    acme = AcmeClient(directory, generate_account_key(), request_deadline=request_deadline)
    acme.use_account(directory.rsplit("/", 1)[0] + "/account/1")
    return acme


def refused_quickly(call: Callable[[], object]) -> tuple[AcmeAnswerRefused, int]:
    """The refusal ``call`` raises, and the peak of the Python heap meanwhile."""
    tracemalloc.start()
    try:
        started = time.monotonic()
        with pytest.raises(AcmeAnswerRefused) as caught:
            call()
        took = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert took < 5.0, took
    return caught.value, peak


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "until-close"])
def test_a_64_mib_directory_is_refused_at_the_json_cap(
    hostile_http: HostileHttp, announced: bool
) -> None:
    HostileCa(hostile_http, announced=announced)
    url = f"{hostile_http.url}/hostile/directory"
    error, peak = refused_quickly(lambda: client(url).client)
    assert peak < 8 * MiB, peak
    assert error.operation == "directory" and error.url == url and error.transient
    assert str(MAX_JSON) in str(error) and url in str(error)
    assert hostile_http.sent < 16 * MiB


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "until-close"])
def test_a_64_mib_certificate_chain_is_refused_at_the_chain_cap(
    hostile_http: HostileHttp, announced: bool
) -> None:
    HostileCa(hostile_http, announced=announced)
    acme = client(f"{hostile_http.url}/directory")
    # The URL comes from the CA: it is shown escaped.
    url = f"{hostile_http.url}/hostile/cert/\u202e1\n"
    error, peak = refused_quickly(lambda: acme.download(url))
    assert peak < 8 * MiB, peak
    assert error.operation == "certificate download"
    assert f"cap of {MAX_CHAIN}" in str(error)
    assert "\\u202e1\\n" in str(error) and "\u202e" not in str(error) and "\n" not in str(error)


def test_a_chain_between_the_two_caps_is_refused_and_a_small_one_is_not(
    hostile_http: HostileHttp,
) -> None:
    chain = b"-----BEGIN CERTIFICATE-----\n" + b"A" * 1000 + b"\n-----END CERTIFICATE-----\n"

    def answer(request: Request) -> Iterator[bytes]:
        headers = {"Replay-Nonce": NONCE}
        if request.target == "/directory":
            body = directory(hostile_http.url)
        elif request.target == "/cert/big":
            body = chain * (MAX_CHAIN // len(chain) + 1)  # over MAX_CHAIN, under MAX_JSON
        elif request.target == "/cert/small":
            body = chain
        else:
            body = b""
        headers["Content-Length"] = str(len(body))
        return answer_with(200, headers, [body])

    acme = client(f"{hostile_http.url}/directory")
    hostile_http.answer = answer
    assert acme.download(f"{hostile_http.url}/cert/small") == chain
    with pytest.raises(AcmeAnswerRefused, match=f"over the cap of {MAX_CHAIN}"):
        acme.download(f"{hostile_http.url}/cert/big")


def test_a_trickling_ca_is_given_up_at_the_request_deadline(trickle: Trickle) -> None:
    acme = client(f"{trickle.url}/directory", request_deadline=1.5)
    started = time.monotonic()
    with pytest.raises(AcmeAnswerRefused) as caught:
        _ = acme.client
    took = time.monotonic() - started
    assert 1.4 < took < 3.0, took
    assert caught.value.transient and "1.5 s deadline" in str(caught.value)
