"""One log line per window for a warning that many threads repeat, with how many it stands for.

Twelve consumers meeting the same dead endpoint each back off and fail again: without
this, every backoff round writes a dozen identical warnings. ``RepeatedWarning``
writes the first one of a key, counts the others for ``window`` seconds, and the next
one after the window says how many it stood for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loguru import logger

WINDOW_SECONDS = 10.0


@dataclass
class _Seen:
    since: float
    repeats: int = 0


class RepeatedWarning:
    """Thread-safe; one instance per kind of warning (its key tells the variants apart)."""

    def __init__(
        self, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self.clock = clock
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, message: str, *args: Any, **fields: Any) -> None:
        """Log ``message`` (loguru ``{}`` formatting) unless one of ``key`` was logged within
        the window; a line after the window says how many it stood for."""
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen.since < self.window:
                seen.repeats += 1
                return
            repeats = seen.repeats if seen is not None else 0
            self._seen[key] = _Seen(now)
        if repeats:
            message += f" ({repeats} more like it in the last {self.window:g} s)"
        logger.bind(**fields).warning(message, *args)
