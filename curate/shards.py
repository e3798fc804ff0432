"""Output layout of a run, written atomically and readable without kvid.

    OUT/shards/shard-000000.tar      WebDataset: <clip_id>.mp4, <clip_id>.json, <clip_id>.txt
    OUT/index/shard-000000.parquet   one row per clip in that tar (the clip schema)
    OUT/rejects/shard-000000.parquet one row per reject committed with that part
    OUT/manifest.json                config, versions, counts

A part is committed when its index file exists: the tar and the rejects file are renamed
into place first, the index last. Everything is written under a dot-name and renamed, and
readers (pyarrow, Ray, webdataset globs) skip dot-names, so nothing half-written is ever
visible. A tar without its index is an orphan from a killed run and is removed on resume.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import re
import socket
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from curate import schema
from curate.schema import ClipRecord, records_to_table
from curate.settings import setting

SHARDS, INDEX, REJECTS = "shards", "index", "rejects"
MANIFEST = "manifest.json"
NEXT = ".next"  # a new dataset version being built (recompute, recaption); hidden from readers
VERSIONS = "versions"  # earlier versions, kept after a new one is published
_SWAP = ".swap.json"  # journal of a publish in progress
_PART_RE = re.compile(r"^shard-(\d{6,})\.(tar|parquet)$")
_TAR_MTIME = 0  # fixed member mtime: identical inputs give identical tars


WORK_DIR = ".kvid"  # run bookkeeping inside OUT (hidden from readers)


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


def part_name(seq: int) -> str:
    return f"shard-{seq:06d}"


def _fsync_write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class OutputFull(OSError):
    """The output folder's disk (or quota) is full. Committed parts are intact."""


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(out_dir: str) -> OutputFull:
    return OutputFull(
        errno.ENOSPC,
        f"no space left on the device of {out_dir}: the part being written was removed and every "
        "committed part is intact; free some space, then re-run the same command to resume",
    )


def atomic_write_bytes(path: str, data: bytes) -> None:
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        _fsync_write(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # a failed write (a full disk) leaves nothing behind
        raise


def atomic_write_json(path: str, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_write_table(path: str, table: pa.Table) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    atomic_write_bytes(path, sink.getvalue())


def ensure_layout(out_dir: str) -> None:
    for sub in (SHARDS, INDEX, REJECTS):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)


def _parts(folder: str, ext: str) -> dict[int, str]:
    found = {}
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            m = _PART_RE.match(name)
            if m and m.group(2) == ext:
                found[int(m.group(1))] = os.path.join(folder, name)
    return found


def _read_part_file(path: str, columns: list[str] | None) -> pa.Table:
    """One part file; columns added to the schema after it was written come back null."""
    if columns is None:
        return pq.read_table(path)
    have = set(pq.read_schema(path).names)
    table = pq.read_table(path, columns=[c for c in columns if c in have])
    for c in columns:
        if c not in have:
            table = table.append_column(schema.CLIP_SCHEMA.field(c), pa.nulls(len(table), schema.CLIP_SCHEMA.field(c).type))
    return table.select(columns)


def _read_parts(folder: str, columns: list[str] | None = None) -> pa.Table:
    tables = [_read_part_file(p, columns) for _, p in sorted(_parts(folder, "parquet").items())]
    if not tables:
        sch = schema.CLIP_SCHEMA if columns is None else pa.schema([schema.CLIP_SCHEMA.field(c) for c in columns])
        return sch.empty_table()
    return pa.concat_tables(tables, promote_options="default")


def read_index(out_dir: str, columns: list[str] | None = None) -> pa.Table:
    return _read_parts(os.path.join(out_dir, INDEX), columns)


def read_rejects(out_dir: str, columns: list[str] | None = None) -> pa.Table:
    return _read_parts(os.path.join(out_dir, REJECTS), columns)


@dataclass
class ResumeState:
    """What a previous run into the same folder already committed."""

    next_seq: int = 0
    done_units: set[str] = field(default_factory=set)
    # Units with some rows committed: their committed clip ids (only these need dedupe).
    partial_units: dict[str, set[str]] = field(default_factory=dict)
    done_sources: set[str] = field(default_factory=set)  # source paths whose every unit is done
    done_units_by_source: dict[str, set[str]] = field(default_factory=dict)  # for partly done sources
    orphans_removed: int = 0


def remove_orphans(out_dir: str) -> int:
    """Delete tars of parts whose index never got written, and stale temp files."""
    index = _parts(os.path.join(out_dir, INDEX), "parquet")
    removed = 0
    for seq, path in _parts(os.path.join(out_dir, SHARDS), "tar").items():
        if seq not in index:
            os.unlink(path)
            removed += 1
    for sub in (SHARDS, INDEX, REJECTS):
        folder = os.path.join(out_dir, sub)
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name.startswith(".") and ".tmp" in name:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(folder, name))
    return removed


def resume_state(out_dir: str) -> ResumeState:
    recover_publish(out_dir)
    state = ResumeState(orphans_removed=remove_orphans(out_dir))
    seqs = [*_parts(os.path.join(out_dir, INDEX), "parquet"), *_parts(os.path.join(out_dir, REJECTS), "parquet")]
    state.next_seq = max(seqs) + 1 if seqs else 0
    cols = ["clip_id", "source", "source_bytes", "work_unit", "work_unit_rows", "source_units"]
    rows = pa.concat_tables(
        [read_index(out_dir, cols), read_rejects(out_dir, cols)], promote_options="default"
    ).to_pylist()
    ids_per_unit: dict[str, set[str]] = {}
    need: dict[str, int] = {}
    units_of_source: dict[str, set[str]] = {}
    source_units: dict[str, int] = {}
    for r in rows:
        ids_per_unit.setdefault(r["work_unit"], set()).add(r["clip_id"])
        need[r["work_unit"]] = r["work_unit_rows"]
        src = schema.source_path(r)  # as the input listing names it
        units_of_source.setdefault(src, set()).add(r["work_unit"])
        source_units[src] = r["source_units"]
    for unit, unit_ids in ids_per_unit.items():
        if len(unit_ids) >= need[unit]:
            state.done_units.add(unit)
        else:
            state.partial_units[unit] = unit_ids
    for src, units in units_of_source.items():
        done = units & state.done_units
        if len(done) >= (source_units[src] or 1):
            state.done_sources.add(src)
        else:
            state.done_units_by_source[src] = done
    return state


class UnitLedger:
    """Exactly-once accounting of rows by unit of work.

    A row is admitted once (Ray may run a task twice after a worker dies, and a resumed
    unit re-produces rows that were already committed). Ids are remembered only while
    their unit is open, so memory follows the work in flight, not the size of the output.
    """

    def __init__(self, done_units: set[str] | None = None, partial_units: dict[str, set[str]] | None = None):
        self.done_units = set(done_units or ())
        self.open: dict[str, set[str]] = {u: set(ids) for u, ids in (partial_units or {}).items()}

    def admit(self, record: ClipRecord) -> tuple[bool, bool]:
        """(write this row?, did it complete its unit?)"""
        unit = record.work_unit
        if unit in self.done_units:
            return False, False
        seen = self.open.setdefault(unit, set())
        if record.clip_id in seen:
            return False, False
        seen.add(record.clip_id)
        if len(seen) >= record.work_unit_rows:
            del self.open[unit]
            self.done_units.add(unit)
            return True, True
        return True, False


class PartWriter:
    """One part: a tar (when it has clips), its rejects file and its index file, committed
    together by ``commit()`` (tar and rejects renamed into place first, the index last)."""

    def __init__(self, out_dir: str, name: str):
        self.out_dir = out_dir
        self.name = name
        self.clips: list[ClipRecord] = []
        self.rejects: list[ClipRecord] = []
        self.bytes = 0
        self.opened = time.monotonic()
        self._tar: tarfile.TarFile | None = None
        self._tar_tmp = os.path.join(out_dir, SHARDS, f".{name}.tar.tmp")

    def _add_member(self, name: str, data: bytes) -> tuple[int, int]:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = _TAR_MTIME
        info.mode = 0o644
        tar = self._tar
        assert tar is not None  # opened by add() before the first member
        header = info.tobuf(tar.format, tar.encoding, tar.errors)
        offset = tar.offset + len(header)
        tar.addfile(info, io.BytesIO(data))
        return offset, len(data)

    def add(self, record: ClipRecord, mp4: bytes | None) -> None:
        if not record.ok:
            record.shard = record.shard_offset = record.shard_size = None
            self.rejects.append(record)
            return
        if mp4 is None:
            raise ValueError(f"clip {record.clip_id} is ok but has no video bytes")
        if self._tar is None:
            self._tar = tarfile.open(self._tar_tmp, "w", format=tarfile.GNU_FORMAT)
        record.shard = self.name + ".tar"
        record.shard_offset, record.shard_size = self._add_member(f"{record.clip_id}.mp4", mp4)
        self._add_member(f"{record.clip_id}.json", json.dumps(schema.shard_json(record), sort_keys=True).encode())
        self._add_member(f"{record.clip_id}.txt", (record.caption or "").encode("utf-8"))
        self.clips.append(record)
        self.bytes += len(mp4)

    @property
    def empty(self) -> bool:
        return not self.clips and not self.rejects

    def commit(self, always_index: bool = False) -> None:
        """``always_index`` writes an index file even for a part without clips, so a
        rewrite can tell a finished part from one never started. A commit that fails half
        way (a full disk) removes what it had placed: the part is either whole or absent."""
        placed: list[str] = []
        try:
            if self._tar is not None:
                self._tar.close()
                self._tar = None
                with open(self._tar_tmp, "rb+") as f:
                    os.fsync(f.fileno())
                placed.append(os.path.join(self.out_dir, SHARDS, self.name + ".tar"))
                os.replace(self._tar_tmp, placed[-1])
            if self.rejects:
                placed.append(os.path.join(self.out_dir, REJECTS, self.name + ".parquet"))
                atomic_write_table(placed[-1], records_to_table(self.rejects))
            if self.clips or always_index:
                atomic_write_table(os.path.join(self.out_dir, INDEX, self.name + ".parquet"), records_to_table(self.clips))
        except BaseException:
            for path in placed:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            self.abort()
            raise

    def abort(self) -> None:
        if self._tar is not None:
            with contextlib.suppress(OSError):  # closing flushes, which fails on a full disk
                self._tar.close()
            self._tar = None
        with contextlib.suppress(OSError):
            os.unlink(self._tar_tmp)


@dataclass(frozen=True)
class ShardParams:
    """When the writer closes a part (a tar with its index and rejects files) and commits it."""

    max_clips: int = setting(1000, "clips per tar shard", ge=1)
    max_mb: float = setting(1024.0, "video megabytes per tar shard", gt=0)
    # A SIGKILLed driver loses the open part: this bounds how much finished work that is.
    max_open_s: float = setting(600.0, "commit an open shard after this many seconds", gt=0)


class ShardWriter:
    """Rolls rows into parts and commits each atomically (see ``ShardParams`` for when).
    Deduplication is the caller's (see ``UnitLedger``)."""

    def __init__(self, out_dir: str, params: ShardParams = ShardParams(), first_seq: int = 0):
        ensure_layout(out_dir)
        self.out_dir = out_dir
        self.seq = first_seq
        self.params = params
        self.written: Counter = Counter()  # clips, rejects, parts, bytes
        self._part: PartWriter | None = None

    @property
    def pending_clips(self) -> int:
        return len(self._part.clips) if self._part else 0

    def add(self, record: ClipRecord, mp4: bytes | None = None) -> None:
        if self._part is None:
            self._part = PartWriter(self.out_dir, part_name(self.seq))
        try:
            self._part.add(record, mp4)
        except OSError as e:
            self._raise_disk_full(e)
        if self._should_flush(self._part):
            self.flush()

    def _raise_disk_full(self, e: OSError):
        """A full disk drops the open part (its temporary tar goes, so the space comes back)
        and says what to do; other errors pass through."""
        if not is_disk_full(e):
            raise e
        self.abort()
        raise disk_full_error(self.out_dir) from e

    def _should_flush(self, part: PartWriter) -> bool:
        p = self.params
        if len(part.clips) >= p.max_clips or part.bytes >= p.max_mb * 2**20 or len(part.rejects) >= p.max_clips:
            return True
        return time.monotonic() - part.opened >= p.max_open_s

    def flush(self) -> None:
        """Commit what is pending as one part."""
        part = self._part
        if part is None or part.empty:
            self._part = None
            return
        try:
            part.commit()
        except OSError as e:
            self._raise_disk_full(e)
        self._part = None
        self.written["clips"] += len(part.clips)
        self.written["rejects"] += len(part.rejects)
        self.written["bytes"] += part.bytes
        self.written["parts"] += 1
        self.seq += 1

    def close(self) -> None:
        self.flush()

    def abort(self) -> None:
        """Drop the open part (its rows were never committed)."""
        if self._part is not None:
            self._part.abort()
            self._part = None


def iter_shard(tar_path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (clip_id, {"mp4": ..., "json": ..., "txt": ...}) from one tar, in order."""
    with tarfile.open(tar_path, "r") as tar:
        key, group = None, {}
        for member in tar:
            if not member.isfile():
                continue
            stem, _, ext = member.name.rpartition(".")
            if key is not None and stem != key:
                yield key, group
                group = {}
            key = stem
            f = tar.extractfile(member)
            group[ext] = f.read() if f is not None else b""
        if key is not None:
            yield key, group


def read_clip_bytes(out_dir: str, record: dict | ClipRecord) -> bytes:
    """Random access to one clip's mp4 through the index's shard offset (no tar scan)."""
    r = record.to_row() if isinstance(record, ClipRecord) else record
    with open(os.path.join(out_dir, SHARDS, r["shard"]), "rb") as f:
        f.seek(r["shard_offset"])
        return f.read(r["shard_size"])


# --- dataset versions ----------------------------------------------------------------------
#
# A rewrite (new motion scores, new captions) builds a complete new version under OUT/.next/
# with the same part names, part by part (resumable), while OUT/ stays as it was. Publishing
# moves the current shards/index/rejects to OUT/versions/vNNN/ and .next's into place, with
# a journal so a publish interrupted between its renames is completed by the next kvid call.


def part_names(out_dir: str) -> list[str]:
    """Names of the committed parts (shard-NNNNNN), from index and rejects files."""
    seqs = set(_parts(os.path.join(out_dir, INDEX), "parquet")) | set(_parts(os.path.join(out_dir, REJECTS), "parquet"))
    return [part_name(s) for s in sorted(seqs)]


def read_part(out_dir: str, name: str, folder: str) -> list[ClipRecord]:
    path = os.path.join(out_dir, folder, name + ".parquet")
    if not os.path.exists(path):
        return []
    return schema.table_to_records(pq.read_table(path))


def next_version_dir(out_dir: str) -> str:
    return os.path.join(out_dir, NEXT)


def finished_parts(version_dir: str) -> set[str]:
    return {part_name(s) for s in _parts(os.path.join(version_dir, INDEX), "parquet")}


def _next_archive(out_dir: str) -> str:
    folder = os.path.join(out_dir, VERSIONS)
    taken = [int(n[1:]) for n in os.listdir(folder) if n.startswith("v") and n[1:].isdigit()] if os.path.isdir(folder) else []
    return os.path.join(VERSIONS, f"v{(max(taken) + 1) if taken else 1:03d}")


def recover_publish(out_dir: str) -> bool:
    """Finish a publish that was interrupted; True when there was one."""
    journal = os.path.join(out_dir, _SWAP)
    if not os.path.exists(journal):
        return False
    with open(journal, encoding="utf-8") as f:
        archive = os.path.join(out_dir, json.load(f)["archive"])
    nxt = next_version_dir(out_dir)
    os.makedirs(archive, exist_ok=True)
    for sub in (SHARDS, INDEX, REJECTS):
        cur, new, old = os.path.join(out_dir, sub), os.path.join(nxt, sub), os.path.join(archive, sub)
        if os.path.exists(new):
            if os.path.exists(cur) and not os.path.exists(old):
                os.rename(cur, old)
            if not os.path.exists(cur):
                os.rename(new, cur)
    import shutil

    shutil.rmtree(nxt, ignore_errors=True)
    os.unlink(journal)
    return True


def publish_next(out_dir: str) -> str:
    """Make OUT/.next the current version; returns where the old one went (OUT-relative)."""
    recover_publish(out_dir)
    archive = _next_archive(out_dir)
    atomic_write_json(os.path.join(out_dir, _SWAP), {"archive": archive})
    recover_publish(out_dir)
    return archive
