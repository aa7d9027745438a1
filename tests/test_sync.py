"""The sync engine end to end: the real sandbox over HTTP, SeaweedFS as the store."""

from __future__ import annotations

import pytest
from cryptography import x509

from certfleet.sync.keypair import load_private_key, pubkey_hash, spki_hash
from tests.plugins.sandbox import Sandbox
from tests.plugins.seaweedfs import SeaweedFS
from tests.test_sync_world import World, make_world


@pytest.fixture
def world(sandbox: Sandbox, s3_url: str, seaweedfs: SeaweedFS) -> World:
    return make_world(sandbox, s3_url, seaweedfs.endpoint)


def test_new_order_becomes_a_bundle_that_opens_with_the_cluster_secret(world: World) -> None:
    name = world.add("www.example.com", "example.com")
    summary = world.sync()
    assert summary.errors == {}
    assert summary.keys_generated == 1 and summary.certificates_published == 1
    seen = world.published()
    bundle = seen.bundles[name]
    assert bundle.dns_names == ("example.com", "www.example.com")
    assert bundle.key_type == "ecdsa"
    leaf = x509.load_pem_x509_certificate(bundle.certificate_pem)
    assert spki_hash(leaf.public_key()) == pubkey_hash(load_private_key(bundle.private_key_pem))
    entry = seen.entries[name]
    assert entry.install_after == bundle.not_before  # a new order installs at once
    assert seen.head.generation == summary.generation
    assert seen.head.secret_ids == ("k1",)
    assert not any(name in key or "example" in key for key in world.keys())
