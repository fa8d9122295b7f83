"""lock: one controller per HAProxy, enforced with an exclusive lock on a file.

Two controllers driving one HAProxy would each reload it with their own config and one would stop
it on exit. The lock file lives in the run directory (supervised) or beside the config file
(attached) and holds the pid of its owner, so that a second controller names it when it refuses
to start. flock(2) locks vanish with their process: a killed controller leaves no stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from kube2haproxy.errors import EnvironmentProblem


class Lock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or EnvironmentProblem naming the pid that holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise EnvironmentProblem(f"{self.path}: cannot open the lock file: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise EnvironmentProblem(
                f"{self.path} is locked by another kube2haproxy (pid {holder}): one controller "
                "per HAProxy; stop it, or give this one another --run-dir (or --haproxy-config)"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise EnvironmentProblem(f"{self.path}: cannot lock: {exc}") from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the last descriptor releases the lock
            self._fd = None
