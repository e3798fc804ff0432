"""Sources behind a filesystem URI (s3://, gs://, https://, file://, ... through fsspec).

ffmpeg needs a seekable local file, and a source is read by several tasks (plan, one
analysis per chunk, one transcode per scene), possibly on several nodes. Each node therefore
keeps a cache of staged copies: a source is downloaded once per node, shared by the tasks
that run there, and evicted oldest-first when the cache outgrows its cap. A copy in use is
held with a shared lock and never evicted under a running ffmpeg.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from curate import ids
from curate.settings import setting

_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_PART = ".part"
_LOCK = ".lock"


def is_uri(source: str) -> bool:
    return bool(_URI.match(source))


def source_name(source: str) -> str:
    """How a source is named in records and ids: a URI as given, a path made absolute."""
    return source if is_uri(source) else os.path.abspath(source)


class RemoteError(OSError):
    """A URI that cannot be read: unknown scheme, missing filesystem package, no access."""


@dataclass(frozen=True)
class InputCache:
    """Where staged copies of URI sources live on each node, and how much space they may take."""

    dir: str | None = setting(None, "where each node keeps copies of URI sources (default: <system temp>/kvid-inputs)")
    gb: float = setting(50.0, "size cap of that cache per node, in GB; least recently used copies go first", gt=0)

    @property
    def path(self) -> str:
        return self.dir or os.path.join(tempfile.gettempdir(), "kvid-inputs")


def filesystem(uri: str):
    """(fsspec filesystem, path inside it) for a URI, with errors that name the fix."""
    try:
        import fsspec
        return fsspec.core.url_to_fs(uri)
    except ImportError as e:  # e.g. s3:// without s3fs
        raise RemoteError(f"cannot read {uri}: {e} (install the fsspec package for this scheme, e.g. s3fs, gcsfs)") from e
    except ValueError as e:  # unknown protocol
        raise RemoteError(f"cannot read {uri}: {e}") from e


def iter_uri(uri: str, extensions: frozenset[str] | set[str]) -> Iterator[str]:
    """The video files a URI names: itself, a folder's videos (recursively), or glob matches."""
    fs, path = filesystem(uri)
    # detail=True: the listing already says what is a file (no request per entry).
    if glob.has_magic(path):
        candidates = sorted(p for p, info in fs.glob(path, detail=True).items() if info.get("type") == "file")
    elif fs.isdir(path):
        candidates = sorted(
            p for p, info in fs.find(path, detail=True).items()
            if info.get("type") == "file" and not os.path.basename(p).startswith(".")
            and os.path.splitext(p)[1].lower() in extensions
        )
    elif fs.exists(path):
        candidates = [path]
    else:
        raise FileNotFoundError(errno.ENOENT, "no such file, folder or glob match", uri)
    for p in candidates:
        yield uri if p == path else fs.unstrip_protocol(p)


def uri_exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return bool(fs.glob(path)) if glob.has_magic(path) else fs.exists(path)


def _version(info: dict) -> str:
    # Object stores give an ETag or a generation, local and posix-like ones an mtime.
    for key in ("ETag", "etag", "generation", "version_id", "mtime", "LastModified", "last_modified", "updated", "created"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


@contextmanager
def staged(source: str, cache: InputCache) -> Iterator[str]:
    """A local path for ``source``: the path itself, or this node's staged copy of a URI.

    The copy is keyed by the URI and the object's size and version, so a changed object is
    staged again. It stays locked (shared) until the block ends."""
    if not is_uri(source):
        yield source
        return
    fs, path = filesystem(source)
    info = fs.info(path)  # FileNotFoundError for a missing object
    size = int(info.get("size") or 0)
    key = ids.short_hash(source, size, _version(info), length=24)
    folder = cache.path
    os.makedirs(folder, exist_ok=True)
    local = os.path.join(folder, key + os.path.splitext(path)[1].lower()[:8])
    with open(local + _LOCK, "a+b") as lock:
        downloaded = False
        while True:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (os.path.isfile(local) and os.path.getsize(local) == size):
                tmp = f"{local}{_PART}{os.getpid()}"
                try:
                    fs.get_file(path, tmp)
                    os.replace(tmp, local)
                    downloaded = True
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
            os.utime(local)  # recently used: evicted last
            # Downgrade: other tasks may read, eviction may not. flock converts by releasing
            # first, so an evictor can slip in between: then stage again.
            fcntl.flock(lock, fcntl.LOCK_SH)
            if os.path.isfile(local):
                break
        if downloaded:  # only a download grows the cache; a hit need not scan it
            evict(cache, keep=local)
        yield local


def evict(cache: InputCache, keep: str | None = None) -> list[str]:
    """Remove the least recently used unlocked copies until the cache fits its cap."""
    folder = cache.path
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    copies = []
    for name in names:
        p = os.path.join(folder, name)
        if name.endswith(_LOCK) or _PART in name:
            continue
        try:
            st = os.stat(p)
        except FileNotFoundError:
            continue
        copies.append((st.st_mtime, st.st_size, p))
    total = sum(size for _, size, _ in copies)
    limit = cache.gb * 1e9
    removed = []
    for _, size, p in sorted(copies):
        if total <= limit:
            break
        if p == keep:
            continue
        with open(p + _LOCK, "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # in use by another task on this node
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        total -= size
        removed.append(p)
    return removed
