"""Wrong PIN and missing token at start, in a child process with a token of its own.

Both are checked outside the pytest process: a lookup for a missing token re-initialises the
PKCS#11 module (FINDINGS 1), which drops every session of the process, and repeated wrong
PINs could lock a token's PIN on an HSM that counts failures (SoftHSM 2.6.1 does not: 25
wrong logins in a row left the right PIN working).
"""

from typing import Any

import pytest

from tests.hsm.helpers import run_scenario
from tests.hsm.scenarios import PIN, TOKEN_LABEL

WRONG_PIN = "9876-wrong-pin"  # what the scenario tries


@pytest.fixture(scope="module")
def startup(tmp_path_factory: pytest.TempPathFactory, hsm_backend: str) -> dict[str, Any]:
    run = run_scenario("startup-errors", tmp_path_factory.mktemp("startup-errors"), timeout=60,
                       backend=hsm_backend)
    assert run.returncode == 0, run.describe()
    return run.result


def test_wrong_pin_is_pin_rejected(startup: dict[str, Any]) -> None:
    for attempt in ("wrong_pin_0", "wrong_pin_1", "wrong_pin_2"):
        outcome = startup[attempt]
        assert outcome["raised"] == "hsm.errors.PinRejected", outcome
        assert TOKEN_LABEL in outcome["message"]
        assert "PIN" in outcome["message"]
        # No PIN in what gets logged or shown.
        assert WRONG_PIN not in outcome["message"] and WRONG_PIN not in outcome["repr"]
        assert PIN not in outcome["message"] and PIN not in outcome["repr"]
        assert outcome["seconds"] < 2


def test_right_pin_opens_after_wrong_ones(startup: dict[str, Any]) -> None:
    assert startup["right_pin_after_failures"]["raised"] is None, startup
    assert startup["sign_before"]["raised"] is None, startup


def test_missing_token_is_token_not_found(startup: dict[str, Any]) -> None:
    outcome = startup["missing_token"]
    assert outcome["raised"] == "hsm.errors.TokenNotFound", outcome
    assert "'no-such-token'" in outcome["message"]
    assert outcome["seconds"] < 3, outcome


def test_open_connection_survives_missing_token_lookup(startup: dict[str, Any]) -> None:
    """The failed lookup re-initialised the module under the open connection, which repairs."""
    assert startup["sign_after_missing_token"]["raised"] is None, startup


def test_open_connection_survives_token_added_later(startup: dict[str, Any]) -> None:
    """A token created after start is found (re-initialising the module), and the connection
    that was open before keeps signing: its stale session handles must not be taken for the
    new connection's sessions (handles restart at 1 after C_Initialize)."""
    assert startup["late_token"]["raised"] is None, startup["late_token"]
    assert startup["sign_after_late_token"]["raised"] is None, startup["sign_after_late_token"]
