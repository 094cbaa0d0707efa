"""A software TPM with a tpm2-pkcs11 token: the second PKCS#11 implementation of the suite.

    python -m devtools.tpm2 start DIR [--port 2321] [--label certs] [--pin PIN] [--so-pin PIN]
    python -m devtools.tpm2 stop DIR

``start`` runs ``swtpm`` (the TPM), a private D-Bus bus and ``tpm2-abrmd`` (the resource
manager) in the background with their state in DIR, creates a token with ``tpm2_ptool`` and the
AES/HMAC sealing keys in it, and writes DIR/env: the variables the service needs
(``TPM2_PKCS11_TCTI``, ``TPM2_PKCS11_STORE``, ``DBUS_SESSION_BUS_ADDRESS``, ``MF_CERTS_HSM_*``).

The resource manager is not optional: a TPM holds 3 loaded objects, and tpm2-pkcs11 (like
``tpm2_ptool``) keeps every key it used loaded; straight on swtpm the fourth key fails with
"out of memory for object contexts". tpm2-abrmd swaps objects in and out per connection.
Only provisioning lives here; signing goes through plain PKCS#11 like any other HSM.
"""

import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MODULE_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
    "/usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
    "/usr/lib/x86_64-linux-gnu/libtpm2_pkcs11.so.1",
    "/usr/lib/aarch64-linux-gnu/libtpm2_pkcs11.so.1",
)
TOOLS = {
    "swtpm": "swtpm", "tpm2-abrmd": "tpm2-abrmd", "dbus-daemon": "dbus-daemon",
    "tpm2_ptool": "libtpm2-pkcs11-tools", "tpm2_dictionarylockout": "tpm2-tools",
}
SEALING_KEYS = {"certs-seal": "aes256", "certs-seal-mac": "hmac:sha256"}
START_TIMEOUT = 20.0
_DBUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def find_module() -> str:
    """The tpm2-pkcs11 PKCS#11 library; FileNotFoundError when not installed."""
    for candidate in MODULE_CANDIDATES:
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError("tpm2-pkcs11 is not installed (Debian package libtpm2-pkcs11-1)")


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise FileNotFoundError(f"{name} is not installed (Debian package {TOOLS[name]})")
    return path


@dataclass
class SoftwareTpm:
    """swtpm + D-Bus + tpm2-abrmd running for one state directory."""

    state: Path
    port: int
    processes: list["subprocess.Popen[bytes]"] = field(default_factory=list)

    @property
    def store(self) -> Path:
        return self.state / "store"

    @property
    def tcti(self) -> str:
        return f"tabrmd:bus_type=session,bus_name={_bus_name(self.port)}"

    @property
    def env(self) -> dict[str, str]:
        """What a process needs in its environment, before it loads the module, to use it."""
        return {
            "TPM2_PKCS11_TCTI": self.tcti,
            "TPM2TOOLS_TCTI": self.tcti,
            "TPM2_PKCS11_STORE": str(self.store),
            "DBUS_SESSION_BUS_ADDRESS": f"unix:path={self.state / 'bus'}",
        }

    def run_tool(self, *args: str) -> str:
        completed = subprocess.run(
            [_tool(args[0]), *args[1:]], env={**os.environ, **self.env}, capture_output=True,
            text=True, timeout=120, check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"{args[0]} {args[1] if len(args) > 1 else ''} failed: "
                               f"{completed.stderr.strip()[-2000:]}")
        return completed.stdout

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self.processes.clear()


def _bus_name(port: int) -> str:
    return f"com.intel.tss2.Tabrmd.certs{port}"


def _wait_port(port: int, process: "subprocess.Popen[bytes]", deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"swtpm exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"swtpm does not listen on port {port}")


def start(state: Path, port: int, *, detach: bool = False) -> SoftwareTpm:
    """Start a fresh (or resume an existing) software TPM keeping its state in ``state``.

    ``port`` and ``port + 1`` (swtpm's control channel) are bound on 127.0.0.1. ``detach``
    puts the daemons in a session of their own so that they outlive the caller.
    """
    (state / "tpm").mkdir(parents=True, exist_ok=True)
    state.joinpath("store").mkdir(exist_ok=True)
    tpm = SoftwareTpm(state, port)
    log = (state / "daemons.log").open("ab")
    popen = {"stdout": log, "stderr": log, "stdin": subprocess.DEVNULL,
             "start_new_session": detach}
    deadline = time.monotonic() + START_TIMEOUT
    try:
        swtpm = subprocess.Popen([
            _tool("swtpm"), "socket", "--tpm2", "--tpmstate", f"dir={state / 'tpm'}",
            "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
            "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
            "--flags", "not-need-init,startup-clear",
        ], **popen)  # type: ignore[call-overload]
        tpm.processes.append(swtpm)
        _wait_port(port, swtpm, deadline)
        bus = state / "bus"
        bus.unlink(missing_ok=True)
        (state / "dbus.conf").write_text(_DBUS_CONFIG.format(socket=bus))
        tpm.processes.append(subprocess.Popen(
            [_tool("dbus-daemon"), "--nofork", f"--config-file={state / 'dbus.conf'}"],
            **popen))  # type: ignore[call-overload]
        while not bus.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("dbus-daemon did not start")
            time.sleep(0.02)
        abrmd = [_tool("tpm2-abrmd"), "--session", "--allow-root", "--flush-all",
                 f"--tcti=swtpm:host=127.0.0.1,port={port}", f"--dbus-name={_bus_name(port)}",
                 "--max-transients=64"]
        tpm.processes.append(subprocess.Popen(
            abrmd, env={**os.environ, **tpm.env}, **popen))  # type: ignore[call-overload]
        _wait_abrmd(tpm, deadline, lambda: subprocess.Popen(
            abrmd, env={**os.environ, **tpm.env}, **popen))  # type: ignore[call-overload]
    except BaseException:
        tpm.stop()
        raise
    finally:
        log.close()
    return tpm


def _wait_abrmd(tpm: SoftwareTpm, deadline: float,
                relaunch: "Callable[[], subprocess.Popen[bytes]]") -> None:
    """Until the resource manager answers; one that exited (it gives up when swtpm is not
    ready for it yet, on a busy machine) is started again, until ``deadline``."""
    while True:
        try:
            tpm.run_tool("tpm2_getrandom", "--hex", "1")
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            if tpm.processes[-1].poll() is not None:
                tpm.processes[-1] = relaunch()
            time.sleep(0.1)


def relax_lockout(tpm: SoftwareTpm) -> None:
    """Let a test TPM take many wrong PINs: tpm2-pkcs11's PIN is a TPM authorisation value,
    so wrong PINs count towards the TPM's dictionary-attack lockout (default: a few tries)."""
    tpm.run_tool("tpm2_dictionarylockout", "--setup-parameters", "--max-tries=1000",
                 "--recovery-time=1", "--lockout-recovery-time=1")


def init_token(tpm: SoftwareTpm, label: str, pin: str, so_pin: str,
               keys: dict[str, str] | None = None) -> None:
    """A token ``label`` in the store (one primary key per store), with ``keys`` ({key label:
    tpm2_ptool algorithm}, the sealing keys by default) generated in the TPM."""
    store = str(tpm.store)
    primary = tpm.run_tool("tpm2_ptool", "listprimaries", "--path", store)
    if re.search(r"^\s*id: ", primary, re.MULTILINE) is None:
        tpm.run_tool("tpm2_ptool", "init", "--path", store)
    found = re.search(r"^\s*id: (\d+)", primary, re.MULTILINE)
    primary_id = found.group(1) if found else "1"
    tpm.run_tool("tpm2_ptool", "addtoken", f"--pid={primary_id}", f"--label={label}",
                 f"--userpin={pin}", f"--sopin={so_pin}", "--path", store)
    for key_label, algorithm in (SEALING_KEYS if keys is None else keys).items():
        add_key(tpm, label, pin, key_label, algorithm)


def add_key(tpm: SoftwareTpm, token: str, pin: str, key_label: str, algorithm: str) -> None:
    """Generate a key in the TPM and add it to ``token`` (``tpm2_ptool addkey``)."""
    tpm.run_tool("tpm2_ptool", "addkey", f"--label={token}", f"--key-label={key_label}",
                 f"--userpin={pin}", f"--algorithm={algorithm}", "--path", str(tpm.store))


# ---- command line ----------------------------------------------------------------------------


def _start_command(args: argparse.Namespace) -> None:
    state = Path(args.dir).resolve()
    tpm = start(state, args.port, detach=True)
    if args.relax_lockout:
        relax_lockout(tpm)
    init_token(tpm, args.label, args.pin, args.so_pin)
    (state / "pids").write_text("".join(f"{p.pid}\n" for p in tpm.processes))
    env = {
        **tpm.env, "MF_CERTS_HSM_MODULE": find_module(), "MF_CERTS_HSM_TOKEN": args.label,
        "MF_CERTS_HSM_PIN_FILE": str(state / "pin"),
    }
    (state / "pin").write_text(args.pin)
    (state / "pin").chmod(0o600)
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())
    (state / "env").write_text(exports)
    sys.stdout.write(exports)


def _stop_command(args: argparse.Namespace) -> None:
    pids = Path(args.dir, "pids")
    for line in reversed(pids.read_text().split()):
        try:
            os.kill(int(line), signal.SIGTERM)
        except ProcessLookupError:
            pass
    pids.unlink()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.tpm2", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    start_parser = commands.add_parser("start", help="start swtpm + tpm2-abrmd, make a token")
    start_parser.add_argument("dir")
    start_parser.add_argument("--port", type=int, default=2321)
    start_parser.add_argument("--label", default="certs")
    start_parser.add_argument("--pin", required=True)
    start_parser.add_argument("--so-pin", required=True)
    start_parser.add_argument("--relax-lockout", action="store_true",
                              help="allow 1000 wrong PINs (development only)")
    stop_parser = commands.add_parser("stop", help="stop the daemons started for DIR")
    stop_parser.add_argument("dir")
    args = parser.parse_args(argv)
    {"start": _start_command, "stop": _stop_command}[args.command](args)


if __name__ == "__main__":
    main()
