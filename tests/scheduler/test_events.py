"""The rotation event's format and the schedule's arithmetic (no I/O)."""

from datetime import UTC, datetime, time, timedelta

import pytest

from hsm.authority import pem_blocks
from scheduler.events import CertEvent, envelope, rotation_subject
from scheduler.schedule import crl_check_interval, next_daily_run
from tests.scheduler.helpers import decode_event

EVENT = CertEvent(thing_id="7a1a1000-0000-4000-8000-0000000000a1", client_cert="CERT",
                  client_key="KEY", issuing_ca="CA", ca_chain=["CA", "ROOT"], serial="ab12",
                  expires_at="2030-01-02T03:04:05Z")


def test_envelope_fields() -> None:
    message, body = decode_event(envelope(EVENT, created_ns=1_700_000_000_123_456_789))
    assert message.publisher == EVENT.thing_id
    assert message.subtopic == "cert-rotation"
    assert message.contentType == "application/json"
    assert message.protocol == "certs"
    assert message.created == 1_700_000_000_123_456_789
    assert body == {"thing_id": EVENT.thing_id, "client_cert": "CERT", "client_key": "KEY",
                    "issuing_ca": "CA", "ca_chain": ["CA", "ROOT"], "serial": "ab12",
                    "expires_at": "2030-01-02T03:04:05Z"}
    assert CertEvent.from_json(message.payload) == EVENT


def test_envelope_created_is_now_in_nanoseconds() -> None:
    before = datetime.now(UTC).timestamp() * 1e9
    message, _ = decode_event(envelope(EVENT))
    assert before - 1e9 < message.created < before + 10e9


def test_key_not_in_repr() -> None:
    assert "KEY" not in repr(EVENT)


def test_subject() -> None:
    assert rotation_subject("abc-1") == "things.abc-1.commands.cert-rotation"
    for bad in ("", "a.b", "a*", ">", "a b", "a\tb"):
        with pytest.raises(ValueError):
            rotation_subject(bad)


def test_pem_blocks() -> None:
    one = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n"
    two = "-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----"
    assert pem_blocks(one + two + "\n\n") == [one, two + "\n"]


def test_next_daily_run() -> None:
    at = time(2, 0)
    assert next_daily_run(datetime(2026, 3, 1, 1, 59, 59, tzinfo=UTC), at) == \
        datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    assert next_daily_run(datetime(2026, 3, 1, 2, 0, tzinfo=UTC), at) == \
        datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    assert next_daily_run(datetime(2026, 12, 31, 23, 0, tzinfo=UTC), at) == \
        datetime(2027, 1, 1, 2, 0, tzinfo=UTC)
    # Another time zone's clock: the check time is UTC.
    plus_two = datetime(2026, 3, 1, 3, 30, tzinfo=UTC).astimezone(
        datetime.now(UTC).astimezone().tzinfo)
    assert next_daily_run(plus_two, time(3, 31)) == datetime(2026, 3, 1, 3, 31, tzinfo=UTC)


def test_crl_check_interval() -> None:
    assert crl_check_interval(timedelta(hours=24)) == 60.0
    assert crl_check_interval(timedelta(seconds=4)) == 1.0
    assert crl_check_interval(timedelta(seconds=0.1)) == 0.25
