"""Child processes of the local stack: started in their own process group, stopped whole.

Every child runs in a new session (its own process group), so a Ctrl-C in the
terminal reaches only the launcher, which then stops the children itself, in
order, each with its whole group (grandchildren included). On Linux a child
also gets SIGTERM if the launcher dies without cleaning up.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
PR_SET_PDEATHSIG = 1


class StackError(Exception):
    """The stack could not start or a part of it died; the message says which and why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the launcher goes away (Linux only)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """One started process (the leader of its own process group) and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float) -> None:
        """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL what is left."""
        if self.running():
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                self.process.wait(10)
        # Grandchildren that outlived the leader belong to the same group.
        _signal_group(self.pid, signal.SIGKILL)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def spawn(name: str, args: Sequence[str], env: dict[str, str], log_dir: Path) -> Child:
    """Start ``args`` in a new session with stdout and stderr going to ``log_dir/name.log``."""
    log = log_dir / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # the launcher is single-threaded
        )
    return Child(name, process, log)


def wait_for(
    check: Callable[[], T | None], *, timeout: float, what: str, child: Child | None = None
) -> T:
    """Poll ``check`` until it returns a value; fail if ``child`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if child is not None and not child.running():
            raise StackError(
                f"{child.name} exited with code {child.process.returncode} before {what}; "
                f"last lines of {child.log}:\n{child.log_tail()}"
            )
        try:
            value = check()
        except Exception as exc:  # still starting
            last = exc
        else:
            if value is not None and value is not False:
                return value
        time.sleep(0.1)
    hint = f"; see {child.log}" if child is not None else ""
    raise StackError(f"timed out after {timeout:.0f} s waiting for {what} ({last}){hint}")
