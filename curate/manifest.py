"""OUT/manifest.json: the effective config, tool versions, dataset counts and one entry
per run or rewrite. Written atomically beside the shards; read by every command."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections import Counter
from datetime import datetime, timezone
from typing import Any

from curate import atomic, layout, shards
from curate.version import KVID_VERSION


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def manifest_path(out_dir: str) -> str:
    return os.path.join(out_dir, layout.MANIFEST)


def read_manifest(out_dir: str) -> dict | None:
    path = manifest_path(out_dir)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_manifest(out_dir: str, manifest: dict) -> None:
    atomic.atomic_write_json(manifest_path(out_dir), manifest)


def tool_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"kvid": KVID_VERSION, "python": platform.python_version()}
    # scenedetect is installed as its headless build (scenedetect-headless).
    for name, dists in (("ray", ["ray"]), ("pyarrow", ["pyarrow"]), ("scenedetect", ["scenedetect-headless", "scenedetect"]),
                        ("torch", ["torch"]), ("torchvision", ["torchvision"]), ("transformers", ["transformers"]),
                        ("webdataset", ["webdataset"])):
        for dist in dists:
            try:
                out[name] = md.version(dist)
                break
            except md.PackageNotFoundError:
                pass
    try:
        first = subprocess.run(["ffmpeg", "-version"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=10).stdout.splitlines()
        out["ffmpeg"] = first[0].split()[2] if first else "unknown"
    except (OSError, subprocess.SubprocessError, IndexError):
        out["ffmpeg"] = "unknown"
    return out


def dataset_counts(out_dir: str) -> dict[str, Any]:
    """Totals over everything committed in the output folder (all runs)."""
    cols = ["source", "source_id", "src_duration_s", "duration_s", "reject_reason", "reject_stage"]
    index = shards.read_index(out_dir, cols).to_pylist()
    rejects = shards.read_rejects(out_dir, cols).to_pylist()
    src_seconds = {}
    for r in index + rejects:
        src_seconds[r["source_id"]] = r["src_duration_s"] or 0.0
    return {
        "inputs": len(src_seconds),
        "clips": len(index),
        "rejects": len(rejects),
        "rejects_by_reason": dict(Counter(r["reject_reason"] for r in rejects).most_common()),
        "hours_in": round(sum(src_seconds.values()) / 3600, 4),
        "hours_out": round(sum(r["duration_s"] or 0.0 for r in index) / 3600, 4),
    }
