"""The service's configuration: the ``MF_*`` environment variables of SPEC section 10.

Every value is checked when the settings are read; a bad one raises ConfigError naming the
variable, and the service does not start.
"""

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path
from urllib.parse import quote

from authority import key_policy
from authority.durations import parse_duration


class ConfigError(ValueError):
    """A configuration variable has a value the service cannot use."""


LOG_LEVELS = ("debug", "info", "warn", "warning", "error")
DEFAULT_HSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


@dataclass(frozen=True)
class Settings:
    """Validated configuration; secrets are kept out of repr()."""

    log_level: str = "error"
    http_port: int = 8204
    http_host: str = "0.0.0.0"
    jaeger_url: str = ""
    db_url: str = field(default="", repr=False)
    client_tls: bool = False
    ca_certs: str = ""
    server_cert: str = ""
    server_key: str = ""
    ca_path: str = "ca.crt"
    ca_key_path: str = "ca.key"
    hours_valid: timedelta = timedelta(hours=2048)
    rsa_bits: int = 2048
    auth_url: str = "localhost:8181"
    auth_timeout: float = 1.0
    things_url: str = "localhost:8183"
    things_timeout: float = 1.0
    sdk_certs_url: str = "http://localhost"
    broker_url: str = "nats://localhost:4222"
    check_time: time = time(2, 0)
    crl_path: str = "crl.pem"
    crl_validity: timedelta = timedelta(hours=24)
    ocsp_validity: timedelta = timedelta(hours=1)
    renew_window: timedelta = timedelta(hours=720)
    crl_url: str = ""
    ocsp_url: str = ""
    hsm_module: str = DEFAULT_HSM_MODULE
    hsm_token: str = "certs"
    hsm_pin: str = field(default="", repr=False)
    hsm_key_label: str = "certs-ca"
    hsm_seal_label: str = "certs-seal"
    hsm_pool_size: int = 8
    hsm_timeout: float = 5.0
    subject_cn: str = "thing_id"
    # EST re-enroll behind a TLS-terminating proxy (SPEC 12): the header carrying the client
    # certificate, believed only from these networks (none: the header is ignored).
    client_cert_header: str = "X-SSL-Client-Cert"
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    event_keys: str = "include"
    es_url: str = field(default="", repr=False)  # Redis URL of the platform events (SPEC 14)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, "") or default


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("true", "1", "yes", "on"):
        return True
    if raw in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _duration(env: Mapping[str, str], name: str, default: timedelta) -> timedelta:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = parse_duration(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a duration such as 24h or 30m, not {raw!r}") from None
    if value <= timedelta(0):
        raise ConfigError(f"{name} must be positive")
    return value


def _clock(env: Mapping[str, str], name: str, default: time) -> time:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        hours, minutes = raw.split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        raise ConfigError(f"{name} must be HH:MM (UTC), not {raw!r}") from None


def _database_url(env: Mapping[str, str]) -> str:
    if env.get("MF_CERTS_DB_URL"):
        url = env["MF_CERTS_DB_URL"]
        if not url.startswith(("sqlite:", "postgresql")):
            raise ConfigError("MF_CERTS_DB_URL must be a sqlite:/// or postgresql:// URL")
        return url.replace("postgresql://", "postgresql+psycopg://", 1)
    user = quote(_text(env, "MF_CERTS_DB_USER", "mainflux"), safe="")
    password = quote(_text(env, "MF_CERTS_DB_PASS", "mainflux"), safe="")
    host = _text(env, "MF_CERTS_DB_HOST", "localhost")
    port = _int(env, "MF_CERTS_DB_PORT", 5432, 1, 65535)
    name = _text(env, "MF_CERTS_DB", "certs")
    ssl_mode = _text(env, "MF_CERTS_DB_SSL_MODE", "disable")
    if ssl_mode not in ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"):
        raise ConfigError(f"MF_CERTS_DB_SSL_MODE has an unknown mode {ssl_mode!r}")
    query = [f"sslmode={ssl_mode}"]
    for variable, parameter in (("MF_CERTS_DB_SSL_CERT", "sslcert"),
                                ("MF_CERTS_DB_SSL_KEY", "sslkey"),
                                ("MF_CERTS_DB_SSL_ROOT_CERT", "sslrootcert")):
        if env.get(variable):
            query.append(f"{parameter}={quote(env[variable], safe='/')}")
    return f"postgresql+psycopg://{user}:{password}@{host}:{port}/{name}?{'&'.join(query)}"


def _address(env: Mapping[str, str], name: str, default: str) -> str:
    raw = _text(env, name, default).strip()
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise ConfigError(f"{name} must be an IP address such as 0.0.0.0, 127.0.0.1 or ::, "
                          f"not {raw!r}") from None


def _jaeger_url(env: Mapping[str, str], default: str) -> str:
    """MF_JAEGER_URL as given, once it is known to name an OTLP endpoint."""
    from authority.tracing import parse_endpoint  # here: authority.tracing imports this module

    raw = env.get("MF_JAEGER_URL", default).strip()
    try:
        parse_endpoint(raw)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return raw


def _pin(env: Mapping[str, str]) -> str:
    if env.get("MF_CERTS_HSM_PIN"):
        return env["MF_CERTS_HSM_PIN"]
    pin_file = env.get("MF_CERTS_HSM_PIN_FILE", "")
    if pin_file:
        try:
            return Path(pin_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"MF_CERTS_HSM_PIN_FILE cannot be read: {exc.strerror}") from None
    return ""


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    return _duration(env, name, timedelta(seconds=default)).total_seconds()


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``env`` (the process environment by default); ConfigError when invalid."""
    env = os.environ if env is None else env
    defaults = Settings()
    log_level = _text(env, "MF_CERTS_LOG_LEVEL", defaults.log_level).lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"MF_CERTS_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
    subject_cn = _text(env, "MF_CERTS_SUBJECT_CN", defaults.subject_cn)
    event_keys = _text(env, "MF_CERTS_EVENT_KEYS", defaults.event_keys).lower()
    if event_keys not in ("include", "omit"):
        raise ConfigError("MF_CERTS_EVENT_KEYS must be include or omit")
    if subject_cn not in ("thing_id", "thing_key"):
        raise ConfigError("MF_CERTS_SUBJECT_CN must be thing_id or thing_key")
    server_cert = env.get("MF_CERTS_SERVER_CERT", "")
    server_key = env.get("MF_CERTS_SERVER_KEY", "")
    if bool(server_cert) != bool(server_key):
        raise ConfigError("MF_CERTS_SERVER_CERT and MF_CERTS_SERVER_KEY must be set together")
    client_tls = _bool(env, "MF_CERTS_CLIENT_TLS", defaults.client_tls)
    ca_certs = env.get("MF_CERTS_CA_CERTS", "")
    if client_tls and ca_certs and not Path(ca_certs).is_file():
        raise ConfigError("MF_CERTS_CA_CERTS does not name a readable file")
    return Settings(
        log_level=log_level,
        http_port=_int(env, "MF_CERTS_HTTP_PORT", defaults.http_port, 1, 65535),
        http_host=_address(env, "MF_CERTS_HTTP_HOST", defaults.http_host),
        jaeger_url=_jaeger_url(env, defaults.jaeger_url),
        db_url=_database_url(env),
        client_tls=client_tls,
        ca_certs=ca_certs,
        server_cert=server_cert,
        server_key=server_key,
        ca_path=_text(env, "MF_CERTS_SIGN_CA_PATH", defaults.ca_path),
        ca_key_path=_text(env, "MF_CERTS_SIGN_CA_KEY_PATH", defaults.ca_key_path),
        hours_valid=_duration(env, "MF_CERTS_SIGN_HOURS_VALID", defaults.hours_valid),
        rsa_bits=_rsa_bits(env),
        auth_url=_text(env, "MF_AUTH_GRPC_URL", defaults.auth_url),
        auth_timeout=_seconds(env, "MF_AUTH_GRPC_TIMEOUT", defaults.auth_timeout),
        things_url=_text(env, "MF_THINGS_GRPC_URL", defaults.things_url),
        things_timeout=_seconds(env, "MF_THINGS_GRPC_TIMEOUT", defaults.things_timeout),
        sdk_certs_url=_text(env, "MF_SDK_CERTS_URL", defaults.sdk_certs_url),
        broker_url=_text(env, "MF_BROKER_URL", defaults.broker_url),
        check_time=_clock(env, "MF_CERTS_CHECK_TIME", defaults.check_time),
        crl_path=_text(env, "MF_CERTS_CRL_PATH", defaults.crl_path),
        crl_validity=_duration(env, "MF_CERTS_CRL_VALIDITY", defaults.crl_validity),
        ocsp_validity=_duration(env, "MF_CERTS_OCSP_VALIDITY", defaults.ocsp_validity),
        renew_window=_duration(env, "MF_CERTS_RENEW_WINDOW", defaults.renew_window),
        crl_url=env.get("MF_CERTS_CRL_URL", defaults.crl_url),
        ocsp_url=env.get("MF_CERTS_OCSP_URL", defaults.ocsp_url),
        hsm_module=_text(env, "MF_CERTS_HSM_MODULE", defaults.hsm_module),
        hsm_token=_text(env, "MF_CERTS_HSM_TOKEN", defaults.hsm_token),
        hsm_pin=_pin(env),
        hsm_key_label=_text(env, "MF_CERTS_HSM_KEY_LABEL", defaults.hsm_key_label),
        hsm_seal_label=_text(env, "MF_CERTS_HSM_SEAL_LABEL", defaults.hsm_seal_label),
        hsm_pool_size=_int(env, "MF_CERTS_HSM_POOL_SIZE", defaults.hsm_pool_size, 1, 256),
        hsm_timeout=_seconds(env, "MF_CERTS_HSM_TIMEOUT", defaults.hsm_timeout),
        subject_cn=subject_cn,
        client_cert_header=_header_name(env, "MF_CERTS_CLIENT_CERT_HEADER",
                                        defaults.client_cert_header),
        trusted_proxies=_networks(env, "MF_CERTS_TRUSTED_PROXIES"),
        event_keys=event_keys,
        es_url=_redis_url(env),
        workers=_int(env, "MF_CERTS_WORKERS", defaults.workers, 1, 64),
    )


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def _header_name(env: Mapping[str, str], name: str, default: str) -> str:
    raw = _text(env, name, default).strip()
    if not _HEADER_NAME.match(raw):
        raise ConfigError(f"{name} must be an HTTP header name such as X-SSL-Client-Cert")
    return raw


def _networks(env: Mapping[str, str], name: str
              ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma- or space-separated CIDRs (a bare address is a /32 or /128)."""
    found = []
    for item in env.get(name, "").replace(",", " ").split():
        try:
            found.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name} must list CIDRs such as 10.0.0.0/8, not {item!r}") from None
    return tuple(found)


def _rsa_bits(env: Mapping[str, str]) -> int:
    raw = env.get("MF_CERTS_SIGN_RSA_BITS", "").strip()
    if not raw:
        return key_policy.DEFAULT_RSA_BITS
    allowed = key_policy.GENERATED_KEY_BITS[key_policy.RSA]
    if raw not in {str(bits) for bits in allowed}:
        choices = ", ".join(str(bits) for bits in allowed[:-1]) + f" or {allowed[-1]}"
        raise ConfigError(f"MF_CERTS_SIGN_RSA_BITS must be {choices}, not {raw!r}")
    return int(raw)


def _redis_url(env: Mapping[str, str]) -> str:
    raw = env.get("MF_CERTS_ES_URL", "").strip()
    if raw and not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("MF_CERTS_ES_URL must be a redis://, rediss:// or unix:// URL")
    return raw
