"""The verified-token cache of the bearer patch: what a cache key is, how long a hit lasts."""

from __future__ import annotations

import base64

from mlflow_stack.server.patches.bearer_auth import token_key, verified_ttl


def test_any_change_to_a_token_is_another_key() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[0] ^= 1
    tampered = f"{header}.{payload}.{base64.urlsafe_b64encode(bytes(raw)).decode().rstrip('=')}"
    assert token_key(token) == token_key(str(token))
    assert token_key(tampered) != token_key(token)
    assert token_key(token + " ") != token_key(token)


def test_a_verification_is_reused_until_exp_and_at_most_the_cap() -> None:
    def at(t: float) -> float:
        return t

    assert verified_ttl({"exp": 1_000}, cap=300, now=lambda: at(900)) == 100
    assert verified_ttl({"exp": 10_000}, cap=300, now=lambda: at(900)) == 300
    assert verified_ttl({"exp": 800}, cap=300, now=lambda: at(900)) == 0
    for claims in ({}, {"exp": "1000"}, {"exp": True}, {"exp": None}):
        assert verified_ttl(claims, cap=300, now=lambda: at(0)) == 0
