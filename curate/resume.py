"""Resuming into an output folder: what a previous run committed, and each row admitted once."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import pyarrow as pa

from curate import schema
from curate.layout import INDEX, REJECTS, SHARDS, part_files
from curate.schema import ClipRecord
from curate.shards import read_index, read_rejects
from curate.versions import recover_publish


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
    index = part_files(os.path.join(out_dir, INDEX), "parquet")
    removed = 0
    for seq, path in part_files(os.path.join(out_dir, SHARDS), "tar").items():
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
    seqs = [*part_files(os.path.join(out_dir, INDEX), "parquet"), *part_files(os.path.join(out_dir, REJECTS), "parquet")]
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
