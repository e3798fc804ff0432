"""`kvid inspect DIR`: what is in a curated folder, as text and as an HTML page."""

from __future__ import annotations

import html
import json
import math
import os
import webbrowser
from collections import Counter

import numpy as np

from curate import shards
from curate.ffmpeg import FFmpegError, run_ffmpeg, safe_input
from curate.frames import as_file

REPORT = "report.html"
THUMBS = "report_thumbs"
MAX_CLIPS_IN_REPORT = 500


def histogram(values: list[float], bins: int = 10) -> list[tuple[float, float, int]]:
    """(low, high, count) per bin; empty for no values."""
    vals = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if vals.size == 0:
        return []
    lo, hi = float(vals.min()), float(vals.max())
    if hi == lo:
        return [(lo, hi, int(vals.size))]
    counts, edges = np.histogram(vals, bins=bins, range=(lo, hi))
    return [(float(edges[i]), float(edges[i + 1]), int(c)) for i, c in enumerate(counts)]


def _text_hist(title: str, hist: list[tuple[float, float, int]], unit: str = "") -> str:
    if not hist:
        return f"{title}: (no values)"
    top = max(c for _, _, c in hist) or 1
    lines = [f"{title}:"]
    for lo, hi, c in hist:
        bar = "#" * int(round(30 * c / top))
        lines.append(f"  {lo:9.2f} - {hi:9.2f}{unit:>4} | {bar:<30} {c}")
    return "\n".join(lines)


def summarize(out_dir: str) -> dict:
    index = shards.read_index(out_dir).to_pylist()
    rejects = shards.read_rejects(out_dir).to_pylist()
    sources = {r["source_id"]: r for r in index + rejects}
    return {
        "index": index,
        "rejects": rejects,
        "inputs": len(sources),
        "clips": len(index),
        "hours_in": sum((r["src_duration_s"] or 0) for r in sources.values()) / 3600,
        "hours_out": sum((r["duration_s"] or 0) for r in index) / 3600,
        "rejects_by_reason": Counter(f"{r['reject_stage']}/{r['reject_reason']}" for r in rejects),
        "hist": {
            "duration (s)": histogram([r["duration_s"] for r in index]),
            "fps": histogram([r["fps"] for r in index]),
            "short side (px)": histogram([min(r["width"], r["height"]) for r in index if r["width"]]),
            "motion score (px/frame)": histogram([r["motion_score"] for r in index]),
        },
    }


def format_text(s: dict, out_dir: str) -> str:
    lines = [
        f"{out_dir}: {s['inputs']} inputs -> {s['clips']} clips, {len(s['rejects'])} rejects",
        f"hours in {s['hours_in']:.3f}, hours out {s['hours_out']:.3f}",
    ]
    if s["rejects_by_reason"]:
        lines.append("rejects by stage/reason:")
        lines += [f"  {k:<28} {v}" for k, v in s["rejects_by_reason"].most_common()]
    for title, hist in s["hist"].items():
        lines.append(_text_hist(title, hist))
    return "\n".join(lines)


def thumbnail_strip(out_dir: str, row: dict, n: int, height: int = 96) -> str | None:
    """A JPEG of ``n`` frames side by side, cached under OUT/report_thumbs/. Returns the
    path relative to OUT, or None when the clip cannot be read."""
    rel = os.path.join(THUMBS, f"{row['clip_id']}.jpg")
    path = os.path.join(out_dir, rel)
    if os.path.exists(path):
        return rel
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rate = n / max(row["duration_s"] or 1.0, 0.1)
    try:
        with as_file(shards.read_clip_bytes(out_dir, row)) as clip:
            run_ffmpeg(
                ["-i", safe_input(clip), "-vf", f"fps={rate:.4f},scale=-2:{height},tile={n}x1",
                 "-frames:v", "1", "-q:v", "4", "-y", path],
                timeout=60,
            )
    except (FFmpegError, OSError):
        return None
    return rel


def scene_frame(out_dir: str, row: dict, height: int = 96) -> str | None:
    """A JPEG of the middle frame of a row's scene, read from its source (duplicates have
    no video of their own), cached under OUT/report_thumbs/. Path relative to OUT, or None."""
    from curate.remote import is_uri

    rel = os.path.join(THUMBS, f"frame-{row['clip_id']}.jpg")
    path = os.path.join(out_dir, rel)
    if os.path.exists(path):
        return rel
    if row.get("source_start_s") is None or is_uri(row["source"]) or not os.path.exists(row["source"]):
        return None
    os.makedirs(os.path.dirname(path), exist_ok=True)
    middle = (row["source_start_s"] + (row["source_end_s"] or row["source_start_s"])) / 2
    try:
        run_ffmpeg(["-ss", f"{middle:.3f}", "-i", safe_input(row["source"]), "-frames:v", "1",
                    "-vf", f"scale=-2:{height}", "-q:v", "4", "-y", path], timeout=60)
    except (FFmpegError, OSError):
        return None
    return rel if os.path.exists(path) else None


def duplicates_html(out_dir: str, s: dict, max_groups: int = 100) -> str:
    """Duplicate groups: the kept clip and its copies, a frame of each side by side."""
    e = html.escape
    groups: dict[str, list[dict]] = {}
    for r in s["rejects"]:
        if r.get("reject_reason") == "duplicate" and r.get("duplicate_of"):
            groups.setdefault(r["duplicate_of"], []).append(r)
    if not groups:
        return ""
    by_id = {r["clip_id"]: r for r in s["index"]}

    def cell(r: dict | None, label: str, clip_id: str) -> str:
        rel = scene_frame(out_dir, r) if r else None
        img = f"<img src='{e(rel)}' loading=lazy>" if rel else "(no frame)"
        where = f"{e(os.path.basename(r['source']))} {_seconds(r['duration_s'])}" if r else "not in this version"
        return f"<td>{img}<br><b>{label}</b> <code>{e(clip_id)}</code><br>{where}</td>"

    rows = []
    for kept, dups in sorted(groups.items(), key=lambda kv: -len(kv[1]))[:max_groups]:
        cells = [cell(by_id.get(kept), "kept", kept)]
        cells += [cell(d, "duplicate", d["clip_id"]) for d in sorted(dups, key=lambda d: d["clip_id"])]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    more = f"<p>{len(groups) - max_groups} more groups not shown.</p>" if len(groups) > max_groups else ""
    return (f"<h2>duplicate groups ({len(groups)})</h2><table class=dups>{''.join(rows)}</table>{more}")


def _html_hist(title: str, hist) -> str:
    if not hist:
        return f"<div><h3>{html.escape(title)}</h3><p>no values</p></div>"
    top = max(c for _, _, c in hist) or 1
    rows = "".join(
        f"<tr><td>{lo:.2f}&ndash;{hi:.2f}</td><td><div class=bar style='width:{200 * c / top:.0f}px'></div></td><td>{c}</td></tr>"
        for lo, hi, c in hist
    )
    return f"<div><h3>{html.escape(title)}</h3><table class=hist>{rows}</table></div>"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f} s"


def write_html(out_dir: str, s: dict, thumbs: int) -> str:
    manifest = {}
    if os.path.exists(os.path.join(out_dir, shards.MANIFEST)):
        with open(os.path.join(out_dir, shards.MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
    e = html.escape
    clips = sorted(s["index"], key=lambda r: (r["source"], r["start_frame"] or 0))
    clip_rows = []
    for r in clips[:MAX_CLIPS_IN_REPORT]:
        strip = thumbnail_strip(out_dir, r, thumbs) if thumbs > 0 else None
        img = f"<img src='{e(strip)}' loading=lazy>" if strip else "(no thumbnail)"
        motion = "" if r["motion_score"] is None else f"{r['motion_score']:.2f} ({e(r['motion_backend'] or '')})"
        clip_rows.append(
            f"<tr><td>{img}<div class=cap>{e(r['caption'] or '')}</div></td>"
            f"<td><code>{e(r['clip_id'])}</code><br>{e(os.path.basename(r['source']))}<br>"
            f"frames {r['start_frame']}&ndash;{r['end_frame']}</td>"
            f"<td>{r['duration_s']:.2f} s<br>{r['width']}x{r['height']} @ {r['fps']:g}<br>{r['num_frames']} frames</td>"
            f"<td>{motion}</td></tr>"
        )
    more = len(clips) - MAX_CLIPS_IN_REPORT
    reject_rows = "".join(
        f"<tr><td>{e(os.path.basename(r['source']))}</td><td>{e(r['reject_stage'] or '')}</td>"
        f"<td>{e(r['reject_reason'] or '')}</td><td>{_seconds(r['duration_s'])}</td>"
        f"<td>{e((r['error_message'] or '')[:200])}</td></tr>"
        for r in sorted(s["rejects"], key=lambda r: (r["source"], r["start_frame"] or 0))
    )
    reasons = "".join(f"<tr><td>{e(k)}</td><td>{v}</td></tr>" for k, v in s["rejects_by_reason"].most_common())
    hists = "".join(_html_hist(t, h) for t, h in s["hist"].items())
    page = f"""<!doctype html><html><head><meta charset=utf-8><title>kvid report: {e(out_dir)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}} table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:4px 8px;vertical-align:top;text-align:left}}
.bar{{background:#4a7;height:12px}} .hist td{{border:none;padding:1px 6px}} .cap{{max-width:700px;font-size:90%;color:#333}}
.grid{{display:flex;flex-wrap:wrap;gap:2em}} img{{max-width:720px}}</style></head><body>
<h1>kvid report</h1><p><code>{e(os.path.abspath(out_dir))}</code> &mdash; status {e(str(manifest.get('status', '?')))},
kvid {e(str(manifest.get('kvid_version', '?')))}</p>
<p><b>{s['inputs']}</b> inputs &rarr; <b>{s['clips']}</b> clips and <b>{len(s['rejects'])}</b> rejects;
{s['hours_in']:.3f} h in, {s['hours_out']:.3f} h out</p>
<div class=grid>{hists}<div><h3>rejects by stage/reason</h3><table>{reasons}</table></div></div>
<h2>clips</h2><table><tr><th>frames and caption</th><th>clip</th><th>format</th><th>motion</th></tr>{''.join(clip_rows)}</table>
{f'<p>{more} more clips not shown.</p>' if more > 0 else ''}
{duplicates_html(out_dir, s)}
<h2>rejects</h2><table><tr><th>source</th><th>stage</th><th>reason</th><th>length</th><th>message</th></tr>{reject_rows}</table>
</body></html>"""
    path = os.path.join(out_dir, REPORT)
    shards.atomic_write_bytes(path, page.encode("utf-8"))
    return path


def inspect_output(out_dir: str, html: bool = True, open_browser: bool = False, thumbs: int = 5) -> int:
    if not os.path.isdir(os.path.join(out_dir, shards.INDEX)) and not os.path.exists(os.path.join(out_dir, shards.MANIFEST)):
        from pipelines.config import ConfigError

        raise ConfigError(f"{out_dir} is not a kvid output folder (no index/ or manifest.json)")
    s = summarize(out_dir)
    print(format_text(s, out_dir))
    if html:
        path = write_html(out_dir, s, thumbs)
        print(f"report: {path}")
        if open_browser:
            webbrowser.open("file://" + os.path.abspath(path))
    return 0
