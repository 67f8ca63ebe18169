"""What uv.lock pins, for one set of extras and groups, on a given interpreter and platform."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def uv() -> str:
    """uv from PATH, else the one `make install` bootstraps into .tools/."""
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if not Path(found).exists():
        raise AssertionError(
            "uv is not installed: run `make install` (it bootstraps .tools/bin/uv)"
        )
    return found


def locked_versions(
    *,
    extras: tuple[str, ...] = ("worker",),
    dev: bool = True,
    environment: dict[str, str] | None = None,
) -> dict[str, str]:
    """{canonical name: version} of every package the lock installs for those choices, on
    this interpreter or on the one whose marker ``environment`` is given."""
    args = [uv(), "export", "--quiet", "--frozen", "--no-hashes", "--no-emit-project"]
    args += [item for extra in extras for item in ("--extra", extra)]
    if not dev:
        args.append("--no-dev")
    exported = subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    pins: dict[str, str] = {}
    for line in exported.splitlines():
        if not line or line.startswith((" ", "#")):
            continue
        requirement, _, marker = line.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate(environment):
            continue
        name, _, version = requirement.strip().partition("==")
        pins[str(canonicalize_name(name.split("[")[0]))] = version
    return pins
