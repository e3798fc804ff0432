"""How records travel between Ray operators.

A row is ``{"record": json, "unit": json, "mp4": bytes | None, "extra": bytes | None}``:
the record as JSON keeps Arrow from guessing column types block by block (a column that
is all null in one block and float in the next), the video bytes ride beside it untouched,
and ``extra`` carries what one stage hands the next that is not part of the record (e.g.
sampled caption frames from the CPU prep stage to the GPU actors), pickled: it only ever
travels between our own operators.
"""

from __future__ import annotations

import base64
import json
import pickle
from dataclasses import asdict
from typing import Any

import pyarrow as pa

from curate.probe import VideoInfo
from curate.schema import ClipRecord
from curate.stages import WorkUnit


def _json_default(value: Any) -> Any:
    # Stages may hand back numpy scalars or arrays (scores, per-pair lists).
    if isinstance(value, bytes):  # the signature blob; ClipRecord decodes it again
        return base64.b64encode(value).decode("ascii")
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _dumps(obj: dict) -> str:
    return json.dumps(obj, default=_json_default)


def record_row(record: ClipRecord, mp4: bytes | None = None) -> dict[str, Any]:
    return {"record": _dumps(record.to_row()), "unit": "", "mp4": mp4, "extra": None}


def unit_row(unit: WorkUnit, record: ClipRecord | None = None) -> dict[str, Any]:
    """A unit of work to analyse, or (with ``record``) one of its scenes to transcode."""
    return {"record": _dumps(record.to_row()) if record else "", "unit": json.dumps(asdict(unit)), "mp4": None, "extra": None}


def row_unit(row: dict[str, Any]) -> WorkUnit | None:
    if not row.get("unit"):
        return None
    data = json.loads(row["unit"])
    data["info"] = VideoInfo(**data["info"])
    return WorkUnit(**data)


def row_record(row: dict[str, Any]) -> ClipRecord:
    return ClipRecord.from_row(json.loads(row["record"]))


_FIELDS = set(ClipRecord.__dataclass_fields__)


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
        ok = d.get("status") == "ok"
        mp4s.append(d.get("mp4") if ok else None)
        records.append(_dumps({k: v for k, v in d.items() if k in _FIELDS}))
        extra = {k: v for k, v in d.items() if k not in _FIELDS and k != "mp4"}
        extras.append(pickle.dumps(extra) if ok and extra else None)
    return {"record": records, "unit": [""] * len(records), "mp4": mp4s, "extra": extras}
