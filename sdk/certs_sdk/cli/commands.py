"""One function per command: call the SDK, write files, return what to print."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from certs_sdk import files
from certs_sdk.cli import output
from certs_sdk.client import CertsClient
from certs_sdk.models import Certificate, parse_time


class UsageError(Exception):
    """A command line that cannot work (exit 2), found before any request."""


class Unhealthy(Exception):
    """`health` got 503: the report is printed and the exit code is 6."""

    def __init__(self, report: str) -> None:
        super().__init__("service unhealthy")
        self.report = report


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError:
        raise UsageError(f"not an RFC 3339 time: {text!r}") from None


USER_COMMANDS = ("issue", "list", "view", "renew", "rotate", "revoke")
KEY_COMMANDS = ("issue", "renew", "rotate", "download")


def check_usage(args: argparse.Namespace, user_token: str | None) -> None:
    """What cannot work, before any request: a user command without a token, and a command
    returning a private key (which comes once) that would go nowhere."""
    if args.command in USER_COMMANDS and not user_token:
        raise UsageError(f"{args.command} needs a user token: --token, --token-file or "
                         "$CERTS_TOKEN")
    if args.command in KEY_COMMANDS and not args.key and not getattr(args, "json", False):
        raise UsageError(f"{args.command} returns a private key: give --key FILE or --json")
    for option in ("key", "cert", "ca", "out"):
        target = getattr(args, option, None)
        if target:
            folder = Path(target).resolve().parent
            if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
                raise UsageError(f"--{option}: cannot write into {folder}")


def _save(args: argparse.Namespace, cert: Certificate) -> None:
    """Key first: once the certificate file exists, its key exists too."""
    if getattr(args, "key", None) and cert.private_key:
        files.write_key(args.key, cert.private_key)
    if args.ca:
        files.write_certificate(args.ca, cert.chain_pem())
    if args.cert:
        files.write_certificate(args.cert, cert.certificate)


def _certificate(args: argparse.Namespace, cert: Certificate) -> str:
    _save(args, cert)
    if getattr(args, "json", False):
        key_written = bool(getattr(args, "key", None))
        return output.dumps(output.certificate_json(cert, key_written=key_written))
    return output.certificate_lines(cert)


def _read_secret(value: str | None, file: str | None, env_value: str | None) -> str | None:
    if value:
        return value
    if file:
        try:
            return Path(file).read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror}") from None
    return env_value or None


def token(args: argparse.Namespace, environ: dict[str, str]) -> str | None:
    return _read_secret(getattr(args, "token", None), getattr(args, "token_file", None),
                        environ.get("CERTS_TOKEN"))


def thing_key(args: argparse.Namespace, environ: dict[str, str]) -> str:
    key = _read_secret(args.thing_key, args.thing_key_file, environ.get("CERTS_THING_KEY"))
    if not key:
        raise UsageError("download needs the thing key: --thing-key, --thing-key-file or "
                         "$CERTS_THING_KEY")
    return key


def run(args: argparse.Namespace, client: CertsClient, environ: dict[str, str]) -> str | bytes:
    """The command's output (text, or bytes for a DER CRL to standard output). An unhealthy
    service raises Unhealthy with its output."""
    json_wanted = getattr(args, "json", False)
    match args.command:
        case "issue":
            return _certificate(args, client.issue(
                args.thing_id, key_type=args.key_type, key_bits=args.key_bits, ttl=args.ttl))
        case "view":
            return _certificate(args, client.view(args.serial))
        case "renew":
            return _certificate(args, client.renew(args.serial))
        case "rotate":
            thing_id = args.thing_id or client.view(args.serial).thing_id
            return _certificate(args, client.rotate(
                args.serial, thing_id, key_type=args.key_type, key_bits=args.key_bits,
                ttl=args.ttl))
        case "download":
            return _certificate(args, client.download(
                args.serial, thing_key(args, environ), external=args.external))
        case "revoke":
            revocation = client.revoke(args.serial)
            if json_wanted:
                return output.dumps(output.plain(revocation))
            return f"revoked {revocation.serial} at {output.plain(revocation.revoked_at)}"
        case "list":
            return _list(args, client, json_wanted)
        case "ca":
            return _document(args, client.ca_pem(), "ca_chain", json_wanted)
        case "crl":
            if args.der:
                return _document(args, client.crl_der(), "crl", False)
            return _document(args, client.crl_pem(), "crl", json_wanted)
        case "health":
            health = client.health()
            text = output.dumps(output.plain(health)) if json_wanted else "\n".join(
                [f"status: {health.status}"] +
                [f"{name}: {check.get('status')}" for name, check in health.checks.items()])
            if not health.ok:
                raise Unhealthy(text)
            return text
    raise UsageError(f"unknown command {args.command}")


def _list(args: argparse.Namespace, client: CertsClient, json_wanted: bool) -> str:
    query: dict[str, Any] = {
        "offset": args.offset, "limit": args.limit, "serial": args.serial,
        "expires_from": _time(args.expires_from), "expires_to": _time(args.expires_to),
    }
    if args.full:
        page = client.list_certs(args.thing_id, **query)
        if json_wanted:
            return output.dumps(output.plain(page))
        return "\n\n".join(output.certificate_lines(cert) for cert in page.certs)
    serials = client.list_serials(args.thing_id, **query)
    if json_wanted:
        return output.dumps({**output.plain(serials), "serials": list(serials.serials)})
    return "\n".join(f"{entry.serial}  {output.plain(entry.expires_at)}  "
                     f"{'downloaded' if entry.downloaded else 'not downloaded'}"
                     for entry in serials.certs)


def _document(args: argparse.Namespace, content: str | bytes, name: str,
              json_wanted: bool) -> str | bytes:
    if args.out:
        files.write_certificate(args.out, content)
        return ""
    if json_wanted:
        return output.dumps({name: content})
    return content


def write(result: str | bytes) -> None:
    if isinstance(result, bytes):
        sys.stdout.buffer.write(result)
        sys.stdout.buffer.flush()
    elif result:
        print(result if not result.endswith("\n") else result[:-1])
