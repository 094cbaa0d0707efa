"""The identity file: validation, roles, and the demo file."""

from __future__ import annotations

import copy
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from devtools.identity.directory import Directory, IdentityFileError, load_identity_file
from devtools.identity.provider import write_demo_file
from tests.fixtures.identity import USERS, identity_file_content


def base() -> dict[str, Any]:
    return copy.deepcopy(identity_file_content())


def test_roles() -> None:
    d = Directory.from_dict(base())
    a1 = "7a1a1000-0000-4000-8000-0000000000a1"
    assert d.role(USERS["alice"].id, a1) == "editor"
    assert d.role(USERS["bob"].id, a1) == "viewer"
    assert d.role(USERS["carol"].id, a1) == "editor"
    assert d.role(USERS["mallory"].id, a1) is None
    assert d.allowed(USERS["bob"].id, a1, "viewer")
    assert not d.allowed(USERS["bob"].id, a1, "editor")
    assert not d.allowed(USERS["alice"].id, a1, "admin")


def test_grant_never_downgrades_the_owner() -> None:
    data = base()
    alice, a1 = data["users"][0]["id"], data["things"][0]["id"]
    data["grants"].append({"user": alice, "thing": a1, "role": "viewer"})
    assert Directory.from_dict(data).role(alice, a1) == "editor"


def test_round_trip_and_optional_grants() -> None:
    data = base()
    d = Directory.from_dict(data)
    again = Directory.from_dict(d.to_dict())
    assert again.to_dict() == d.to_dict()
    del data["grants"]
    assert Directory.from_dict(data).grants == []
    assert Directory.from_dict({"users": [], "things": []}).users == {}


def _mutate(data: dict[str, Any], what: str) -> None:
    users, things = data["users"], data["things"]
    if what == "dup user id":
        users.append({**users[0], "token": "other"})
    elif what == "dup token":
        users.append({"id": "new", "email": "n@example.com", "token": users[0]["token"]})
    elif what == "dup thing id":
        things.append({**things[0], "key": "other"})
    elif what == "dup key":
        things.append({"id": "new", "key": things[0]["key"], "owner": users[0]["id"]})
    elif what == "dup external key":
        ext = things[0]["external_key"]
        things.append({"id": "new", "key": "k", "owner": users[0]["id"], "external_key": ext})
    elif what == "unknown owner":
        things[0]["owner"] = "nobody"
    elif what == "bad role":
        data["grants"][0]["role"] = "admin"
    elif what == "grant unknown user":
        data["grants"][0]["user"] = "nobody"
    elif what == "grant unknown thing":
        data["grants"][0]["thing"] = "nothing"
    elif what == "empty token":
        users[0]["token"] = ""
    elif what == "token not a string":
        users[0]["token"] = 12
    elif what == "missing key":
        del things[0]["key"]
    elif what == "users not a list":
        data["users"] = {"a": 1}
    elif what == "missing things":
        del data["things"]
    elif what == "record not an object":
        users.append("alice")
    else:
        raise AssertionError(what)


MUTATIONS = [
    "dup user id",
    "dup token",
    "dup thing id",
    "dup key",
    "dup external key",
    "unknown owner",
    "bad role",
    "grant unknown user",
    "grant unknown thing",
    "empty token",
    "token not a string",
    "missing key",
    "users not a list",
    "missing things",
    "record not an object",
]


@pytest.mark.parametrize("what", MUTATIONS)
def test_invalid_files(tmp_path: Path, what: str) -> None:
    data = base()
    secrets = [u["token"] for u in data["users"]] + [t["key"] for t in data["things"]]
    _mutate(data, what)
    path = tmp_path / "identity.json"
    path.write_text(json.dumps(data))
    with pytest.raises(IdentityFileError) as info:
        load_identity_file(path)
    message = str(info.value)
    assert str(path) in message
    for secret in secrets:
        assert secret not in message


def test_unreadable_and_not_json(tmp_path: Path) -> None:
    with pytest.raises(IdentityFileError, match="cannot read"):
        load_identity_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"users": [{"token": "tok-in-broken-json"')
    with pytest.raises(IdentityFileError, match="not valid JSON") as info:
        load_identity_file(bad)
    assert "tok-in-broken-json" not in str(info.value)
    arr = tmp_path / "array.json"
    arr.write_text("[]")
    with pytest.raises(IdentityFileError, match="JSON object"):
        load_identity_file(arr)


def test_write_demo_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "demo.json"
    demo = write_demo_file(path)
    assert demo.path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert demo.token not in repr(demo)
    d = load_identity_file(path)
    assert d.user_by_token(demo.token) is not None
    assert d.users[demo.user_id].email == demo.email == "demo@example.com"
    assert len(demo.things) == 3
    for t in demo.things:
        assert d.thing_by_key(t.key) == t.id
        assert d.allowed(demo.user_id, t.id, "editor")
    # A second call replaces the file with fresh secrets.
    again = write_demo_file(path, things=1)
    assert again.token != demo.token and len(again.things) == 1
    assert load_identity_file(path).user_by_token(demo.token) is None
    assert [p.name for p in path.parent.iterdir()] == ["demo.json"]
