"""Webhook signature verification: GitHub's exact format, secret rotation, tampering."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from control_tower.github.signature import sign, verify_signature

BODY = b'{"action":"created","comment":{"body":"/tower status"}}'


def test_sign_matches_githubs_hmac_format() -> None:
    expected = "sha256=" + hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, "s3cret") == expected


def test_valid_signature_verifies() -> None:
    assert verify_signature(BODY, sign(BODY, "s3cret"), ["s3cret"])


def test_rotation_accepts_any_configured_secret() -> None:
    old, new = "old-secret", "new-secret"
    assert verify_signature(BODY, sign(BODY, old), [new, old])
    assert verify_signature(BODY, sign(BODY, new), [new, old])
    assert not verify_signature(BODY, sign(BODY, "retired"), [new, old])


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b: b + b" ",
        lambda b: b.replace(b"status", b"cancel"),
        lambda b: b[:-1],
        lambda b: b"",
    ],
)
def test_tampered_body_is_rejected(tamper: object) -> None:
    assert callable(tamper)
    header = sign(BODY, "s3cret")
    assert not verify_signature(tamper(BODY), header, ["s3cret"])


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha256=" + "0" * 64,
        "sha1=" + hmac.new(b"s3cret", BODY, hashlib.sha1).hexdigest(),
        hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest(),
        "sha256=" + hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest().upper(),
        "sha256=é" + "0" * 63,
    ],
)
def test_malformed_or_wrong_headers_are_rejected(header: str | None) -> None:
    assert not verify_signature(BODY, header, ["s3cret"])


def test_no_secrets_or_empty_secret_never_verifies() -> None:
    assert not verify_signature(BODY, sign(BODY, "s3cret"), [])
    assert not verify_signature(BODY, sign(BODY, ""), [""])


def test_a_body_with_nul_characters_is_stored_with_replacement_characters() -> None:
    import orjson

    from control_tower.github.ingest import storable

    payload = {"a\u0000": ["x\u0000y", {"k": "\u0000"}], "n": 1, "t": True, "z": None}
    clean, raw = storable(payload, orjson.dumps(payload))
    assert clean == {"a\ufffd": ["x\ufffdy", {"k": "\ufffd"}], "n": 1, "t": True, "z": None}
    assert orjson.loads(raw) == clean
    untouched = {"text": "a literal \\u0000 is six characters"}
    body = orjson.dumps(untouched)
    assert storable(untouched, body) == (untouched, body)
    assert storable({"b": "c"}, b'{"b":"c"}')[1] == b'{"b":"c"}'
