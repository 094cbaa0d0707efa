"""Configuration from the MF_* variables: defaults, derived values, and bad values named."""

from datetime import time, timedelta
from pathlib import Path

import pytest

from authority.durations import parse_duration, parse_ttl
from authority.settings import ConfigError, load_settings


def test_defaults_are_the_documented_ones() -> None:
    settings = load_settings({})
    assert settings.log_level == "error"
    assert settings.http_port == 8204
    assert settings.hours_valid == timedelta(hours=2048)
    assert settings.rsa_bits == 2048
    assert settings.auth_url == "localhost:8181" and settings.things_url == "localhost:8183"
    assert settings.auth_timeout == 1.0 and settings.things_timeout == 1.0
    assert settings.broker_url == "nats://localhost:4222"
    assert settings.check_time == time(2, 0)
    assert settings.crl_validity == timedelta(hours=24)
    assert settings.renew_window == timedelta(hours=720)
    assert settings.subject_cn == "thing_id"
    assert settings.hsm_token == "certs" and settings.hsm_key_label == "certs-ca"
    assert settings.db_url == (
        "postgresql+psycopg://mainflux:mainflux@localhost:5432/certs?sslmode=disable")


def test_database_variables_build_the_url_and_db_url_overrides_them() -> None:
    settings = load_settings({
        "MF_CERTS_DB_HOST": "db.internal", "MF_CERTS_DB_PORT": "6543",
        "MF_CERTS_DB_USER": "certs user", "MF_CERTS_DB_PASS": "p@ss/word",
        "MF_CERTS_DB": "ca", "MF_CERTS_DB_SSL_MODE": "verify-full",
        "MF_CERTS_DB_SSL_ROOT_CERT": "/etc/ssl/root.pem",
    })
    assert settings.db_url == (
        "postgresql+psycopg://certs%20user:p%40ss%2Fword@db.internal:6543/ca"
        "?sslmode=verify-full&sslrootcert=/etc/ssl/root.pem")
    override = load_settings({"MF_CERTS_DB_HOST": "ignored",
                              "MF_CERTS_DB_URL": "postgresql://u:p@h/d"})
    assert override.db_url == "postgresql+psycopg://u:p@h/d"
    assert load_settings({"MF_CERTS_DB_URL": "sqlite:///x.db"}).db_url == "sqlite:///x.db"


def test_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text("s3cret-pin\n")
    settings = load_settings({"MF_CERTS_HSM_PIN_FILE": str(pin_file),
                              "MF_CERTS_DB_PASS": "db-secret"})
    assert settings.hsm_pin == "s3cret-pin"
    assert "s3cret-pin" not in repr(settings) and "db-secret" not in repr(settings)
    assert load_settings({"MF_CERTS_HSM_PIN": "direct",
                          "MF_CERTS_HSM_PIN_FILE": str(pin_file)}).hsm_pin == "direct"


@pytest.mark.parametrize(("variable", "value"), [
    ("MF_CERTS_HTTP_PORT", "http"),
    ("MF_CERTS_HTTP_PORT", "70000"),
    ("MF_CERTS_DB_PORT", "-1"),
    ("MF_CERTS_SIGN_RSA_BITS", "1000"),
    ("MF_CERTS_SIGN_HOURS_VALID", "forever"),
    ("MF_CERTS_SIGN_HOURS_VALID", "-5h"),
    ("MF_CERTS_CRL_VALIDITY", "0"),
    ("MF_CERTS_RENEW_WINDOW", "30 days"),
    ("MF_THINGS_GRPC_TIMEOUT", "1 second"),
    ("MF_AUTH_GRPC_TIMEOUT", "0s"),
    ("MF_CERTS_CHECK_TIME", "25:99"),
    ("MF_CERTS_CHECK_TIME", "2am"),
    ("MF_CERTS_CLIENT_TLS", "maybe"),
    ("MF_CERTS_LOG_LEVEL", "loud"),
    ("MF_CERTS_SUBJECT_CN", "email"),
    ("MF_CERTS_DB_SSL_MODE", "sometimes"),
    ("MF_CERTS_DB_URL", "mysql://x"),
    ("MF_CERTS_HSM_POOL_SIZE", "0"),
    ("MF_CERTS_HSM_PIN_FILE", "/nonexistent/pin"),
    ("MF_CERTS_SERVER_CERT", "/only/the/cert.pem"),
])
def test_bad_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({variable: value})
    assert variable in str(error.value)


def test_client_tls_needs_a_readable_ca_file() -> None:
    with pytest.raises(ConfigError, match="MF_CERTS_CA_CERTS"):
        load_settings({"MF_CERTS_CLIENT_TLS": "true", "MF_CERTS_CA_CERTS": "/nonexistent.pem"})


@pytest.mark.parametrize(("text", "expected"), [
    ("8760h", timedelta(hours=8760)), ("30m", timedelta(minutes=30)),
    ("1h30m", timedelta(hours=1, minutes=30)), ("1.5h", timedelta(minutes=90)),
    ("90s", timedelta(seconds=90)), ("250ms", timedelta(milliseconds=250)), ("0", timedelta(0)),
    ("30d", timedelta(days=30)),  # SPEC 10: a d unit besides Go's
])
def test_go_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "10", "1w", "1h 30m", "--1h", "1.2.3h"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_ttl_takes_whole_hours_too() -> None:
    assert parse_ttl("24") == timedelta(hours=24)
    assert parse_ttl("24h") == timedelta(hours=24)
