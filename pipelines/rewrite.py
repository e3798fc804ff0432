"""Rewrite an existing curated folder through a model stage (motion recompute, recaption).

No video is re-encoded: each part's clips are read from its tar, the stage updates their
records, and the part is written again (mp4 bytes copied, json/txt updated) into a new
dataset version under OUT/.next/. Parts finished there are skipped when a killed run is
started again; the current version stays readable and untouched until every part is done,
then the new version is published (the old one moves to OUT/versions/vNNN/).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from curate import atomic, layout, output_lock, resume, shards, versions
from curate.manifest import dataset_counts, now, read_manifest, write_manifest
from curate.stage import Cluster
from pipelines import rows as R
from pipelines.config import CurateConfig, build_config
from pipelines.preflight import require_kvid_folder
from pipelines.ray_runtime import current_cluster, ray_session

_REWRITE_INFO = "rewrite.json"


def read_part_op(row: dict[str, Any], out_dir: str) -> list[dict[str, Any]]:
    """All clips of one part with their video bytes (read straight from the tar)."""
    name = row["part"]
    clips = shards.read_part(out_dir, name, layout.INDEX)
    out = []
    for rec in clips:
        mp4 = shards.read_clip_bytes(out_dir, rec)
        out.append(R.record_row(rec, mp4))
    return out


def load_config(out_dir: str) -> CurateConfig:
    """The effective config the folder was curated with (from its manifest)."""
    require_kvid_folder(out_dir)
    manifest = read_manifest(out_dir) or {}
    known = CurateConfig.model_fields
    return CurateConfig(**{k: v for k, v in manifest.get("config", {}).items() if k in known})


def folder_config(out_dir: str, args, keys: tuple[str, ...], **forced) -> CurateConfig:
    """The folder's config with the command's options (those given) applied, validated like
    `kvid curate` flags."""
    cfg = load_config(out_dir)
    updates = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    return build_config(cfg.model_dump(), {**updates, **forced}, origin="command line")


def add_folder_flags(parser, prefix: str, keys: tuple[str, ...], required: tuple[str, ...] = ()) -> None:
    """The flags of a command that rewrites a curated folder: DIR, then one flag per config
    key, as ``--size`` and ``--motion-size`` (the `kvid curate` spelling) with the config's own
    help, then --ray-address and -q. Unset flags keep the folder's values."""
    parser.add_argument("dir", metavar="DIR", help="output folder of `kvid curate`")
    for key in keys:
        field = CurateConfig.model_fields[key]
        short, long = "--" + key.removeprefix(prefix).replace("_", "-"), "--" + key.replace("_", "-")
        default = "" if key in required else " (default: the folder's)"
        parser.add_argument(short, long, dest=key, metavar=key.upper(), required=key in required,
                            help=f"{field.description}{default}")
    parser.add_argument("--ray-address", dest="ray_address", help="Ray cluster address (default: a local Ray)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _prepare_next(out_dir: str, what: dict) -> str:
    """OUT/.next for this rewrite: reused when it holds the same rewrite, else started over."""
    nxt = versions.next_version_dir(out_dir)
    info_path = os.path.join(nxt, _REWRITE_INFO)
    if os.path.exists(info_path):
        with open(info_path, encoding="utf-8") as f:
            if json.load(f) != what:
                shutil.rmtree(nxt)
    layout.ensure_layout(nxt)
    if not os.path.exists(info_path):
        atomic.atomic_write_json(info_path, what)
    return nxt


def rewrite(out_dir: str, cfg: CurateConfig, kind: str, *args, **kwargs) -> dict[str, Any]:
    """``_rewrite`` while holding the folder (one kvid command writes a folder at a time)."""
    with output_lock.OutputLock(out_dir, f"kvid {kind}"):
        return _rewrite(out_dir, cfg, kind, *args, **kwargs)


def _rewrite(
    out_dir: str,
    cfg: CurateConfig,
    kind: str,
    settings: dict,
    add_stages: Callable[[Any, Cluster], Any],
    show_progress: bool | None = None,
    config_updates: dict | None = None,
) -> dict[str, Any]:
    """Run every part of ``out_dir`` through ``add_stages(dataset, cluster) -> dataset`` and publish
    the result as a new version. ``settings`` identify the rewrite (a killed run resumes
    only into the same settings); ``config_updates`` go into the manifest's config.
    Returns a summary."""
    t0 = time.monotonic()
    versions.recover_publish(out_dir)
    resume.remove_orphans(out_dir)
    what = {"kind": kind, "settings": settings, "source_parts": versions.part_names(out_dir)}
    nxt = _prepare_next(out_dir, what)
    resume.remove_orphans(nxt)
    parts = what["source_parts"]
    done = versions.finished_parts(nxt)
    todo = [p for p in parts if p not in done]
    counts: Counter = Counter()

    def finish_part(writer: shards.PartWriter) -> None:
        # Rejects the part already had stay with it.
        for rec in shards.read_part(out_dir, writer.name, layout.REJECTS):
            writer.add(rec, None)
        writer.commit(always_index=True)
        counts["clips"] += len(writer.clips)
        counts["parts"] += 1

    expected = {p: len(shards.read_part(out_dir, p, layout.INDEX)) for p in todo}
    writers: dict[str, shards.PartWriter] = {}
    try:
        # Parts without clips need no model work.
        for p in [p for p in todo if expected[p] == 0]:
            finish_part(shards.PartWriter(nxt, p))
        busy = [p for p in todo if expected[p] > 0]
        if busy:
            with ray_session(cfg, os.path.join(out_dir, layout.WORK_DIR)) as ray:
                ds = ray.data.from_items([{"part": p} for p in busy], override_num_blocks=len(busy))
                ds = ds.flat_map(read_part_op, fn_kwargs={"out_dir": out_dir}, num_cpus=0.5)
                ds = add_stages(ds, current_cluster())
                seen: Counter = Counter()
                part_of = {rec.clip_id: p for p in busy for rec in shards.read_part(out_dir, p, layout.INDEX)}
                total = sum(expected[p] for p in busy)
                with tqdm(total=total, unit="clip", desc=kind, disable=True if show_progress is False else None) as bar:
                    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                        for row in batch.to_pylist():
                            rec = R.row_record(row)
                            p = part_of[rec.clip_id]
                            w = writers.setdefault(p, shards.PartWriter(nxt, p))
                            w.add(rec, row["mp4"])
                            counts["rejected"] += 0 if rec.ok else 1
                            seen[p] += 1
                            bar.update(1)
                            if seen[p] == expected[p]:
                                finish_part(writers.pop(p))
    finally:
        for w in writers.values():
            w.abort()
    archive = versions.publish_next(out_dir)
    summary = {
        "kind": kind,
        "parts": len(parts),
        "parts_rewritten": counts["parts"],
        "parts_already_done": len(done),
        "clips": counts["clips"],
        "new_rejects": counts["rejected"],
        "previous_version": archive,
        "wall_s": round(time.monotonic() - t0, 2),
    }
    _record(out_dir, summary, settings, config_updates or {})
    return summary


def _record(out_dir: str, summary: dict, settings: dict, config_updates: dict) -> None:
    manifest = read_manifest(out_dir) or {}
    manifest.setdefault("rewrites", []).append({**summary, "settings": settings, "finished": now()})
    manifest.setdefault("config", {}).update(config_updates)
    manifest["counts"] = dataset_counts(out_dir)
    write_manifest(out_dir, manifest)
