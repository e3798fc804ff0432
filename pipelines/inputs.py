"""What a run reads: files, folders, globs and URIs, listed lazily into the work list."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator

from curate import remote, resume

VIDEO_EXTENSIONS = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
    ".flv", ".wmv", ".3gp", ".ogv", ".gif", ".mxf", ".vob", ".h264", ".264", ".h265", ".hevc", ".y4m",
}


class InputError(ValueError):
    """Inputs that match nothing: the message names them."""


def _input_exists(item: str) -> bool:
    if remote.is_uri(item):
        try:
            return remote.uri_exists(item)
        except remote.RemoteError as e:
            raise InputError(str(e)) from e
    return os.path.exists(item) or bool(glob.has_magic(item) and glob.glob(item, recursive=True))


def check_inputs(inputs: list[str]) -> None:
    missing = [i for i in inputs if not _input_exists(i)]
    if missing:
        raise InputError("no such file, folder or glob match: " + ", ".join(repr(m) for m in missing))


def iter_inputs(inputs: list[str]) -> Iterator[str]:
    """Files as given, folders searched recursively for video extensions (sorted per folder),
    globs expanded, for paths and URIs alike; absolute paths, streamed so a million files
    never sit in a list. A file name that is not valid UTF-8 comes through as Python's
    surrogate-escaped str (lossless; the schema stores its raw bytes).
    Raises InputError up front naming what matched nothing."""
    check_inputs(inputs)
    for item in inputs:
        if remote.is_uri(item):
            try:
                yield from remote.iter_uri(item, VIDEO_EXTENSIONS)  # URIs stay URIs: every node reads them
            except OSError as e:
                raise InputError(f"cannot list {item}: {e}") from e
        elif os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    if not f.startswith(".") and os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS:
                        yield os.path.abspath(os.path.join(root, f))
        elif os.path.exists(item):
            yield os.path.abspath(item)
        else:
            for match in sorted(glob.iglob(item, recursive=True)):
                if os.path.isfile(match):
                    yield os.path.abspath(match)


def expand_inputs(inputs: list[str]) -> list[str]:
    """``iter_inputs`` as a sorted list without duplicates (for small input sets)."""
    return sorted(set(iter_inputs(inputs)))


def write_todo(path: str, inputs: list[str], state: resume.ResumeState) -> tuple[int, int]:
    """Stream the sources still to do into a JSON-lines file Ray reads back lazily.
    Returns (to do, already done). A source listed twice is done once.

    Lines are ASCII JSON (a non-UTF-8 name travels as its surrogate escapes) and are read
    back as text, then parsed by our operator: Arrow's JSON reader would refuse them."""
    todo = done = 0
    recent: dict[str, None] = {}  # bounded memory: catches a file named twice in a row of args
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="ascii") as f:
        for src in iter_inputs(inputs):
            if src in recent:
                continue
            recent[src] = None
            if len(recent) > 10_000:
                recent.pop(next(iter(recent)))
            if src in state.done_sources:
                done += 1
                continue
            units = sorted(state.done_units_by_source.get(src, ()))
            f.write(json.dumps({"source": src, "done_units": units}) + "\n")
            todo += 1
    os.replace(tmp, path)
    return todo, done


def iter_todo(path: str) -> Iterator[dict]:
    with open(path, encoding="ascii") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
