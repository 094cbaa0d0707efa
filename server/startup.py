"""The checks ``certs serve`` makes before it serves: each failure is one line naming the cause
and the variable to look at (SPEC section 11), never a traceback."""

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from authority.crl_publisher import crl_file_problem
from authority.settings import Settings
from hsm import errors as hsm_errors

T = TypeVar("T")


class StartupError(Exception):
    """The service cannot start; the message is the one line to print."""


def check_crl_path(settings: Settings) -> None:
    problem = crl_file_problem(Path(settings.crl_path))
    if problem:
        raise StartupError(f"the CRL cannot be written to {settings.crl_path} "
                           f"(MF_CERTS_CRL_PATH): {problem}")


def check_ca_file(settings: Settings) -> None:
    """The CA certificate file is readable and holds PEM certificates."""
    path = settings.ca_path
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise StartupError(f"cannot read the CA certificate {path} (MF_CERTS_SIGN_CA_PATH): "
                           f"{exc.strerror}") from None
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise StartupError(f"the CA certificate {path} (MF_CERTS_SIGN_CA_PATH) is not a PEM "
                           "certificate") from None


def database_step(settings: Settings, step: Callable[[], T]) -> T:
    """Run `step` (which opens the database); a one-line StartupError if it cannot."""
    try:
        return step()
    except SQLAlchemyError as exc:
        raise StartupError(_database_message(settings, exc)) from None


def _database_message(settings: Settings, exc: SQLAlchemyError) -> str:
    cause = str(exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc)
    cause = cause.strip().splitlines()[0] if cause.strip() else type(exc).__name__
    cause = cause.removeprefix("connection failed: ")
    if settings.db_url.startswith("sqlite"):
        return f"database unusable: {cause} (MF_CERTS_DB_URL)"
    lowered = cause.lower()
    if "password" in lowered or "authentication" in lowered or "role" in lowered:
        variables = "MF_CERTS_DB_USER, MF_CERTS_DB_PASS"
        what = "database refused the connection"
    elif "does not exist" in lowered and "database" in lowered:
        variables, what = "MF_CERTS_DB", "database refused the connection"
    elif "ssl" in lowered or "certificate" in lowered:
        variables = "MF_CERTS_DB_SSL_MODE, MF_CERTS_DB_SSL_CERT, MF_CERTS_DB_SSL_KEY, " \
                    "MF_CERTS_DB_SSL_ROOT_CERT"
        what = "database refused the connection"
    else:
        variables, what = "MF_CERTS_DB_HOST, MF_CERTS_DB_PORT", "database unreachable"
    return f"{what}: {cause} ({variables} or MF_CERTS_DB_URL)"


_HSM_VARIABLES: tuple[tuple[type[hsm_errors.HsmError], str], ...] = (
    (hsm_errors.PinRejected, "MF_CERTS_HSM_PIN or MF_CERTS_HSM_PIN_FILE"),
    (hsm_errors.TokenNotFound, "MF_CERTS_HSM_TOKEN"),
    (hsm_errors.KeyNotFound, "MF_CERTS_HSM_KEY_LABEL; create the key with `certs ca create` "
                             "or `certs ca import`"),
    (hsm_errors.CaMismatch, "MF_CERTS_SIGN_CA_PATH, MF_CERTS_HSM_KEY_LABEL"),
    (hsm_errors.HsmUnavailable, "MF_CERTS_HSM_MODULE"),
)


def hsm_step(step: Callable[[], T]) -> T:
    """Run `step` (which opens the HSM); a one-line StartupError naming the variable if not."""
    try:
        return step()
    except hsm_errors.HsmError as exc:
        for kind, variables in _HSM_VARIABLES:
            if isinstance(exc, kind):
                raise StartupError(f"{exc} ({variables})") from None
        raise StartupError(f"{exc} (MF_CERTS_HSM_*)") from None
