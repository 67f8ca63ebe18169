"""The worker image built from this repository's Dockerfile with podman, and run as a container.

No registry image can be pulled here, so the Dockerfile's ``PYTHON_IMAGE`` is a
base made on this machine: ``debootstrap --variant=minbase`` of Debian bookworm
with python3 and python3-venv (Python 3.11, like ``python:3.11-slim-bookworm``),
a ``python`` link, and this machine's CA bundle when it trusts extra CAs (pip
and apt inside the build go through them). The base is cached twice: as a
rootfs tarball in ``~/.cache/cache-pipeline/image-base/`` and as a podman image
tagged with the same key, a hash of everything that goes into it; the image
build itself reuses podman's layer cache.

Podman runs rootful with ``--runtime runc --cgroup-manager cgroupfs``, the host
network (the suite's redis-server and SQS server listen on loopback) and
explicit ulimits, which this machine kind needs. A missing podman is a failure
that says how to install it, never a skip.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cache-pipeline"
SUITE = "bookworm"
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What the Dockerfile's stages run on the base: python -m venv, pip (through the
# venv's ensurepip), apt-get (builder), groupadd/useradd (minbase has passwd).
BASE_PACKAGES = ("python3", "python3-venv")
BASE_RECIPE = 1  # bump when the way the base is made changes
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
TIMINGS = pytest.StashKey[str]()  # the image test's timing line, printed by conftest
INSTALL_HINT = "install it with `apt-get install podman runc debootstrap` (.ci/run does)"


def require(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is not on PATH: {INSTALL_HINT}")
    return path


class Podman:
    """The podman command line this machine kind needs, with a storage driver that works."""

    def __init__(self) -> None:
        self.base = [require("podman"), "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
        require("runc")
        if not self._works():
            # overlay needs kernel support the sandbox may lack; vfs always works (slower)
            self.base += ["--storage-driver", "vfs"]
            if not self._works():
                raise AssertionError(f"podman cannot start: {self._info().stderr[-2000:]}")

    def _info(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.base, "info"], capture_output=True, text=True, timeout=120, check=False
        )

    def _works(self) -> bool:
        return self._info().returncode == 0

    def run(
        self, *args: str, timeout: float = 120, check: bool = True, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            [*self.base, *args], input=stdin, capture_output=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args[:3])} ... exited {result.returncode}:\n"
                f"{result.stderr.decode(errors='replace')[-4000:]}"
            )
        return result

    def text(self, *args: str, timeout: float = 120) -> str:
        return self.run(*args, timeout=timeout).stdout.decode().strip()

    def has_image(self, name: str) -> bool:
        return self.run("image", "exists", name, check=False).returncode == 0


def extra_cas() -> list[Path]:
    """The CA certificates this machine trusts beyond Debian's, if any."""
    return sorted(EXTRA_CA_DIR.glob("**/*.crt")) if EXTRA_CA_DIR.is_dir() else []


def base_key() -> str:
    """A hash of everything that goes into the base: suite, packages, recipe, extra CAs."""
    digest = hashlib.sha256(f"{SUITE}|{MIRROR}|{BASE_PACKAGES}|{BASE_RECIPE}".encode())
    for ca in extra_cas():
        digest.update(ca.read_bytes())
    return digest.hexdigest()[:16]


def ensure_base(podman: Podman) -> tuple[str, str]:
    """The base image's name, and how it was had: ``podman``, ``tarball`` or ``debootstrap``."""
    key = base_key()
    name = f"localhost/cache-pipeline-base:{key}"
    if podman.has_image(name):
        return name, "podman"
    tarball = CACHE / "image-base" / f"{SUITE}-{key}.tar"
    how = "tarball"
    if not tarball.exists():
        make_base_tarball(tarball)
        how = "debootstrap"
    with tarball.open("rb") as stream:
        subprocess.run(
            [*podman.base, "import", "--change", 'CMD ["python3"]', "-", name],
            stdin=stream,
            capture_output=True,
            timeout=300,
            check=True,
        )
    return name, how


def make_base_tarball(tarball: Path) -> None:
    """debootstrap the base into a temporary root, finish it, and tar it up atomically."""
    debootstrap = require("debootstrap")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="base-", dir=tarball.parent))
    try:
        root = work / "root"
        result = subprocess.run(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(root),
                MIRROR,
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"debootstrap failed:\n{result.stdout[-3000:]}{result.stderr}")
        finish_root(root)
        partial = work / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True, timeout=300)
        partial.replace(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def finish_root(root: Path) -> None:
    """``python`` as the slim images have it; this machine's extra CAs; no apt lists."""
    (root / "usr/bin/python").unlink(missing_ok=True)
    (root / "usr/bin/python").symlink_to("python3")
    cas = extra_cas()
    if cas:
        # Also where ca-certificates looks, so an update-ca-certificates in a build keeps them.
        target = root / EXTRA_CA_DIR.relative_to("/")
        target.mkdir(parents=True, exist_ok=True)
        for ca in cas:
            shutil.copy2(ca, target / ca.name)
        shutil.copy2(CA_BUNDLE, root / CA_BUNDLE.relative_to("/"))
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True)


def build_image(podman: Podman, base: str, tag: str) -> None:
    """``podman build`` of the repository's Dockerfile on ``base`` (layers cached by podman)."""
    podman.run(
        "build",
        "--pull=never",
        "--format",
        "docker",  # keeps the HEALTHCHECK, which the OCI format drops
        "--network",
        "host",
        *ULIMITS,
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        "--tag",
        tag,
        "--file",
        str(ROOT / "Dockerfile"),
        str(ROOT),
        timeout=1200,
    )


@dataclass
class Container:
    """One hardened container of the worker image, run detached; ``remove()`` cleans up."""

    podman: Podman
    image: str
    env: Mapping[str, str]
    args: Sequence[str] = ("worker",)
    name: str = field(default_factory=lambda: f"cache-pipeline-test-{uuid.uuid4().hex[:10]}")

    def start(self) -> Container:
        env = [item for key, value in self.env.items() for item in ("--env", f"{key}={value}")]
        self.podman.run(
            "run",
            "--detach",
            "--name",
            self.name,
            "--network",
            "host",
            "--read-only",
            "--read-only-tmpfs=false",  # only /tmp is writable, as in the chart
            "--tmpfs",
            "/tmp:rw,size=64m,mode=1777",
            "--user",
            "10001:10001",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            *ULIMITS,
            *env,
            self.image,
            *self.args,
        )
        return self

    def running(self) -> bool:
        state = self.podman.text("inspect", "--format", "{{.State.Running}}", self.name)
        return state == "true"

    def exec(self, *command: str) -> str:
        return self.podman.text("exec", self.name, *command)

    def logs(self) -> str:
        result = self.podman.run("logs", self.name, check=False)
        return (result.stdout + result.stderr).decode(errors="replace")[-6000:]

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM the worker, then its exit code."""
        self.podman.run("kill", "--signal", "TERM", self.name)
        started = time.monotonic()
        code = self.podman.text("wait", self.name, timeout=timeout)
        assert time.monotonic() - started < timeout
        return int(code)

    def remove(self) -> None:
        self.podman.run("rm", "--force", "--time", "0", self.name, check=False)
