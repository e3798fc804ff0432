"""Files that appear whole or not at all, and what a full disk means for them."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq


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
