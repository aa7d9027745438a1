"""An RFC 8555 client on certbot's ``acme`` package: one method per request the provider
makes, every failure an ``AcmeError`` carrying the CA's problem document and Retry-After.

What ``acme.client`` is kept for: JWS signing, nonces, message types. What is added:
``badNonce`` retried up to ``retry.BAD_NONCE_TRIES`` times (the library retries once), the
last response kept so that Retry-After survives an error, a request counter (a sync with
nothing to do must make no request at all: the directory is fetched on first use), the
``replaces`` field of RFC 9773 on new orders, and RFC 9773 renewal information.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar

import josepy as jose
import requests
from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certfleet.acme.errors import AcmeAnswerRefused, AcmeError, Problem
from certfleet.acme.retry import BAD_NONCE_TRIES, parse_retry_after
from certfleet.acme.wire import MAX_CHAIN, REQUEST_DEADLINE, CappedSession
from certfleet.config.accountkey import AccountPrivateKey

log = logging.getLogger(__name__)

T = TypeVar("T")
USER_AGENT = "certfleet-acme"
TIMEOUT = 30
# Authorization states that deactivation cannot change (RFC 8555 section 7.1.6)
ENDED = ("deactivated", "expired", "invalid", "revoked")


class _NewOrder(messages.NewOrder):
    """A new order that may name the certificate it replaces (RFC 9773 section 5)."""

    replaces: Optional[str] = jose.field("replaces", omitempty=True)


@dataclass(frozen=True)
class Identifier:
    value: str
    type: str = "dns"


class _Network(acme_client.ClientNetwork):
    """``ClientNetwork`` that keeps the last response, counts requests, retries
    ``badNonce`` several times, and reads every answer to a cap within a deadline
    (``certfleet.acme.wire``)."""

    def __init__(self, key: jose.JWK, alg: jose.JWASignature, verify: Any, deadline: float) -> None:
        super().__init__(key, alg=alg, verify_ssl=verify, user_agent=USER_AGENT, timeout=TIMEOUT)
        self.session.close()
        self.session = CappedSession(deadline)
        self.last_response: requests.Response | None = None
        self.requests = 0

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        self.last_response = None
        self.requests += 1
        response = super()._send_request(method, url, *args, **kwargs)
        self.last_response = response
        return response

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        for attempt in range(1, BAD_NONCE_TRIES + 1):
            try:
                return self._post_once(*args, **kwargs)
            except messages.Error as error:
                if error.code != "badNonce" or attempt == BAD_NONCE_TRIES:
                    raise
                log.debug("badNonce (attempt %d), retrying", attempt)
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class RenewalInfo:
    """RFC 9773 renewal information: the suggested window and when to ask again."""

    start: float
    end: float
    retry_after: float


class AcmeClient:
    """One ACME account at one CA directory; ``request_count`` counts its HTTP requests."""

    def __init__(
        self,
        directory_url: str,
        key: AccountPrivateKey,
        *,
        ca_bundle: str | None = None,
        clock: Callable[[], float] = time.time,
        request_deadline: float = REQUEST_DEADLINE,
    ) -> None:
        self.directory_url = directory_url
        self._clock = clock
        if isinstance(key, ec.EllipticCurvePrivateKey):
            jwk: jose.JWK = jose.JWKEC(key=key)
            alg = {"secp256r1": jose.ES256, "secp384r1": jose.ES384}[key.curve.name]
        else:
            jwk, alg = jose.JWKRSA(key=key), jose.RS256
        self.jwk = jwk
        self._net = _Network(jwk, alg, ca_bundle if ca_bundle else True, request_deadline)
        self._client: acme_client.ClientV2 | None = None

    @property
    def request_count(self) -> int:
        return self._net.requests

    def close(self) -> None:
        self._net.session.close()

    # -- plumbing ------------------------------------------------------------------------

    def _call(self, operation: str, call: Callable[[], T]) -> T:
        """``call()``, every failure turned into an ``AcmeError`` for ``operation``."""
        try:
            return call()
        except AcmeAnswerRefused as err:
            raise err.during(operation) from None
        except messages.Error as err:
            raise self._error(operation, err) from err
        except acme_errors.ConflictError as err:
            problem = Problem(type="conflict", detail="409 Conflict", status=409)
            raise AcmeError(operation, "conflict", problem=problem) from err
        except (requests.RequestException, OSError) as err:
            raise AcmeError(operation, type(err).__name__, transient=True) from err
        except (acme_errors.Error, jose.DeserializationError, ValueError, KeyError) as err:
            response = self._net.last_response  # a Response of status >= 400 is falsy
            status = response.status_code if response is not None else None
            transient = status is not None and status >= 500
            reason = f"HTTP {status}" if status is not None else type(err).__name__
            raise AcmeError(operation, reason, transient=transient, status=status) from err

    def _error(self, operation: str, err: messages.Error) -> AcmeError:
        response = self._net.last_response
        status = response.status_code if response is not None else None
        header = response.headers.get("Retry-After") if response is not None else None
        try:
            problem = Problem.from_json(err.to_partial_json())
        except ValueError:
            problem = Problem(type="about:blank")
        if problem.status is None and status is not None:
            problem = Problem(
                problem.type, problem.detail, status, problem.identifier, problem.subproblems
            )
        transient = problem.code in ("rateLimited", "serverInternal", "badNonce") or (
            status is not None and status >= 500
        )
        return AcmeError(
            operation,
            problem.code,
            problem=problem,
            retry_after=parse_retry_after(header, self._clock()),
            transient=transient,
            status=status,
        )

    @property
    def client(self) -> acme_client.ClientV2:
        """The directory, fetched on first use."""
        if self._client is None:
            directory = self._call(
                "directory",
                lambda: acme_client.ClientV2.get_directory(self.directory_url, self._net),
            )
            self._client = acme_client.ClientV2(directory, self._net)
        return self._client

    @property
    def has_ari(self) -> bool:
        return "renewalInfo" in self.client.directory.to_partial_json()

    @property
    def profiles(self) -> tuple[str, ...]:
        meta = getattr(self.client.directory, "meta", None)
        profiles = getattr(meta, "profiles", None)
        return tuple(profiles) if isinstance(profiles, Mapping) else ()

    def _post_as_get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.client._post_as_get(url, **kwargs)

    # -- account --------------------------------------------------------------------------

    def use_account(self, url: str) -> None:
        self._net.account = messages.RegistrationResource(body=messages.Registration(), uri=url)

    def register(
        self, email: str | None, eab_kid: str | None = None, eab_hmac_key: str | None = None
    ) -> str:
        """Create (or find) the account, terms agreed; returns its URL."""
        client = self.client

        def register() -> str:
            eab = None
            if eab_kid and eab_hmac_key:
                eab = messages.ExternalAccountBinding.from_data(
                    self.jwk.public_key(), eab_kid, eab_hmac_key, client.directory
                )
            registration = messages.NewRegistration.from_data(
                email=email, terms_of_service_agreed=True, external_account_binding=eab
            )
            try:
                return str(client.new_account(registration).uri)
            except acme_errors.ConflictError as err:  # the key has an account already
                return str(err.location)

        url = self._call("account registration", register)
        self.use_account(url)
        return url

    # -- orders ----------------------------------------------------------------------------

    def new_order(
        self,
        identifiers: Sequence[str],
        *,
        profile: str | None = None,
        replaces: str | None = None,
    ) -> tuple[str, messages.Order]:
        """Create an order for the DNS names; returns its URL and body."""

        def create() -> tuple[str, messages.Order]:
            body = _NewOrder(
                identifiers=[
                    messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name)
                    for name in identifiers
                ],
                profile=profile,
                replaces=replaces,
            )
            response = self.client._post(self.client.directory["newOrder"], body)
            location = response.headers.get("Location")
            if not location:
                raise ValueError("the new order has no Location")
            return location, messages.Order.from_json(response.json())

        return self._call("new order", create)

    def order(self, url: str) -> messages.Order:
        return self._call(
            "order poll", lambda: messages.Order.from_json(self._post_as_get(url).json())
        )

    def authorization(self, url: str) -> messages.Authorization:
        return self._call(
            "authorization poll",
            lambda: messages.Authorization.from_json(self._post_as_get(url).json()),
        )

    def deactivate(self, url: str) -> str:
        """Deactivate the authorization at ``url`` (RFC 8555 section 7.5.2), so the CA keeps
        no pending or valid authorization the account no longer wants; returns its status
        now. An authorization that is already deactivated, expired, invalid or revoked, or
        that the CA no longer has (404: ``"gone"``), is not an error. Bounded like every
        request of this client (``certfleet.acme.wire``: byte cap, deadline)."""

        def post() -> str:
            update = messages.UpdateAuthorization(status=messages.STATUS_DEACTIVATED)
            answer = messages.Authorization.from_json(self.client._post(url, update).json())
            return _status_name(answer.status)

        try:
            return self._call("authorization deactivation", post)
        except AcmeError as err:
            if err.status == 404:
                return "gone"
            if err.transient:
                raise
            refused = err  # a CA may refuse to deactivate what is no longer active
        try:
            status = _status_name(self.authorization(url).status)
        except AcmeError as err:
            if err.status == 404:
                return "gone"
            raise refused from err
        if status in ENDED:
            return status
        raise refused

    def challenge(self, url: str) -> messages.ChallengeBody:
        return self._call(
            "challenge poll",
            lambda: messages.ChallengeBody.from_json(self._post_as_get(url).json()),
        )

    def answer(self, challenge: messages.ChallengeBody) -> None:
        """Tell the CA the challenge is ready to be validated."""
        self._call(
            "challenge answer",
            lambda: self.client.answer_challenge(challenge, challenge.chall.response(self.jwk)),
        )

    def finalize(self, order: messages.Order, csr_pem: bytes) -> messages.Order:
        def post() -> messages.Order:
            request = messages.CertificateRequest(csr=x509.load_pem_x509_csr(csr_pem))
            return messages.Order.from_json(self.client._post(order.finalize, request).json())

        return self._call("finalize", post)

    def download(self, url: str) -> bytes:
        """The certificate chain (PEM: leaf first)."""
        return self._call(
            "certificate download",
            lambda: self._post_as_get(url, max_bytes=MAX_CHAIN).content,
        )

    def renewal_info(self, certificate_id: str) -> RenewalInfo:
        """The CA's suggested renewal window for a certificate (RFC 9773)."""

        def get() -> RenewalInfo:
            base = str(self.client.directory["renewalInfo"]).rstrip("/")
            response = self._net.get(f"{base}/{certificate_id}")
            info = messages.RenewalInfo.from_json(response.json())
            window = info.suggested_window
            retry = parse_retry_after(response.headers.get("Retry-After"), self._clock())
            return RenewalInfo(
                start=_seconds(window.start),
                end=_seconds(window.end),
                retry_after=21600.0 if retry is None else retry,
            )

        return self._call("renewal info", get)


def _status_name(status: Optional[messages.Status]) -> str:
    return str(status.name) if status is not None else ""


def _seconds(when: datetime.datetime) -> float:
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()
