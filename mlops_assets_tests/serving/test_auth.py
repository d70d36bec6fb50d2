"""API keys: hashed, constant-time lookup, roles, configuration errors that never show a key."""

from __future__ import annotations

import json

import pytest

from serving.auth import ENV_API_KEYS, KeyConfigError, KeyRing

KEY = "k" * 20


def test_keys_from_config_and_environment() -> None:
    env = {ENV_API_KEYS: json.dumps({"e" * 20: {"owner": "eve", "role": "admin"},
                                     KEY: {"owner": "bob", "role": "approver"}})}
    ring = KeyRing.from_config({KEY: {"owner": "ann", "role": "viewer"}}, environ=env)
    assert len(ring) == 2
    assert ring.authenticate(KEY).owner == "bob"  # the environment wins for the same key
    assert ring.authenticate("e" * 20).allows("approver")
    assert not ring.authenticate(KEY).allows("admin")
    assert ring.authenticate("x" * 20) is None and ring.authenticate(None) is None
    assert KEY.encode() not in repr(ring._entries).encode()  # only digests are kept


@pytest.mark.parametrize("raw, message", [
    ({KEY: {"owner": "ann", "role": "root"}}, "role 'root'"),
    ({KEY: {"role": "viewer"}}, "'owner' is required"),
    ({"short-secret": {"owner": "ann", "role": "viewer"}}, "at least 16 characters"),
    ({KEY: "viewer"}, "must be an object"),
])
def test_bad_entries_are_named_without_the_key(raw: dict, message: str) -> None:
    with pytest.raises(KeyConfigError, match=message) as err:
        KeyRing.from_config(raw, environ={})
    assert KEY not in str(err.value) and "short-secret" not in str(err.value)


def test_keys_may_be_configured_as_digests() -> None:
    import hashlib

    digest = hashlib.sha256(KEY.encode()).hexdigest()
    ring = KeyRing.from_config({f"sha256:{digest}": {"owner": "ann", "role": "admin"}}, environ={})
    assert ring.authenticate(KEY).owner == "ann" and ring.authenticate("sha256:" + "0" * 64) is None


def test_environment_must_be_json() -> None:
    with pytest.raises(KeyConfigError, match=ENV_API_KEYS):
        KeyRing.from_config({}, environ={ENV_API_KEYS: "{not json"})
