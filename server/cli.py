"""The operator's command line: serve, CA in the HSM, migrations, CRL, and the API's actions.

Run ``certs --help`` (or ``python -m server.cli --help``). Configuration comes from the same
``MF_*`` variables as the service.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from authority import audit as audit_trail
from authority import key_policy
from authority.errors import ServiceError
from authority.fitness import EXIT_REPLACE
from authority.migration import migrate_and_seal
from authority.requests import ListQuery
from authority.settings import ConfigError, Settings, load_settings
from authority.wiring import build, open_authority
from hsm.authority import load_certificate
from hsm.ca_certificate import create_ca
from hsm.ca_key import import_ca_key, key_attributes
from hsm.connection import HsmConfig, HsmConnection
from hsm.errors import CaMismatch, HsmError
from repository import RepositoryError
from server import startup
from server.port_guard import PortInUse, claim_port
from server.startup import StartupError
from server.state_file import STATE_VARIABLE, StateError, apply_state
from server.supervision import Backoff, StopSignals, start_child, stop_children
from server.workers import WorkerPool

# A scheduler that asked to be replaced is started again after this pause (not a backoff: a
# new scheduler waits for the HSM rather than exit while it is missing).
REPLACE_PAUSE_SECONDS = 0.5


def _connection(settings: Settings) -> HsmConnection:
    return HsmConnection(HsmConfig(module_path=settings.hsm_module, pin=settings.hsm_pin,
                                   token_label=settings.hsm_token, pool_size=2,
                                   wait_seconds=settings.hsm_timeout))


def ca_create(settings: Settings, key_type: str, bits: int, common_name: str, days: int) -> str:
    """Generate the CA key in the token and write its self-signed certificate."""
    create_ca(_connection(settings), settings.hsm_key_label, key_type, bits, common_name,
              Path(settings.ca_path), days=days)
    return f"CA key {settings.hsm_key_label!r} created in token {settings.hsm_token!r}; " \
           f"certificate written to {settings.ca_path}"


def ca_import(settings: Settings) -> str:
    """Copy MF_CERTS_SIGN_CA_KEY_PATH into the token; the file is not needed afterwards."""

    key_pem = Path(settings.ca_key_path).read_bytes()
    _check_pair(key_pem, settings.ca_path)
    connection = _connection(settings)
    import_ca_key(connection, settings.hsm_key_label, key_pem)
    open_authority(settings)
    return f"CA key imported into token {settings.hsm_token!r} as {settings.hsm_key_label!r} " \
           f"and checked against {settings.ca_path}; {settings.ca_key_path} may now be deleted"


def _check_pair(key_pem: bytes, certificate_path: str) -> None:
    """Refuse, before anything is written to the token, a key that is not the certificate's."""
    private = serialization.load_pem_private_key(key_pem, password=None)
    certificate_key = load_certificate(certificate_path).public_key.dump()
    key_der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if serialization.load_der_public_key(certificate_key).public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo) != key_der:
        raise CaMismatch(f"the CA certificate {certificate_path} does not match the private "
                         "key; nothing was imported")


def ca_show(settings: Settings) -> str:

    authority = open_authority(settings)
    certificate = authority.ca_certificate
    attributes = key_attributes(authority.connection, settings.hsm_key_label)
    return json.dumps({
        "subject": certificate.subject.human_friendly,
        "serial": format(certificate.serial_number, "x"),
        "not_after": authority.not_after.isoformat(),
        "signature": authority.signer.scheme.name,
        "key_label": settings.hsm_key_label,
        "key": attributes,
    }, indent=2)


def _issue(settings: Settings, thing_id: str, key_type: str, bits: int | None,
           ttl: str | None) -> dict[str, str]:
    components = build(settings)
    body = {"thing_id": thing_id, "key_type": key_type, "key_bits": bits, "ttl": ttl}
    try:
        request = components.service.issue_request(body)
        view = components.service.issue_as_operator(request)
    finally:
        components.service.close()
    return {"serial": view.serial, "certificate": view.certificate,
            "private_key": view.private_key or "", "expires_at": view.expires_at.isoformat()}


def serve(settings: Settings) -> None:
    """Check what serving needs, migrate, then serve HTTP on the workers next to the scheduler
    process until SIGTERM or SIGINT; every check that fails raises StartupError (one line)."""
    stop = StopSignals()
    port_lock = claim_port(settings.http_host, settings.http_port)  # noqa: F841 - held for life
    startup.check_crl_path(settings)
    startup.check_ca_file(settings)
    startup.hsm_step(lambda: startup.database_step(settings, lambda: migrate_and_seal(settings)))
    startup.hsm_step(lambda: open_authority(settings)).connection.close()
    if stop.stopping:
        return
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Every worker and the scheduler write their metrics here; /metrics adds them up.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="certs-metrics-")
    # grpcio's EventEngine client does each call's socket I/O on threads of its own, which hand
    # the answer on to the event loop: its former client, which does that I/O on the thread
    # waiting for the call, costs the workers 10-20 % less CPU per request (README,
    # "Performance"). The workers and the scheduler read it at their first ``import grpc``.
    os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_client")
    scheduler = SchedulerSupervisor()
    scheduler.start()
    try:
        WorkerPool(settings.http_host, settings.http_port, settings.workers).run(stop.event)
    except OSError as exc:  # a worker's socket: the port was taken after the probe
        raise StartupError(f"cannot listen on {settings.http_host} port {settings.http_port} "
                           f"(MF_CERTS_HTTP_PORT, MF_CERTS_HTTP_HOST): {exc.strerror}") from None
    finally:
        scheduler.stop()


class SchedulerSupervisor(threading.Thread):
    """Keeps one ``python -m scheduler`` process running; restarts it when it exits, at once
    when it asked to be replaced (its HSM connection became unrecoverable, or the HSM it
    waited for signs again)."""

    def __init__(self) -> None:
        super().__init__(name="scheduler-supervisor", daemon=True)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None

    def run(self) -> None:
        backoff = Backoff(longest=60.0)
        while True:
            with self._lock:
                if self._stopping.is_set():
                    return
                started = time.monotonic()
                self._process = start_child([sys.executable, "-m", "scheduler"])
            code = self._process.wait()
            if self._stopping.is_set():
                return
            if code == EXIT_REPLACE:
                pause = REPLACE_PAUSE_SECONDS
                print("certs: scheduler asked to be replaced; starting a new one",
                      file=sys.stderr, flush=True)
            else:
                pause = backoff.pause_after(time.monotonic() - started)
                print(f"certs: scheduler exited with {code}; restarting in {pause:.0f} s",
                      file=sys.stderr, flush=True)
            self._stopping.wait(pause)

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            process = self._process
        stop_children([process], timeout=10)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="certs", description=__doc__)
    parser.add_argument("--state", default=os.environ.get(STATE_VARIABLE) or None,
                        help="a state folder made by scripts/run: read its certs.env "
                             f"(default ${STATE_VARIABLE}); set variables win over the file")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the HTTP service (migrates first)")
    commands.add_parser("migrate", help="bring the database schema to the newest version")
    ca = commands.add_parser("ca", help="the CA key in the HSM").add_subparsers(
        dest="ca_command", required=True)
    create = ca.add_parser("create", help="generate the CA key in the token, write the cert")
    create.add_argument("--key-type", choices=["rsa", "ec"], default="ec")
    create.add_argument("--bits", type=int, default=key_policy.DEFAULT_EC_BITS)
    create.add_argument("--cn", default="Mainflux Certs CA")
    create.add_argument("--days", type=int, default=3650)
    ca.add_parser("import", help="import MF_CERTS_SIGN_CA_KEY_PATH into the token once")
    ca.add_parser("show", help="show the CA certificate and the key's protection flags")
    commands.add_parser("crl", help="sign the CRL now and write it to MF_CERTS_CRL_PATH")
    issue = commands.add_parser("issue", help="issue a certificate (operator, no identity check)")
    issue.add_argument("thing_id")
    issue.add_argument("--key-type", choices=["rsa", "ec"], default="rsa")
    issue.add_argument("--bits", type=int)
    issue.add_argument("--ttl")
    listing = commands.add_parser("list", help="list a thing's certificates")
    listing.add_argument("thing_id")
    revoke = commands.add_parser("revoke", help="revoke a certificate and re-sign the CRL")
    revoke.add_argument("serial")
    audit = commands.add_parser("audit", help="the audit trail").add_subparsers(
        dest="audit_command", required=True)
    audit_list = audit.add_parser("list", help="print the records, one JSON object a line")
    audit_list.add_argument("--thing", help="only this thing's records")
    audit_list.add_argument("--since", help="from this RFC 3339 time on, or a duration ago")
    audit.add_parser("verify", help="check the hash chain; non-zero exit naming a bad record")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.state:
            apply_state(Path(args.state))
        settings = load_settings()
        output = _run(args, settings)
    except (StartupError, PortInUse, StateError) as exc:
        print(f"certs: {exc}", file=sys.stderr)
        return 1
    except ServiceError as exc:
        print(f"certs: {exc.message}", file=sys.stderr)
        return 1
    except (ConfigError, HsmError, RepositoryError, OSError, ValueError) as exc:
        print(f"certs: {exc}", file=sys.stderr)
        return 1
    if output:
        print(output)
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> str:
    if args.command == "serve":
        serve(settings)
        return ""
    if args.command == "migrate":
        sealed = migrate_and_seal(settings)
        return "database schema is current" + (
            f"; {sealed} plaintext client keys sealed" if sealed else "")
    if args.command == "ca":
        if args.ca_command == "create":
            return ca_create(settings, args.key_type, args.bits, args.cn, args.days)
        if args.ca_command == "import":
            return ca_import(settings)
        return ca_show(settings)
    if args.command == "audit":
        return _audit(args, settings)
    if args.command == "issue":
        return json.dumps(_issue(settings, args.thing_id, args.key_type, args.bits, args.ttl),
                          indent=2)
    components = build(settings)
    try:
        if args.command == "crl":
            crl = components.service.publish_crl()
            if components.service.crl.write_error:
                raise StartupError(f"CRL {crl.number} signed, but not written: "
                                   f"{components.service.crl.write_error} (MF_CERTS_CRL_PATH)")
            return f"CRL {crl.number} with {crl.entries} entries written to {settings.crl_path}"
        if args.command == "list":
            page = components.service.list_as_operator(args.thing_id, ListQuery(limit=200))
            return "\n".join(
                f"{c.serial}  expires {c.expires_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
                for c in page.certs
            )
        revocation = components.service.revoke_as_operator(args.serial)
        return f"revoked {args.serial} at {revocation.astimezone(UTC).isoformat()}"
    finally:
        components.service.close()


def _audit(args: argparse.Namespace, settings: Settings) -> str:
    store = audit_trail.open_trail(settings.db_url)
    try:
        if args.audit_command == "verify":
            verdict = audit_trail.verify(store)
            if not verdict.ok:
                raise ValueError(f"{verdict.problem} (after {verdict.records} records read)")
            return f"audit trail intact: {verdict.records} records"
        since = audit_trail.parse_since(args.since) if args.since else None
        return "\n".join(audit_trail.as_json_line(record) for record in
                         audit_trail.records(store, thing_id=args.thing, since=since))
    finally:
        store.engine.dispose()


if __name__ == "__main__":
    sys.exit(main())


