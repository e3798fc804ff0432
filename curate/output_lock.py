"""One command writes an output folder at a time."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time

from curate.layout import WORK_DIR


class OutputBusy(RuntimeError):
    """Another kvid process holds the output folder."""


class OutputLock:
    """One writer per output folder: an exclusive ``flock`` on OUT/.kvid/lock, holding the
    holder's host, pid and command for the message a second writer gets. The kernel drops
    the lock when its process dies (even by SIGKILL), so a stale lock never blocks a run."""

    def __init__(self, out_dir: str, command: str):
        self.out_dir = out_dir
        self.command = command
        self.path = os.path.join(out_dir, WORK_DIR, "lock")
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            who = (f"`{holder.get('command', 'kvid')}` (host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
                   f"since {holder.get('started', '?')})") if holder else "another kvid process"
            raise OutputBusy(
                f"{self.out_dir} is being written by {who}; one kvid command writes a folder at a time: "
                "wait for it to finish (or stop it), or use another --out"
            ) from None
        info = {"host": socket.gethostname(), "pid": os.getpid(), "command": self.command,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
