"""The static identity file of the demo identity provider and its in-memory index.

File format (JSON object; extra keys anywhere are ignored, e.g. a "name" or "comment"):

    {
      "users":  [{"id": "<user id>", "email": "<email>", "token": "<bearer token>"}],
      "things": [{"id": "<thing id>", "key": "<thing key>", "owner": "<user id>",
                  "external_key": "<optional external key>"}],
      "grants": [{"user": "<user id>", "thing": "<thing id>", "role": "viewer" | "editor"}]
    }

"users" and "things" are required (possibly empty lists), "grants" is optional. Ids, tokens,
keys and external keys must be non-empty strings and unique; the owner of a thing is an editor
of it; "editor" implies "viewer". Error messages name records by id, never by token or key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

Role = Literal["viewer", "editor"]
ROLES: frozenset[str] = frozenset({"viewer", "editor"})


class IdentityFileError(ValueError):
    """The identity file is unreadable or invalid."""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Thing:
    id: str
    key: str = field(repr=False)
    owner: str
    external_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Grant:
    user: str
    thing: str
    role: Role


class Directory:
    """Read-only index answering the provider's look-ups with dict accesses."""

    __slots__ = ("_external_keys", "_keys", "_roles", "_tokens", "grants", "things", "users")

    def __init__(self, users: list[User], things: list[Thing], grants: list[Grant]) -> None:
        self.users: dict[str, User] = {}
        self._tokens: dict[str, User] = {}
        for u in users:
            if u.id in self.users:
                raise IdentityFileError(f"duplicate user id {u.id!r}")
            if u.token in self._tokens:
                raise IdentityFileError(f"user {u.id!r} has the same token as another user")
            self.users[u.id] = u
            self._tokens[u.token] = u
        self.things: dict[str, Thing] = {}
        self._keys: dict[str, str] = {}
        self._external_keys: dict[str, str] = {}
        self._roles: dict[tuple[str, str], Role] = {}
        for t in things:
            if t.id in self.things:
                raise IdentityFileError(f"duplicate thing id {t.id!r}")
            if t.owner not in self.users:
                raise IdentityFileError(f"thing {t.id!r}: unknown owner {t.owner!r}")
            if t.key in self._keys:
                raise IdentityFileError(f"thing {t.id!r} has the same key as another thing")
            if t.external_key is not None:
                if t.external_key in self._external_keys:
                    raise IdentityFileError(
                        f"thing {t.id!r} has the same external key as another thing"
                    )
                self._external_keys[t.external_key] = t.id
            self.things[t.id] = t
            self._keys[t.key] = t.id
            self._roles[(t.owner, t.id)] = "editor"
        self.grants = list(grants)
        for g in grants:
            if g.user not in self.users:
                raise IdentityFileError(f"grant: unknown user {g.user!r}")
            if g.thing not in self.things:
                raise IdentityFileError(f"grant: unknown thing {g.thing!r}")
            if self._roles.get((g.user, g.thing)) != "editor":
                self._roles[(g.user, g.thing)] = g.role

    def user_by_token(self, token: str) -> User | None:
        return self._tokens.get(token)

    def thing_by_key(self, key: str, external: bool = False) -> str | None:
        """Thing id of an internal (default) or external key."""
        return (self._external_keys if external else self._keys).get(key)

    def role(self, user_id: str, thing_id: str) -> Role | None:
        return self._roles.get((user_id, thing_id))

    def allowed(self, user_id: str, thing_id: str, action: str) -> bool:
        """Whether the user may act as `action` ("viewer" or "editor") on the thing."""
        role = self._roles.get((user_id, thing_id))
        if role == "editor":
            return action in ROLES
        return role == "viewer" and action == "viewer"

    @classmethod
    def from_dict(cls, data: Any) -> Directory:
        if not isinstance(data, Mapping):
            raise IdentityFileError("the identity file must hold a JSON object")
        users = [_user(i, r) for i, r in enumerate(_list(data, "users", required=True))]
        things = [_thing(i, r) for i, r in enumerate(_list(data, "things", required=True))]
        grants = [_grant(i, r) for i, r in enumerate(_list(data, "grants", required=False))]
        return cls(users, things, grants)

    def to_dict(self) -> dict[str, Any]:
        """The file form of this directory (with the secrets)."""
        things: list[dict[str, str]] = []
        for t in self.things.values():
            item = {"id": t.id, "key": t.key, "owner": t.owner}
            if t.external_key is not None:
                item["external_key"] = t.external_key
            things.append(item)
        return {
            "users": [
                {"id": u.id, "email": u.email, "token": u.token} for u in self.users.values()
            ],
            "things": things,
            "grants": [{"user": g.user, "thing": g.thing, "role": g.role} for g in self.grants],
        }


def load_identity_file(path: str | Path) -> Directory:
    """Read and validate an identity file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise IdentityFileError(f"{path}: cannot read: {err.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        # Position only: the message of JSONDecodeError does not quote the document.
        raise IdentityFileError(
            f"{path}: not valid JSON (line {err.lineno}, column {err.colno})"
        ) from None
    try:
        return Directory.from_dict(data)
    except IdentityFileError as err:
        raise IdentityFileError(f"{path}: {err}") from None


def _list(data: Mapping[str, Any], name: str, *, required: bool) -> list[Any]:
    value = data.get(name)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise IdentityFileError(f'"{name}" must be a list')
    return value


def _str(record: Any, where: str, name: str, *, optional: bool = False) -> str | None:
    if not isinstance(record, Mapping):
        raise IdentityFileError(f"{where} must be an object")
    value = record.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise IdentityFileError(f'{where}: "{name}" must be a non-empty string')
    return value


def _req(record: Any, where: str, name: str) -> str:
    value = _str(record, where, name)
    assert value is not None
    return value


def _user(i: int, r: Any) -> User:
    where = f"users[{i}]"
    return User(
        id=_req(r, where, "id"), email=_req(r, where, "email"), token=_req(r, where, "token")
    )


def _thing(i: int, r: Any) -> Thing:
    where = f"things[{i}]"
    return Thing(
        id=_req(r, where, "id"),
        key=_req(r, where, "key"),
        owner=_req(r, where, "owner"),
        external_key=_str(r, where, "external_key", optional=True),
    )


def _grant(i: int, r: Any) -> Grant:
    where = f"grants[{i}]"
    role = _req(r, where, "role")
    if role not in ROLES:
        raise IdentityFileError(f'{where}: "role" must be "viewer" or "editor"')
    return Grant(user=_req(r, where, "user"), thing=_req(r, where, "thing"), role=cast(Role, role))
