"""The command line's arguments. Common options are accepted before or after the command."""

from __future__ import annotations

import argparse

from certs_sdk._transport import DEFAULT_TIMEOUT

KEY_TYPES = ("rsa", "ec", "ecdsa")


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add = common.add_argument
    add("--url", default=argparse.SUPPRESS,
        help="service URL (default: $CERTS_URL, else http://localhost:8204)")
    add("--token", default=argparse.SUPPRESS, help="user token (else --token-file, $CERTS_TOKEN)")
    add("--token-file", default=argparse.SUPPRESS, help="file holding the user token")
    add("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    add("--timeout", type=float, default=argparse.SUPPRESS,
        help=f"seconds per request (default {DEFAULT_TIMEOUT:g})")
    add("--retries", type=int, default=argparse.SUPPRESS,
        help="attempts for requests safe to repeat, on 503 or no connection (default 4)")
    add("--cacert", default=argparse.SUPPRESS, help="CA bundle to verify an HTTPS service")
    return common


def _files(parser: argparse.ArgumentParser, *, key: bool = True) -> None:
    parser.add_argument("--cert", help="write the certificate (PEM) to this file")
    if key:
        parser.add_argument("--key", help="write the private key (PEM, mode 0600) to this file")
    parser.add_argument("--ca", help="write the CA chain (PEM) to this file")


def _key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key-type", choices=KEY_TYPES)
    parser.add_argument("--key-bits", type=int)
    parser.add_argument("--ttl", help="lifetime: 8760h, 30m, 1h30m or whole hours")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="certs-client", parents=[common],
        description="Client of the certs service. Exit codes: 0 ok, 1 other failure, 2 usage, "
                    "3 bad request (400, 415), 4 authentication or authorization (401, 403), "
                    "5 not found (404), 6 service unavailable (503, no connection, timeout).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], help=help_text, description=help_text)

    issue = command("issue", "issue a certificate for a thing (needs --key or --json)")
    issue.add_argument("thing_id")
    _key_options(issue)
    _files(issue)

    listing = command("list", "list a thing's certificates")
    listing.add_argument("thing_id")
    listing.add_argument("--offset", type=int)
    listing.add_argument("--limit", type=int)
    listing.add_argument("--serial", help="substring of the serial")
    listing.add_argument("--from", dest="expires_from", help="expires at or after (RFC 3339)")
    listing.add_argument("--to", dest="expires_to", help="expires at or before (RFC 3339)")
    listing.add_argument("--full", action="store_true",
                         help="whole records (GET /things/{id}/certs), not only serials")

    view = command("view", "show a certificate (never its key)")
    view.add_argument("serial")
    _files(view, key=False)

    renew = command("renew", "renew a certificate close to expiry (needs --key or --json)")
    renew.add_argument("serial")
    _files(renew)

    rotate = command("rotate", "replace a certificate now (needs --key or --json)")
    rotate.add_argument("serial")
    rotate.add_argument("--thing-id", help="the certificate's thing (default: looked up)")
    _key_options(rotate)
    _files(rotate)

    revoke = command("revoke", "revoke a certificate")
    revoke.add_argument("serial")

    download = command("download", "fetch a certificate and its key once, as the device "
                                   "(needs --key or --json)")
    download.add_argument("serial")
    download.add_argument("--thing-key", help="the thing key (else --thing-key-file, "
                                              "$CERTS_THING_KEY)")
    download.add_argument("--thing-key-file", help="file holding the thing key")
    download.add_argument("--external", action="store_true", help="the key is an external key")
    _files(download)

    ca = command("ca", "the CA chain (PEM)")
    ca.add_argument("--out", help="write it to this file instead of standard output")

    crl = command("crl", "the current CRL (PEM, or DER with --der)")
    crl.add_argument("--der", action="store_true")
    crl.add_argument("--out", help="write it to this file instead of standard output")

    command("health", "the service's health (exit 6 when it is not healthy)")
    return parser
