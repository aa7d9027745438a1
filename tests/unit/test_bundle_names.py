"""certfleet.bundle.names and the key text forms: table tests of what is accepted and refused."""

from __future__ import annotations

import pytest

from certfleet import bundle as fmt

LABEL_63 = "a" * 63
NAME_253 = ".".join([LABEL_63, LABEL_63, LABEL_63, "a" * 61])  # 63*3 + 61 + 3 dots = 253

ORDER_NAMES = [
    ("example.com", True),
    ("*.example.com", True),
    ("Example_Name-1", True),
    ("a", True),
    ("x" * 253, True),
    ("x" * 254, False),
    ("x" * 300, False),
    ("", False),
    (".", False),
    ("..", False),
    (".hidden", False),
    ("../../etc/x", False),
    ("a/b", False),
    ("a\\b", False),
    ("a\x00b", False),
    ("a b", False),
    ("a\nb", False),
    ("exämple.com", False),
    ("\uff45xample.com", False),
    ("a:b", False),
]


@pytest.mark.parametrize(("name", "ok"), ORDER_NAMES)
def test_order_names(name: str, ok: bool) -> None:
    if ok:
        assert fmt.validate_order_name(name) == name
    else:
        with pytest.raises(fmt.UnsafeNameError):
            fmt.validate_order_name(name)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("example.com", "example.com"), ("*.example.com", "_.example.com"), ("a*b", "a_b")],
)
def test_safe_dir_name(name: str, expected: str) -> None:
    assert fmt.safe_dir_name(name) == expected


def test_safe_dir_name_validates_first() -> None:
    with pytest.raises(fmt.UnsafeNameError):
        fmt.safe_dir_name("../x")


DNS_NAMES = [
    ("example.com", "example.com"),
    ("WWW.Example.COM", "www.example.com"),
    ("*.example.com", "*.example.com"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("1host.example", "1host.example"),
    ("localhost", "localhost"),
    (f"{LABEL_63}.example", f"{LABEL_63}.example"),
    (NAME_253, NAME_253),
    (f"{'a' * 64}.example", None),
    (NAME_253 + "a", None),
    ("*", None),
    ("*.", None),
    ("a.*.example.com", None),
    ("**.example.com", None),
    ("*example.com", None),
    ("foo.*", None),
    ("example.com.", None),
    (".example.com", None),
    ("a..example.com", None),
    ("-a.example.com", None),
    ("a-.example.com", None),
    ("under_score.example.com", None),
    ("bücher.example", None),
    ("\u212aelvin.example", None),  # KELVIN SIGN lowercases to ASCII "k"
    ("a/b.example", None),
    ("../../etc/x", None),
    ("a\x00.example", None),
    ("", None),
]


@pytest.mark.parametrize(("name", "expected"), DNS_NAMES)
def test_dns_names(name: str, expected: str | None) -> None:
    if expected is not None:
        assert fmt.validate_dns_name(name) == expected
    else:
        with pytest.raises(fmt.UnsafeNameError):
            fmt.validate_dns_name(name)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("web", True),
        ("0", True),
        ("a-b-c", True),
        ("a" * 40, True),
        ("a" * 41, False),
        ("-web", False),
        ("Web", False),
        ("web_1", False),
        ("", False),
        ("web/x", False),
        ("..", False),
        ("web\n", False),
    ],
)
def test_cluster_names(name: str, ok: bool) -> None:
    if ok:
        assert fmt.validate_cluster_name(name) == name
    else:
        with pytest.raises(fmt.UnsafeNameError):
            fmt.validate_cluster_name(name)


def test_refusal_message_names_the_name_escaped_and_truncated() -> None:
    with pytest.raises(fmt.UnsafeNameError) as caught:
        fmt.validate_order_name("a\x00" + "b" * 300)
    message = str(caught.value)
    assert "'a\\x00bbb" in message
    assert "..." in message and len(message) < 200
    assert "1-253 characters" in message
    with pytest.raises(fmt.UnsafeNameError, match="may only contain"):
        fmt.validate_order_name("a/b")


def test_refusal_of_a_name_inside_an_object_names_the_object() -> None:
    with pytest.raises(fmt.UnsafeNameError) as caught:
        fmt.validate_order_name("a/b", where="shard 3 of cluster web")
    assert caught.value.object_name == "shard 3 of cluster web"
    assert "'a/b'" in str(caught.value)
    assert caught.value.name == "a/b"


# --- key text forms ---

SECRET_TEXT = "k1:faC4ffCDuEaCv4SFn7mCHTLCqGGaEDrhBB7DI0PRCM8"


def test_cluster_secret_parse_export_and_padding() -> None:
    secret = fmt.ClusterSecret.parse(SECRET_TEXT)
    assert secret.id == "k1" and len(secret.key) == 32
    assert secret.export() == SECRET_TEXT
    assert fmt.ClusterSecret.parse(SECRET_TEXT + "=") == secret
    assert "faC4" not in repr(secret) and "faC4" not in str(secret)
    assert repr(secret) == "ClusterSecret(id='k1', key=<redacted>)"


def test_cluster_secret_in_the_standard_base64_alphabet_reads_as_base64url() -> None:
    key = bytes(range(224, 256))  # encodes with "+" and "/" (standard) or "-" and "_" (url)
    url = fmt.ClusterSecret("examplesecret", key).export()
    assert "-" in url and "_" in url
    standard = url.replace("-", "+").replace("_", "/")
    assert fmt.ClusterSecret.parse(standard) == fmt.ClusterSecret.parse(standard + "=")
    assert fmt.ClusterSecret.parse(standard).export() == url


def test_cluster_secret_generate() -> None:
    first, second = fmt.ClusterSecret.generate("k2"), fmt.ClusterSecret.generate("k2")
    assert first.id == "k2" and first.key != second.key
    assert fmt.ClusterSecret.parse(first.export()) == first


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("faC4ffCDuEaCv4SFn7mCHTLCqGGaEDrhBB7DI0PRCM8", "must look like"),
        (":faC4ffCDuEaCv4SFn7mCHTLCqGGaEDrhBB7DI0PRCM8", "id must be"),
        ("bad id:faC4ffCDuEaCv4SFn7mCHTLCqGGaEDrhBB7DI0PRCM8", "id must be"),
        ("k" * 33 + ":faC4ffCDuEaCv4SFn7mCHTLCqGGaEDrhBB7DI0PRCM8", "id must be"),
        ("k1:faC4ffCDuEaCv4SFn7mCHTLCqGGaEDrhBB7DI0PRCM", "32 bytes"),
        ("k1:faC4ffCDuEaCv4SFn7mCHTLCqGGaEDrhBB7DI0PRCM8AAA", "32 bytes"),
        ("k1:faC4ffCDuEaCv4SFn7mCHTLCqGGaEDrhBB7DI0PRCM8AA", "base64url"),
        ("k1:faC4ffCDuEaCv4SFn7mCHTLCqGGaEDrhBB7DI0PRCM+", "canonical"),
        ("k1:faC4ffCDuEaCv4SFn7mCHTLCqGGaEDrhBB7DI0P+C-8", "mixes"),
        ("k1:faC4ffCDuEaCv4SFn7mCHTLCqGGaEDrhBB7DI0PRCM9", "canonical"),
        ("k1:faC4ffCDuEaCv4SFn7mCHTLCqGGaEDrhBB7DI0PRCM8===", "base64url"),
    ],
)
def test_cluster_secret_parse_errors_never_echo_the_text(text: str, reason: str) -> None:
    with pytest.raises(fmt.MalformedError, match=reason) as caught:
        fmt.ClusterSecret.parse(text)
    assert "faC4ffCD" not in str(caught.value)


def test_signing_and_public_keys() -> None:
    key = fmt.SigningKey.generate()
    assert fmt.SigningKey.parse(key.export()).export() == key.export()
    public = key.public_key()
    assert public.export().startswith("ed25519:") and "=" not in public.export()
    assert fmt.PublicKey.parse(public.export()) == public
    assert fmt.PublicKey.parse(public.export() + "=") == public
    assert public.verify(key.sign(b"data"), b"data")
    assert not public.verify(key.sign(b"data"), b"other")
    assert not public.verify(b"short", b"data")
    seed = key.export().split(":")[1]
    assert seed not in repr(key) and seed not in str(key)
    with pytest.raises(fmt.MalformedError):
        fmt.PublicKey.parse(key.export())
    with pytest.raises(fmt.MalformedError):
        fmt.SigningKey.parse(public.export())
