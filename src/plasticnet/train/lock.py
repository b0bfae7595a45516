"""One writer per run directory: an advisory lock (``fcntl.flock``) on ``DIR/.lock``, held while a run trains.

The operating system releases the lock when its process ends, however it ends (SIGKILL included), so a lock file
left by a dead process is simply taken over; the file itself only records who holds it, for the message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import ConfigError

LOCK = ".lock"


class RunLock:
    """``with RunLock(run_dir):`` raises :class:`ConfigError` at once if another live process holds the lock."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self._fd = None

    def __enter__(self):
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot write in {self.path.parent} ({exc.strerror}); choose a writable --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(f"{self.path.parent} is being trained by process {holder}; wait for it to end (or "
                              f"stop it) before resuming, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc):
        os.close(self._fd)  # closing the last descriptor releases the lock
        self._fd = None
