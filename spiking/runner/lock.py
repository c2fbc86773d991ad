"""One writer per output folder: an exclusive OS lock on ``<folder>/.lock`` held for a run's life.

``FolderLock(folder).acquire()`` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on the lock file and
writes the holder (pid, host, start time) into it; a second process fails at once with a
``ValueError`` naming that holder. The kernel drops the lock when its process dies (also on
SIGKILL), so a lock left by a killed run is simply taken over: the file stays, the lock does not.
The lock file is never deleted (deleting it would let two processes lock two different files).
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".lock"
RECORD = 160  # bytes of the holder line (fixed, so a reader never sees half of one)


class FolderLock:
    """Exclusive advisory lock on ``folder/.lock`` (see the module docstring)."""

    def __init__(self, folder):
        self.path = Path(folder) / LOCK_NAME
        self.fd: int | None = None

    def holder(self) -> str:
        """What the current holder wrote into the lock file (it may not have written it yet)."""
        for _ in range(20):
            try:
                text = self.path.read_text().strip()
            except OSError:
                text = ""
            if text:
                return text
            time.sleep(0.01)
        return "a process that has not yet recorded its pid"

    def acquire(self) -> "FolderLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ValueError(f"out: cannot create the lock file {self.path} ({exc.strerror}); "
                             f"choose a folder you can write to") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ValueError(f"out: {self.path.parent} is in use by another spiking run "
                             f"({self.holder()}); wait for it to finish or choose another out") from None
        except OSError as exc:
            os.close(fd)
            raise ValueError(f"out: cannot lock {self.path} ({exc.strerror})") from exc
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        line = f"pid {os.getpid()} on {socket.gethostname()} since {stamp}".encode()
        os.ftruncate(fd, RECORD)
        os.pwrite(fd, line[:RECORD - 1].ljust(RECORD - 1) + b"\n", 0)  # one write: old or new holder
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
