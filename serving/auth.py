"""API keys and roles of the management API.

Keys come from the settings (``serving.api_keys``: ``{key: {owner, role}}``) and from the
environment variable ``MLOPS_API_KEYS`` (the same mapping as JSON; it wins for a key given in
both). A key may be written as ``sha256:<hex digest>`` so that config files need not hold it in
clear (``python -c "import hashlib; print(hashlib.sha256(b'KEY').hexdigest())"``). Only the sha256
digest of each key is kept in memory, and a presented key is compared with every digest in
constant time. Roles are ordered ``viewer < approver < admin``; a route declares
the least role it needs. The key's owner is the identity recorded in the audit log. Keys are
never logged or echoed: errors name the owner or the position of the entry, never the key.

Clients send the key as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``; no key is 401,
an unknown key is 401, a known key with too small a role is 403.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

ENV_API_KEYS = "MLOPS_API_KEYS"
RANKED: tuple[str, ...] = ("viewer", "approver", "admin")
SERVICE = "service"
ROLES: tuple[str, ...] = (*RANKED, SERVICE)
RANK = {role: i for i, role in enumerate(RANKED)}
MIN_KEY_LENGTH = 16
HASHED = re.compile(r"^sha256:[0-9a-f]{64}$")


class KeyConfigError(ValueError):
    """An API key entry is malformed; the message names the entry by owner or position, never the key."""


@dataclass(frozen=True)
class Identity:
    owner: str
    role: str

    def allows(self, role: str) -> bool:
        """``service`` is granted to service keys and admins only; a service key is granted nothing else."""
        if role == SERVICE:
            return self.role in (SERVICE, "admin")
        if self.role == SERVICE:
            return False
        return RANK[self.role] >= RANK[role]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_keys(raw: Mapping[str, Any], where: str) -> dict[bytes, Identity]:
    """``{key: {"owner": ..., "role": ...}}`` -> ``{sha256(key): Identity}``."""
    if not isinstance(raw, Mapping):
        raise KeyConfigError(f"{where}: must map each API key to {{owner, role}}")
    out: dict[bytes, Identity] = {}
    for position, (key, entry) in enumerate(raw.items()):
        label = f"{where} entry #{position + 1}"
        if not isinstance(entry, Mapping):
            raise KeyConfigError(f"{label}: must be an object with 'owner' and 'role'")
        owner, role = str(entry.get("owner") or "").strip(), str(entry.get("role") or "").strip()
        if owner:
            label = f"{where} entry of owner {owner!r}"
        if not owner:
            raise KeyConfigError(f"{label}: 'owner' is required (the identity written to the audit log)")
        if role not in ROLES:
            raise KeyConfigError(f"{label}: role {role!r} is not one of {list(ROLES)}")
        if isinstance(key, str) and HASHED.match(key):
            out[bytes.fromhex(key[len("sha256:"):])] = Identity(owner, role)
            continue
        if not isinstance(key, str) or len(key) < MIN_KEY_LENGTH:
            raise KeyConfigError(f"{label}: the key must be a string of at least {MIN_KEY_LENGTH} characters "
                                 "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'), or "
                                 "'sha256:<hex digest of the key>'")
        out[_digest(key)] = Identity(owner, role)
    return out


class KeyRing:
    """Hashed API keys -> identities; ``authenticate`` compares in constant time."""

    def __init__(self, keys: Mapping[bytes, Identity]) -> None:
        self._entries = list(keys.items())

    @classmethod
    def from_config(cls, configured: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> KeyRing:
        keys = parse_keys(configured or {}, "serving.api_keys")
        env = os.environ if environ is None else environ
        text = (env.get(ENV_API_KEYS) or "").strip()
        if text:
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                raise KeyConfigError(f"{ENV_API_KEYS}: not valid JSON ({exc.msg} at position {exc.pos})") \
                    from None
            keys.update(parse_keys(raw, ENV_API_KEYS))
        return cls(keys)

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, presented: str | None) -> Identity | None:
        if not presented:
            return None
        digest = _digest(presented)
        found = None
        for stored, identity in self._entries:  # no early exit: the time does not depend on the match
            if hmac.compare_digest(stored, digest):
                found = identity
        return found


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="management API key")
_bearer = HTTPBearer(auto_error=False, description="the API key as a bearer token")


def require(role: str, keyring: Callable[[Request], KeyRing]) -> Any:
    """A FastAPI dependency giving the caller's :class:`Identity` if its role is at least ``role``."""
    if role not in ROLES:
        raise KeyConfigError(f"role {role!r} is not one of {list(ROLES)}")

    def dependency(request: Request, api_key: str | None = Security(_api_key_header),
                   bearer: HTTPAuthorizationCredentials | None = Security(_bearer)) -> Identity:
        presented = api_key or (bearer.credentials if bearer is not None else None)
        if not presented:
            raise HTTPException(401, "this endpoint needs an API key: send 'X-API-Key: <key>' or "
                                     "'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"})
        identity = keyring(request).authenticate(presented)
        if identity is None:
            raise HTTPException(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
        if not identity.allows(role):
            needs = "a service key (or admin)" if role == SERVICE else f"{role!r} or higher"
            raise HTTPException(403, f"{identity.owner} has role {identity.role!r}; this needs {needs}")
        return identity

    return Depends(dependency)
