"""Running ffmpeg and ffprobe: argument lists only, never a shell, always a timeout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Sequence

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


def safe_input(path: str) -> str:
    """A path ffmpeg reads as a plain file even when it starts with '-' or has a ':'."""
    if "://" in path:
        return path
    return "file:" + os.path.abspath(path)


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_ffmpeg(args: Sequence[str], timeout: float | None, input_bytes: bytes | None = None) -> bytes:
    """Run ffmpeg with ``args`` (no leading 'ffmpeg'); return stdout. Raises FFmpegError."""
    cmd = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", *args]
    try:
        proc = subprocess.run(
            cmd,
            input=input_bytes,
            stdin=None if input_bytes is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise FFmpegError(f"ffmpeg timed out after {timeout:.0f} s", timed_out=True) from e
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace")
        raise FFmpegError(f"ffmpeg exited with {proc.returncode}: {_tail(err, 3)}", stderr=err)
    return proc.stdout


def ffprobe_json(path: str, args: Sequence[str], timeout: float | None = 60) -> dict:
    cmd = [FFPROBE, "-v", "error", "-of", "json", *args, safe_input(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise FFmpegError(f"ffprobe timed out after {timeout:.0f} s", timed_out=True) from e
    err = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise FFmpegError(f"ffprobe exited with {proc.returncode}: {_tail(err, 3)}", stderr=err)
    try:
        return json.loads(proc.stdout or b"{}")
    except json.JSONDecodeError as e:
        raise FFmpegError(f"ffprobe printed invalid json: {e}", stderr=err) from e
