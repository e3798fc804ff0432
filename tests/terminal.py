"""Run kvid as a person does: in a pseudo-terminal, as the terminal's foreground job.

CI's closed stdin hides what a terminal does to a program: a process of a background
process group (every Ray worker) that touches the terminal is stopped by the kernel. Here
the command is a session leader with the pty as its controlling terminal, like a shell's
foreground job, so those stops happen exactly as for a user.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Terminal:
    """A command running in a pty; ``screen`` is everything it printed so far."""

    def __init__(self, args: list[str], cwd: str | os.PathLike | None = None, env: dict | None = None):
        master, slave = pty.openpty()
        # A person's terminal has a size (a bare pty is 0x0, where progress bars draw nothing).
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))

        def controlling_tty() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env or kvid_env(),
            preexec_fn=controlling_tty, close_fds=True,
        )
        os.close(slave)
        self.master = master
        self.raw = b""

    @property
    def screen(self) -> str:
        return self.raw.decode("utf-8", "replace")

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the other side closed
                data = b""
            self.raw += data

    def wait_for(self, text: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while text not in self.screen and time.monotonic() < end and self.proc.poll() is None:
            self._read(0.2)
        self._read(0.1)
        return text in self.screen

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")  # the terminal turns it into SIGINT for the foreground group

    def finish(self, timeout: float) -> int:
        """Exit code, or raises TimeoutError (the command is killed) with the screen."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self._read(0.2)
            if self.proc.poll() is not None:
                for _ in range(20):
                    before = len(self.raw)
                    self._read(0.05)
                    if len(self.raw) == before:
                        break
                os.close(self.master)
                return self.proc.returncode
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        os.close(self.master)
        raise TimeoutError(f"still running after {timeout:.0f} s in a terminal; screen:\n{self.screen[-3000:]}")


def kvid_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("TQDM_DISABLE", None)  # a person sees the bar
    return env


def kvid(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *args]
