"""`kvid curate`: one run from raw videos to committed shards.

The driver owns the output folder (an exclusive lock), lists the inputs into the work list,
runs the graph (``pipelines/graph.py``) and is the only writer: each row is admitted once
(``UnitLedger``) and written into atomic parts (``ShardWriter``). Ctrl-C or SIGTERM commits
the rows already received before it exits; a re-run resumes from what is committed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from typing import Any

from curate import atomic, layout, output_lock, resume, shards
from curate.ffmpeg import require_binaries
from curate.manifest import dataset_counts, now, read_manifest, tool_versions, write_manifest
from curate.version import KVID_VERSION
from pipelines import rows as R
from pipelines.adapter import stage_times
from pipelines.config import ConfigError, CurateConfig
from pipelines.graph import build_dataset, curate_stages
from pipelines.inputs import InputError, check_inputs, write_todo
from pipelines.preflight import check_resume, preflight
from pipelines.progress import CurateProgress
from pipelines.ray_runtime import current_cluster, ray_session

TIMINGS = "stage_times.jsonl"  # in OUT/.kvid: each stage call's time (pipelines.adapter)

__all__ = ["run_curate", "format_summary", "InputError", "CurateInterrupted"]


class CurateInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: what had arrived is committed; ``summary`` says how much."""

    def __init__(self, summary: dict[str, Any]):
        super().__init__("interrupted")
        self.summary = summary


def check_output_folder(out: str) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {out} is a file, not a folder: pass a new or existing folder")
    # Walk up to the first folder that exists: a file on the way cannot hold the output.
    parent = os.path.dirname(os.path.abspath(out))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise ConfigError(f"--out {out}: {parent} is a file, not a folder")


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a scheduler's stop, `kill`) ends the run like Ctrl-C: finished rows are kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_ignored():
    """A final commit is short and must not be cut by a second Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _disk_full(e: BaseException, out: str) -> atomic.OutputFull | None:
    """The full-disk error behind ``e`` (raised here or in a Ray worker), if there is one."""
    seen = 0
    while e is not None and seen < 20:
        if getattr(e, "cause", None) is not None:  # a RayTaskError: look at the worker's exception
            e, seen = e.cause, seen + 1
            continue
        if isinstance(e, atomic.OutputFull):
            return atomic.OutputFull(e.errno, e.args[-1])
        if atomic.is_disk_full(e):
            return atomic.disk_full_error(out)
        e = e.__cause__ or e.__context__
        seen += 1
    return None


def run_curate(cfg: CurateConfig, show_progress: bool | None = None) -> dict[str, Any]:
    """Run the pipeline; returns the summary (also written into the manifest).

    Raises ConfigError for a bad setting, OutputBusy when another kvid writes ``cfg.out``,
    OutputFull on a full disk (committed parts intact) and CurateInterrupted on Ctrl-C or
    SIGTERM (after committing what had arrived)."""
    if not cfg.out:
        raise ConfigError("no output folder: pass --out DIR")
    if not cfg.inputs:
        raise ConfigError("no inputs: pass video files, folders or globs")
    require_binaries()
    check_inputs(cfg.inputs)
    out = cfg.out
    check_output_folder(out)
    manifest = read_manifest(out) if os.path.isdir(out) else None
    check_resume(cfg, manifest)
    preflight(cfg)  # every missing model at once, before anything is written

    os.makedirs(out, exist_ok=True)
    with output_lock.OutputLock(out, "kvid curate"):
        return _run_locked(cfg, manifest, show_progress)


def _run_locked(cfg: CurateConfig, manifest: dict | None, show_progress: bool | None) -> dict[str, Any]:
    out = cfg.out
    t0 = time.monotonic()
    started = now()
    state = resume.resume_state(out)
    todo_file = os.path.join(out, layout.WORK_DIR, "todo.jsonl")
    n_todo, n_done = write_todo(todo_file, cfg.inputs, state)
    if n_todo == 0 and n_done == 0:
        raise InputError(
            "the inputs hold no video files (looked for "
            "extensions like .mp4 .mkv .mov .webm; see `kvid curate --help`): " + ", ".join(cfg.inputs)
        )
    manifest = manifest or {"created": now(), "runs": []}
    manifest.update({"status": "running", "kvid_version": KVID_VERSION, "config": cfg.model_dump(), "versions": tool_versions()})
    layout.ensure_layout(out)
    write_manifest(out, manifest)

    settings = cfg.settings()
    writer = shards.ShardWriter(out, settings.shards, first_seq=state.next_seq)
    ledger = resume.UnitLedger(state.done_units, state.partial_units)
    progress = CurateProgress(todo_file, n_todo, enabled=show_progress is not False)
    status = "failed"
    ray_start_s = 0.0
    timings = os.path.join(out, layout.WORK_DIR, TIMINGS)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(timings)  # this run's, not an earlier one's
    try:
        if n_todo:
            t_ray = time.monotonic()
            # Ray's core installs its own SIGTERM handler (it aborts): ours goes in after it.
            with ray_session(cfg, os.path.join(out, layout.WORK_DIR)), _sigterm_as_interrupt():
                ray_start_s = time.monotonic() - t_ray
                stages = curate_stages(settings, out)
                _write_all(build_dataset(stages, todo_file, current_cluster(), timings), writer, ledger, state, progress)
        writer.close()
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        with _signals_ignored():
            writer.close()  # the rows that arrived are finished work: commit them
            summary = _finish(out, manifest, started, t0, status, writer, n_todo, n_done, ray_start_s, timings)
        raise CurateInterrupted(summary) from None
    except Exception as e:
        full = _disk_full(e, out)
        if full is not None:
            writer.abort()  # the open part cannot be written: remove it, keep the space
            raise full from e
        with contextlib.suppress(OSError):
            writer.close()  # any other failure: the rows that arrived are finished work, commit them
        raise
    finally:
        progress.close()
        if status != "interrupted":
            with contextlib.suppress(OSError):  # a full disk must not hide the first error
                summary = _finish(out, manifest, started, t0, status, writer, n_todo, n_done, ray_start_s, timings)
    return summary


def _write_all(ds, writer: shards.ShardWriter, ledger: resume.UnitLedger, state: resume.ResumeState,
               progress: CurateProgress) -> None:
    """Drain the dataset into the writer, each row once."""
    units_done = Counter(u.rsplit(":", 1)[0] for units in state.done_units_by_source.values() for u in units)
    progress.start()
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for row in batch.to_pylist():
            rec = R.row_record(row)
            admitted, unit_done = ledger.admit(rec)
            if admitted:
                writer.add(rec, row["mp4"])
            source_done = False
            if unit_done:
                units_done[rec.source_id] += 1
                if units_done[rec.source_id] == rec.source_units:
                    del units_done[rec.source_id]
                    source_done = True
            progress.row(rec, admitted, source_done)


def _finish(out, manifest, started, t0, status, writer, n_run, n_skipped, ray_start_s=0.0, timings="") -> dict[str, Any]:
    wall = time.monotonic() - t0
    counts = dataset_counts(out)
    run = {
        "started": started,
        "finished": now(),
        "status": status,
        "wall_s": round(wall, 2),
        "ray_start_s": round(ray_start_s, 2),
        "sources_run": n_run,
        "sources_skipped": n_skipped,
        "clips_written": writer.written["clips"],
        "rejects_written": writer.written["rejects"],
        # Where the time went: per stage, its workers' and their tools' (ffmpeg) CPU seconds.
        "stages": stage_times(timings) if timings else {},
    }
    runs = [r for r in manifest.get("runs", []) if r.get("started") != started] + [run]
    manifest.update({"status": status, "counts": counts, "runs": runs, "updated": now()})
    write_manifest(out, manifest)
    return {**run, "out": out, "counts": counts}


def format_summary(summary: dict[str, Any]) -> str:
    c = summary["counts"]
    lines = [
        f"kvid curate: {summary['status']} in {summary['wall_s']:.1f} s -> {summary['out']}",
        f"  this run: {summary['sources_run']} sources to do, {summary['sources_skipped']} already done; "
        f"{summary['clips_written']} clips, {summary['rejects_written']} rejects written",
        f"  dataset:  {c['inputs']} inputs -> {c['clips']} clips + {c['rejects']} rejects",
        f"  hours in: {c['hours_in']:.3f}   hours out: {c['hours_out']:.3f}",
    ]
    if c["rejects_by_reason"]:
        lines.append("  rejects by reason: " + ", ".join(f"{k} {v}" for k, v in c["rejects_by_reason"].items()))
        cleaned = [f"{k} {c['rejects_by_reason'][k]} ({why})" for k, why in CLEANED.items() if k in c["rejects_by_reason"]]
        if cleaned:
            lines.append("  removed before encoding: " + ", ".join(cleaned) + "; kvid inspect OUT shows them")
    if summary.get("stages"):
        lines.append("  CPU seconds by stage: " + ", ".join(
            f"{name} {t['cpu_s'] + t['tool_cpu_s']:.1f}" for name, t in summary["stages"].items()))
    return "\n".join(lines)


# What the cleaning judgements of the analysis remove, said in the run summary.
CLEANED = {
    "transition": "fade/dissolve frames, TransNetV2",
    "duplicate": "near copies of kept clips",
    "text": "overlaid titles/subtitles or text-heavy",
    "static": "stills, frozen video",
    "flat": "no picture",
}
