"""API credentials: named tokens with roles, checked in constant time.

Tokens come from the node configuration (``api.auth.tokens``), each
``{name, token | tokenFile | sha256, roles}``. Only SHA-256 digests are kept in
memory: a plain token is hashed at load, a ``sha256`` entry is a digest already.
A request presents a token as ``Authorization: Bearer <token>`` or as HTTP Basic
with the token's name as the user name and the token as the password.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import ConfigError

log = logging.getLogger(__name__)


class Role(StrEnum):
    ADMINISTRATOR = "ADMINISTRATOR"  # everything
    VIEWER = "VIEWER"  # reads only


@dataclass(frozen=True)
class Principal:
    """Who made a request: the token's name and what it may do."""

    name: str
    roles: frozenset[Role]

    def may(self, role: Role) -> bool:
        return role in self.roles or Role.ADMINISTRATOR in self.roles


@dataclass(frozen=True)
class _Credential:
    name: str
    digest: bytes
    roles: frozenset[Role]


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _parse_entry(index: int, entry: Mapping[str, Any]) -> _Credential:
    where = f"api.auth.tokens[{index}]"
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: a token needs a non-empty name")
    where = f"{where} ({name})"
    sources = [key for key in ("token", "tokenFile", "sha256") if key in entry]
    if len(sources) != 1:
        raise ConfigError(f"{where}: give exactly one of token, tokenFile, sha256 (found: {', '.join(sources) or 'none'})")
    if "token" in entry:
        digest = _digest(_secret(entry["token"], where))
    elif "tokenFile" in entry:
        path = Path(str(entry["tokenFile"]))
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read tokenFile {path}: {exc.strerror}") from None
        digest = _digest(_secret(text.strip(), f"{where}: tokenFile {path}"))
    else:
        try:
            digest = bytes.fromhex(str(entry["sha256"]))
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise ConfigError(f"{where}: sha256 must be 64 hexadecimal digits (the SHA-256 of the token)")
    roles = entry.get("roles")
    if not isinstance(roles, (list, tuple)) or not roles:
        raise ConfigError(f"{where}: roles must list at least one of {', '.join(Role)}")
    unknown = [str(r) for r in roles if r not in Role.__members__]
    if unknown:
        raise ConfigError(f"{where}: unknown role(s) {', '.join(unknown)} (expected {', '.join(Role)})")
    return _Credential(name=name, digest=digest, roles=frozenset(Role(r) for r in roles))


def _secret(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: the token is empty")
    return value


class ApiAuth:
    """The configured credentials. ``authenticate`` maps an Authorization header to a Principal."""

    def __init__(self, credentials: Iterable[_Credential]) -> None:
        self._credentials = tuple(credentials)

    @classmethod
    def from_config(cls, tokens: Iterable[Mapping[str, Any]]) -> ApiAuth:
        """Parse ``api.auth.tokens``; reads ``tokenFile``s now. Raises ``ConfigError``."""
        credentials = [_parse_entry(i, entry) for i, entry in enumerate(tokens)]
        names = [c.name for c in credentials]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"api.auth.tokens: duplicate token name(s): {', '.join(duplicates)}")
        return cls(credentials)

    def authenticate(self, header: str | None) -> Principal | None:
        """The principal for an ``Authorization`` header value, or None."""
        if not header:
            return None
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            return self._match(None, _digest(value))
        if scheme.lower() == "basic" and value:
            try:
                decoded = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            name, colon, token = decoded.partition(":")
            if colon and token:
                return self._match(name, _digest(token))
        return None

    def _match(self, name: str | None, digest: bytes) -> Principal | None:
        # Compare against every credential, without an early exit, so the time
        # taken says nothing about which one (if any) matched.
        found: _Credential | None = None
        for credential in self._credentials:
            same = hmac.compare_digest(credential.digest, digest)
            if same and (name is None or name == credential.name) and found is None:
                found = credential
        return None if found is None else Principal(found.name, found.roles)
