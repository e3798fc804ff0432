"""Live progress of a run, in seconds of source video.

The total is learned while the run goes: a background thread reads the durations of the
local sources still to do (one quick ffprobe each, no decode), and until it has seen them
all the rest are counted at the mean so far. Every row the driver receives advances the bar
by the source seconds it covers (a scene's length, or a whole source for a source-level
reject), so a single long video moves as its scenes finish. In a terminal it is a bar with
rate and ETA; in a log (no terminal) a line a minute; ``-q`` silences both.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time

from curate import remote
from curate.ffmpeg import FFmpegError, ffprobe_json
from curate.schema import ClipRecord
from pipelines.inputs import iter_todo

log = logging.getLogger("kvid")

LOG_EVERY_S = 60.0
# The rate is seconds of video per second of run, never inverted (tqdm's default shows
# "48 s/s" for a slow run, meaning seconds per second of video).
_WITH_TOTAL = ("{desc} {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of video "
               "[{elapsed}<{remaining}, {rate_noinv_fmt}]{postfix}")
_NO_TOTAL = "{desc} {n:.0f} s of video [{elapsed}, {rate_noinv_fmt}]{postfix}"


class SourceSeconds:
    """Seconds of video in the sources of a todo file, summed in a background thread."""

    def __init__(self, todo_file: str, n_sources: int):
        self.n_sources = n_sources
        self.seen = 0
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, args=(todo_file,), daemon=True, name="kvid-durations")
        self._stop = threading.Event()
        self._thread.start()

    def _run(self, todo_file: str) -> None:
        for todo in iter_todo(todo_file):
            if self._stop.is_set():
                return
            src = todo["source"]
            if remote.is_uri(src):
                continue  # no download just to count: the mean stands in for it
            try:
                fmt = ffprobe_json(src, ["-show_entries", "format=duration"], timeout=10).get("format", {})
                self.seconds += float(fmt.get("duration") or 0.0)
                self.seen += 1
            except (FFmpegError, OSError, ValueError):
                self.seen += 1  # unreadable: it will be a reject that covers no time

    def total(self) -> float | None:
        if self.seen == 0:
            return None
        return self.seconds + (self.n_sources - self.seen) * self.seconds / self.seen

    def wait_for_first(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while self.seen == 0 and self._thread.is_alive() and time.monotonic() < end:
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()


class CurateProgress:
    """What the driver shows while rows arrive."""

    def __init__(self, todo_file: str, n_sources: int, enabled: bool):
        self.enabled = enabled and n_sources > 0
        self.n_sources = n_sources
        self.sources_done = self.clips = self.rejects = 0
        self.seconds = 0.0
        self.t0 = time.monotonic()
        self._last_log = self.t0
        self._bar = None
        self._durations = SourceSeconds(todo_file, n_sources) if self.enabled else None
        self._tty = sys.stderr.isatty()

    def start(self) -> None:
        """Called when the graph starts (after Ray's start-up)."""
        if not (self.enabled and self._tty):
            return
        from tqdm import tqdm

        self._durations.wait_for_first(2.0)
        # A terminal nobody sized (a bare pty) reports 0x0: tqdm would draw nothing there.
        size = os.get_terminal_size(sys.stderr.fileno())
        fallback = shutil.get_terminal_size()
        shape = {"dynamic_ncols": True} if size.columns > 0 and size.lines > 0 else {
            "ncols": fallback.columns, "nrows": fallback.lines}
        self._bar = tqdm(total=None, unit="s", desc="curate", bar_format=_NO_TOTAL, **shape)
        self._refresh()

    def row(self, rec: ClipRecord, admitted: bool, source_done: bool) -> None:
        if admitted:
            self.seconds += rec.duration_s or 0.0
            if rec.ok:
                self.clips += 1
            else:
                self.rejects += 1
        if source_done:
            self.sources_done += 1
        if self._bar is not None:
            self._bar.update((rec.duration_s or 0.0) if admitted else 0.0)
            self._refresh()
        elif self.enabled and time.monotonic() - self._last_log >= LOG_EVERY_S:
            self._last_log = time.monotonic()
            log.info("curate: %s", self.line())

    def _refresh(self) -> None:
        total = self._durations.total()
        if total is not None:
            self._bar.total = max(total, self._bar.n)
            self._bar.bar_format = _WITH_TOTAL
        self._bar.set_postfix_str(
            f"{self.sources_done}/{self.n_sources} videos, {self.clips} clips, {self.rejects} rejects", refresh=True
        )

    def line(self) -> str:
        total = self._durations.total() if self._durations else None
        elapsed = time.monotonic() - self.t0
        rate = self.seconds / elapsed if elapsed > 0 else 0.0
        eta = f", ETA {((total - self.seconds) / rate) / 60:.0f} min" if total and rate > 0 else ""
        return (f"{self.seconds:.0f}/{total or 0:.0f} s of video ({rate:.1f} s/s{eta}); "
                f"{self.sources_done}/{self.n_sources} videos, {self.clips} clips, {self.rejects} rejects")

    def close(self) -> None:
        if self._durations is not None:
            self._durations.stop()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
