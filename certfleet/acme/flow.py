"""Driving one ACME order: create it, answer its challenges, finalize, download.

``OrderFlow`` works on an ``OrderState`` (``certfleet.acme.state``) that the caller saves:
each step that the CA remembers (a new order, an answered challenge, a finalization) is
recorded there, so a later run resumes from the order URL instead of starting again, and a
crash after finalize downloads the certificate instead of ordering another.

Challenges: an identifier approved ``http`` is answered by HTTP-01, which is stateless
here: the frontends answer ``token.thumbprint`` on their own, so nothing is published per
challenge; ``dns`` (always for wildcards) by DNS-01 through a ``DnsChallengeWriter``
that the caller owns: ``answer`` adds the TXT values and returns the DNS-01 challenges,
which the caller answers (``answer_dns``) once the values are served. The sync shares one
writer among all the orders of a run, so one wait (a Route 53 change going INSYNC takes
about a minute) covers them all, and removes the values at the end of the run, also after
failures.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Callable, Optional, Protocol

from acme import challenges, messages

from certfleet.acme.client import AcmeClient
from certfleet.acme.errors import AcmeError, AcmeOrderInvalid, Problem
from certfleet.acme.state import OrderState
from certfleet.errors import CertfleetError

log = logging.getLogger(__name__)

Challenge = messages.ChallengeBody
POLL_FIRST = 0.5
POLL_MAX = 5.0
DNS_SERVED_TIMEOUT = 120.0
INVALID = "urn:ietf:params:acme:error:unauthorized"


class DnsChallengeWriter(Protocol):
    """One batch of DNS-01 TXT values (``certfleet.acme.dns.DnsChallenges``)."""

    def add(self, identifier: str, value: str) -> None: ...

    def wait_until_served(self, timeout: float) -> None: ...

    def cleanup(self) -> None: ...


def dns01_value(key_authorization: str) -> str:
    """The TXT value of DNS-01: base64url(SHA-256(key authorization)), unpadded."""
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class OrderFlow:
    """Steps of one ACME order for one order name."""

    def __init__(
        self,
        client: AcmeClient,
        record: OrderState,
        *,
        approvals: Mapping[str, str],
        dns: Optional[Callable[[], DnsChallengeWriter]],
        save: Callable[[], None],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.record = record
        self.approvals = approvals
        self.dns = dns
        self.save = save
        self.sleep = sleep
        self.answered = False  # this process answered the order's challenges already

    def start(
        self,
        names: Sequence[str],
        csr_pem: bytes,
        pubkey_hash: str,
        *,
        profile: str | None,
        replaces: str | None,
    ) -> list[messages.ChallengeBody]:
        """Create the order (its URL saved at once), then answer its challenges; returns
        the DNS-01 challenges to answer once their values are served."""
        try:
            url, order = self.client.new_order(names, profile=profile, replaces=replaces)
        except AcmeError as err:
            code = err.problem.code if err.problem is not None else ""
            if replaces is None or code not in ("alreadyReplaced", "conflict", "malformed"):
                raise
            log.info("new order replacing %s refused (%s): ordering without it", replaces, code)
            url, order = self.client.new_order(names, profile=profile, replaces=None)
        record = self.record
        record.url, record.pubkey_hash = url, pubkey_hash
        record.csr_pem = csr_pem.decode("ascii")
        record.status = _status(order)
        self.save()
        self.answered = True
        return self.answer(order)

    def answer(self, order: messages.Order) -> list[messages.ChallengeBody]:
        """Answer the HTTP-01 challenge of each pending authorization at once; add the
        DNS-01 values and return those challenges, to answer once the values are served."""
        dns_answers: list[messages.ChallengeBody] = []
        for url in order.authorizations:
            authz = self.client.authorization(url)
            if authz.status != messages.STATUS_PENDING:
                continue
            name = str(authz.identifier.value)
            if authz.wildcard:
                name = "*." + name
            approval = self.approvals.get(name, "dns" if name.startswith("*.") else "http")
            wanted = challenges.DNS01 if approval == "dns" else challenges.HTTP01
            body = next((c for c in authz.challenges if isinstance(c.chall, wanted)), None)
            if body is None:
                raise AcmeError("challenge", f"the CA offers no {wanted.typ} challenge for {name}")
            if body.status != messages.STATUS_PENDING:
                continue  # answered already, being validated
            if approval == "dns":
                if self.dns is None:
                    raise AcmeError("challenge", "DNS-01 needs a dns block in the sync config")
                value = dns01_value(body.chall.key_authorization(self.client.jwk))
                try:
                    self.dns().add(name, value)
                except CertfleetError as err:  # DnsError: names the record and the block
                    raise AcmeError("DNS-01 record", str(err)) from err
                dns_answers.append(body)
            else:
                self._answer(body)
        return dns_answers

    def answer_dns(self, bodies: Sequence[messages.ChallengeBody]) -> None:
        """Answer DNS-01 challenges whose values are served now."""
        for body in bodies:
            self._answer(body)

    def _answer(self, body: messages.ChallengeBody) -> None:
        """Answer one challenge; one the CA has validated meanwhile is not an error (a CA
        may keep a challenge "pending" while it validates, and refuses a second answer)."""
        try:
            self.client.answer(body)
        except AcmeError:
            try:
                status = self.client.challenge(body.uri).status
            except AcmeError:
                status = None
            if status not in (messages.STATUS_VALID, messages.STATUS_PROCESSING):
                raise

    def wait_served(self) -> None:
        """Wait until the writer's values are served (``AcmeError`` if they are not)."""
        assert self.dns is not None
        try:
            self.dns().wait_until_served(DNS_SERVED_TIMEOUT)
        except CertfleetError as err:
            raise AcmeError("DNS-01 record", str(err)) from err

    def finish(self, until: float, csr_pem: bytes) -> Optional[bytes]:
        """Drive the order until it is valid (returns the PEM chain) or ``until`` (a
        ``time.monotonic()`` value) passes (returns None: resume next run).
        Raises ``AcmeOrderInvalid`` when the CA gave up on it."""
        assert self.record.url is not None
        delay = POLL_FIRST
        while True:
            order = self.client.order(self.record.url)
            status = _status(order)
            if status != self.record.status:
                self.record.status = status
                self.save()
            if status == "valid" and order.certificate:
                return self.client.download(str(order.certificate))
            if status == "invalid":
                raise AcmeOrderInvalid(
                    "order", "the CA marked the order invalid", problem=self._problem(order)
                )
            if time.monotonic() >= until:
                return None  # out of budget: the order resumes from its URL next run
            if status == "ready":
                order = self.client.finalize(order, csr_pem)
                self.record.status = _status(order)
                self.save()
                continue
            if status == "pending" and not self.answered:
                # a resumed order, or one whose answer was lost: answer it again now
                pending_dns = self.answer(order)
                if pending_dns:
                    self.wait_served()
                    self.answer_dns(pending_dns)
                self.answered = True
            if time.monotonic() + delay > until:
                return None
            self.sleep(delay)
            delay = min(POLL_MAX, delay * 2)

    def _problem(self, order: messages.Order) -> Problem:
        """The order's problem, with each failed authorization's as a subproblem."""
        subproblems: list[Problem] = []
        for url in order.authorizations:
            try:
                authz = self.client.authorization(url)
            except AcmeError:
                continue
            for body in authz.challenges:
                if body.error is not None:
                    sub = Problem.from_json(body.error.to_partial_json())
                    name = ("*." if authz.wildcard else "") + str(authz.identifier.value)
                    subproblems.append(
                        Problem(sub.type, sub.detail, sub.status, name, sub.subproblems)
                    )
        if order.error is not None:
            top = Problem.from_json(order.error.to_partial_json())
            return Problem(
                top.type, top.detail, top.status, None, top.subproblems or tuple(subproblems)
            )
        detail = "authorization failed" if subproblems else "the order became invalid"
        return Problem(INVALID, detail, None, None, tuple(subproblems))


def _status(order: messages.Order) -> str:
    """The order's status name ("pending", "ready", "processing", "valid", "invalid")."""
    return str(order.status.name) if order.status is not None else ""
