"""Shards: the parts of an output folder, written atomically, and read back.

A part is committed when its index file exists: the tar and the rejects file are renamed
into place first, the index last. A tar without its index is an orphan from a killed run
and is removed on resume (curate/resume.py). The folder's layout: curate/layout.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from curate import schema
from curate.atomic import atomic_write_table, disk_full_error, is_disk_full
from curate.layout import INDEX, REJECTS, SHARDS, ensure_layout, part_files, part_name
from curate.schema import ClipRecord, records_to_table
from curate.settings import setting

_TAR_MTIME = 0  # fixed member mtime: identical inputs give identical tars


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
    tables = [_read_part_file(p, columns) for _, p in sorted(part_files(folder, "parquet").items())]
    if not tables:
        sch = schema.CLIP_SCHEMA if columns is None else pa.schema([schema.CLIP_SCHEMA.field(c) for c in columns])
        return sch.empty_table()
    return pa.concat_tables(tables, promote_options="default")


def read_index(out_dir: str, columns: list[str] | None = None) -> pa.Table:
    return _read_parts(os.path.join(out_dir, INDEX), columns)


def read_rejects(out_dir: str, columns: list[str] | None = None) -> pa.Table:
    return _read_parts(os.path.join(out_dir, REJECTS), columns)


def read_part(out_dir: str, name: str, folder: str) -> list[ClipRecord]:
    path = os.path.join(out_dir, folder, name + ".parquet")
    if not os.path.exists(path):
        return []
    return schema.table_to_records(pq.read_table(path))


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
