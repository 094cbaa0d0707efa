"""The SDK stands on its own: it builds as its own wheel, declares only httpx and
cryptography, and importing all of it loads nothing of the service."""

import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE_MODULES = ("server", "authority", "hsm", "repository", "scheduler", "devtools",
                   "litestar", "sqlalchemy", "pkcs11", "grpc", "asn1crypto", "msgspec")


def test_requires_only_httpx_and_cryptography() -> None:
    requires = metadata.requires("certs-sdk") or []
    assert sorted(r.split(">")[0].split("=")[0].strip() for r in requires) == [
        "cryptography", "httpx"]
    scripts = {e.name: e.value for e in metadata.entry_points(group="console_scripts")}
    assert scripts["certs-client"] == "certs_sdk.cli:main"


def test_imports_nothing_of_the_service(tmp_path: Path) -> None:
    probe = (
        "import sys, pkgutil, importlib, certs_sdk\n"
        "for m in pkgutil.walk_packages(certs_sdk.__path__, 'certs_sdk.'):\n"
        "    importlib.import_module(m.name)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {SERVICE_MODULES!r})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-I", "-c", probe], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_builds_as_its_own_wheel(tmp_path: Path) -> None:
    """From a copy of sdk/ alone (nothing else of the repository next to it)."""
    source = tmp_path / "src"
    shutil.copytree(ROOT / "sdk", source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("certs_sdk-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "certs_sdk/py.typed" in names and "certs_sdk/cli/__init__.py" in names
    assert {name.split("/")[0] for name in names} <= {
        "certs_sdk", f"{wheel.name.split('-py')[0]}.dist-info"}
