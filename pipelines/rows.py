"""How stage rows travel between Ray operators.

A Ray row is ``{"record": json, "mp4": bytes | None, "extra": bytes | None}``: the record
as JSON keeps Arrow from guessing column types block by block (a column that is all null
in one block and float in the next), the video bytes ride beside it untouched, and
``extra`` carries what one stage hands the next that is not part of the record (the work
unit a scene belongs to, sampled caption frames), pickled: it only ever travels between
our own operators. A reject drops its extras: nothing downstream works on it.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import pyarrow as pa

from curate.schema import STATUS_REJECTED, ClipRecord

_FIELDS = set(ClipRecord.__dataclass_fields__)


def _json_default(value: Any) -> Any:
    # Stages may hand back numpy scalars or arrays (scores, per-pair lists).
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _dumps(obj: dict) -> str:
    return json.dumps(obj, default=_json_default)


def record_row(record: ClipRecord, mp4: bytes | None = None) -> dict[str, Any]:
    return {"record": _dumps(record.to_row()), "mp4": mp4, "extra": None}


def row_record(row: dict[str, Any]) -> ClipRecord:
    return ClipRecord.from_row(json.loads(row["record"]))


def batch_to_dicts(batch: pa.Table) -> list[dict[str, Any]]:
    """Arrow batch of rows -> stage rows: schema columns, "mp4", and any extra keys."""
    out = []
    for row in batch.to_pylist():
        d = json.loads(row["record"])
        d["mp4"] = row["mp4"]
        if row.get("extra"):
            d.update(pickle.loads(row["extra"]))
        out.append(d)
    return out


def dicts_to_batch(rows: list[dict[str, Any]]) -> dict[str, list]:
    records, mp4s, extras = [], [], []
    for d in rows:
        rejected = d.get("status") == STATUS_REJECTED
        mp4s.append(None if rejected else d.get("mp4"))
        records.append(_dumps({k: v for k, v in d.items() if k in _FIELDS}))
        extra = {k: v for k, v in d.items() if k not in _FIELDS and k != "mp4"}
        extras.append(pickle.dumps(extra) if extra and not rejected else None)
    return {"record": records, "mp4": mp4s, "extra": extras}


def todo_to_batch(batch: pa.Table) -> dict[str, list]:
    """Lines of OUT/.kvid/todo.jsonl (read as text) -> rows for the plan stage."""
    return dicts_to_batch([{"todo": json.loads(line)} for line in batch.column("text").to_pylist()])
