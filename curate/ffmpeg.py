"""Running ffmpeg and ffprobe: argument lists only, never a shell, always a timeout."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import IO

FFMPEG = os.environ.get("KVID_FFMPEG", "ffmpeg")
FFPROBE = os.environ.get("KVID_FFPROBE", "ffprobe")


class FFmpegError(RuntimeError):
    """ffmpeg or ffprobe failed; ``stderr`` holds the tail of its log."""

    def __init__(self, message: str, stderr: str = "", timed_out: bool = False):
        super().__init__(message)
        self.stderr = stderr
        self.timed_out = timed_out


def require_binaries() -> None:
    """Fail early, with the fix, when ffmpeg or ffprobe is not installed."""
    missing = [b for b in (FFMPEG, FFPROBE) if shutil.which(b) is None]
    if missing:
        raise RuntimeError(
            f"{' and '.join(missing)} not found on PATH. Install ffmpeg "
            "(Debian/Ubuntu: `sudo apt-get install -y ffmpeg`, or run ./install.sh), "
            "or point KVID_FFMPEG / KVID_FFPROBE at the binaries."
        )


def detach_terminal_input() -> None:
    """Point this process's stdin at /dev/null when it is a terminal.

    Worker processes (Ray's, ours) sit in a background process group of the user's
    terminal. A child that touches that terminal (ffmpeg sets its modes whenever stdin is a
    tty, unless -nostdin) is stopped by the kernel with SIGTTOU/SIGTTIN, and the run waits
    on it forever. Workers never read stdin, so they drop it for good."""
    if _stdin_is_terminal():
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)


@contextlib.contextmanager
def terminal_input_detached():
    """``detach_terminal_input`` for the duration of a block, for processes that keep their
    terminal (the driver): what is started inside inherits /dev/null as stdin."""
    if not _stdin_is_terminal():
        yield
        return
    saved = os.dup(0)
    try:
        detach_terminal_input()
        yield
    finally:
        os.dup2(saved, 0)
        os.close(saved)


def _stdin_is_terminal() -> bool:
    try:
        return os.isatty(0)
    except OSError:
        return False


def safe_input(path: str) -> str:
    """A path ffmpeg reads as a plain file even when it starts with '-' or has a ':'."""
    if "://" in path:
        return path
    return "file:" + os.path.abspath(path)


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def popen(cmd: Sequence[str], **kwargs) -> subprocess.Popen:
    """Start a tool in its own process group, so a timeout can end it and anything it
    started (a hung decoder must not keep our pipes open)."""
    return subprocess.Popen(list(cmd), start_new_session=True, **kwargs)


def kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


class ToolPipe:
    """A running ffmpeg whose stdout the caller reads: its stderr is collected in the
    background (so it never blocks on a full pipe), a deadline kills its process group, and
    leaving the block always ends it. ``finish()`` waits and returns (exit code, stderr)."""

    def __init__(self, cmd: Sequence[str], timeout: float | None, pass_fds: tuple[int, ...] = ()):
        self.proc = popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=pass_fds)
        assert self.proc.stdout is not None and self.proc.stderr is not None  # both are pipes
        self.stdout: IO[bytes] = self.proc.stdout
        self._stderr_pipe: IO[bytes] = self.proc.stderr
        self.timeout = timeout
        self.timed_out = threading.Event()
        self._stderr: list[bytes] = []
        self._err_reader = threading.Thread(target=lambda: self._stderr.append(self._stderr_pipe.read()), daemon=True)
        self._err_reader.start()
        self._timer = None
        if timeout:
            self._timer = threading.Timer(timeout, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _expire(self) -> None:
        self.timed_out.set()
        kill(self.proc)

    def finish(self) -> tuple[int, str]:
        code = self.proc.wait()
        self._err_reader.join()
        return code, b"".join(self._stderr).decode("utf-8", "replace").strip()

    def __enter__(self) -> ToolPipe:
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.proc.poll() is None:
            kill(self.proc)
            self.proc.wait()
        self.stdout.close()
        self._stderr_pipe.close()


def _communicate(proc: subprocess.Popen, timeout: float | None, input_bytes: bytes | None, what: str) -> tuple[bytes, bytes]:
    """(stdout, stderr) of a tool started with ``popen``; a deadline ends it and all it started."""
    try:
        return proc.communicate(input_bytes, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        kill(proc)
        proc.communicate()
        raise FFmpegError(f"{what} timed out after {timeout:.0f} s", timed_out=True) from e
    except BaseException:
        kill(proc)
        proc.wait()
        raise


def _run(cmd: Sequence[str], timeout: float | None, input_bytes: bytes | None, what: str) -> tuple[int, bytes, bytes]:
    stdin = subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL
    proc = popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = _communicate(proc, timeout, input_bytes, what)
    return proc.returncode, out, err


def run_ffmpeg(args: Sequence[str], timeout: float | None, input_bytes: bytes | None = None) -> bytes:
    """Run ffmpeg with ``args`` (no leading 'ffmpeg'); return stdout. Raises FFmpegError."""
    cmd = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", *args]
    code, out, err_bytes = _run(cmd, timeout, input_bytes, "ffmpeg")
    if code != 0:
        err = err_bytes.decode("utf-8", "replace")
        raise FFmpegError(f"ffmpeg exited with {code}: {_tail(err, 3)}", stderr=err)
    return out


PIPE_OUTPUT = "kvid-pipe:{}"  # in run_ffmpeg's args: the write end of its i-th output pipe


def run_ffmpeg_to_pipes(args: Sequence[str], timeout: float | None, readers: Sequence[Callable[[IO[bytes]], None]]) -> None:
    """``run_ffmpeg`` for a command that also writes raw streams to pipes: ``args`` name the
    i-th as ``PIPE_OUTPUT.format(i)`` and ``readers[i]`` drains it, in a thread of its own (a
    full pipe would stall ffmpeg). Raises FFmpegError; a reader's exception is raised too."""
    pipes = [os.pipe() for _ in readers]
    names = {PIPE_OUTPUT.format(i): f"pipe:{w}" for i, (_, w) in enumerate(pipes)}
    cmd = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", *(names.get(a, a) for a in args)]
    errors: list[BaseException] = []

    def drain(i: int, r: int) -> None:
        with os.fdopen(r, "rb") as f:
            try:
                readers[i](f)
            except BaseException as e:  # noqa: BLE001 - handed to the caller below
                errors.append(e)
            f.read()  # whatever is left: ffmpeg must never block on this pipe

    try:
        proc = popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                     pass_fds=tuple(w for _, w in pipes))
    except BaseException:
        for r, _ in pipes:
            os.close(r)
        raise
    finally:
        for _, w in pipes:
            os.close(w)
    threads = [threading.Thread(target=drain, args=(i, r), daemon=True) for i, (r, _) in enumerate(pipes)]
    for t in threads:
        t.start()
    try:
        _, err_bytes = _communicate(proc, timeout, None, "ffmpeg")
    finally:
        for t in threads:
            t.join()
    if proc.returncode != 0:
        err = err_bytes.decode("utf-8", "replace")
        raise FFmpegError(f"ffmpeg exited with {proc.returncode}: {_tail(err, 3)}", stderr=err)
    if errors:
        raise errors[0]


def ffprobe_json(path: str, args: Sequence[str], timeout: float | None = 60) -> dict:
    cmd = [FFPROBE, "-v", "error", "-of", "json", *args, safe_input(path)]
    code, stdout, err_bytes = _run(cmd, timeout, None, "ffprobe")
    err = err_bytes.decode("utf-8", "replace")
    if code != 0:
        raise FFmpegError(f"ffprobe exited with {code}: {_tail(err, 3)}", stderr=err)
    try:
        return json.loads(stdout or b"{}")
    except json.JSONDecodeError as e:
        raise FFmpegError(f"ffprobe printed invalid json: {e}", stderr=err) from e
