"""`kvid inspect DIR`: what is in a curated folder, as text and as an HTML page."""

from __future__ import annotations

import html
import json
import math
import os
import webbrowser
from collections import Counter

import numpy as np

from curate import atomic, layout, scene_filters, schema, shards
from curate.ffmpeg import FFmpegError, run_ffmpeg, safe_input
from curate.frames import as_file
from curate.settings import Setting
from pipelines.config import SETTINGS, ConfigError

REPORT = "report.html"
THUMBS = "report_thumbs"
CLIP_FILES = "report_files"  # playable copies of the shown clips
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


def edge_decimals(hist: list[tuple[float, float, int]]) -> int:
    """Decimals that tell a histogram's bin edges apart: 2, or more for narrow bins (text areas
    are fractions of a percent of the picture)."""
    width = min((hi - lo for lo, hi, _ in hist if hi > lo), default=1.0)
    return max(2, min(8, 1 - math.floor(math.log10(width))))


def _text_hist(title: str, hist: list[tuple[float, float, int]], unit: str = "") -> str:
    if not hist:
        return f"{title}: (no values)"
    top = max(c for _, _, c in hist) or 1
    d = edge_decimals(hist)
    lines = [f"{title}:"]
    for lo, hi, c in hist:
        bar = "#" * int(round(30 * c / top))
        lines.append(f"  {lo:9.{d}f} - {hi:9.{d}f}{unit:>4} | {bar:<30} {c}")
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
        "scene_filters": scene_filter_summary(index, rejects),
    }


# --- per-scene filters (curate/scene_filters.py): counts, statistics, rejected scenes ---------

def scene_filter_reasons() -> dict[str, str]:
    """Each per-scene filter's reject reason, by its name (its statistics' prefix)."""
    return {"transition": schema.REASON_TRANSITION, **{f.name: f.reason for f in scene_filters.SCENE_FILTERS}}


MAX_REJECT_THUMBS = 60


def _stats(row: dict) -> dict[str, float]:
    value = row.get("scene_stats") or {}
    return dict(value) if isinstance(value, list) else value  # Arrow maps read back as pairs


def scene_filter_summary(index: list[dict], rejects: list[dict]) -> dict:
    """Per filter: scenes measured and rejected; per statistic: a histogram over all scenes."""
    scenes = [r for r in index + rejects if r.get("scene_index") is not None]
    counts = {}
    for name, reason in scene_filter_reasons().items():
        prefix = "transnet.max" if name == "transition" else name + "."  # transnet.max: the network looked
        measured = sum(1 for r in scenes if any(k.startswith(prefix) for k in _stats(r)))
        counts[name] = {"measured": measured, "rejected": sum(1 for r in rejects if r["reject_reason"] == reason)}
    names = sorted({k for r in scenes for k in _stats(r)})
    hists = {f"{k} (all scenes)": histogram([_stats(r).get(k) for r in scenes]) for k in names}
    return {"counts": counts, "hist": hists}


def _text_scene_filters(sf: dict) -> list[str]:
    lines = ["scene filters (measured / rejected):"]
    lines += [f"  {name:<12} {c['measured']:>6} / {c['rejected']}" for name, c in sf["counts"].items()]
    return lines + [_text_hist(title, hist) for title, hist in sf["hist"].items()]


def _html_scene_filters(out_dir: str, sf: dict, rejects: list[dict], thumbs: int) -> str:
    e = html.escape
    counts = "".join(f"<tr><td>{e(k)}</td><td>{c['measured']}</td><td>{c['rejected']}</td></tr>"
                     for k, c in sf["counts"].items())
    hists = "".join(_html_hist(t, h) for t, h in sf["hist"].items())
    rows = []
    reasons = set(scene_filter_reasons().values())
    filtered = [r for r in rejects if r["reject_reason"] in reasons]
    for r in sorted(filtered, key=lambda r: (r["source"], r["start_frame"] or 0))[:MAX_REJECT_THUMBS]:
        strip = scene_thumbnail(out_dir, r)[0] if thumbs > 0 else None
        img = f"<img src='{e(strip)}' loading=lazy>" if strip else "(no thumbnail)"
        stats = ", ".join(f"{k} {v:.3g}" for k, v in sorted(_stats(r).items()))
        rows.append(f"<tr><td>{img}</td><td>{e(r['reject_reason'])}<br>{e(os.path.basename(r['source']))}<br>"
                    f"frames {r['start_frame']}&ndash;{r['end_frame']}</td><td>{e(stats)}</td></tr>")
    return (f"<h2>scene filters</h2><div class=grid><div><h3>scenes measured / rejected</h3><table>"
            f"<tr><th>filter</th><th>measured</th><th>rejected</th></tr>{counts}</table></div>{hists}</div>"
            f"<h3>rejected by a scene filter</h3><table><tr><th>frames (from the source)</th><th>reason</th>"
            f"<th>statistics</th></tr>{''.join(rows)}</table>")


# --- shape buckets of the loader (curate/buckets.py) ------------------------------------------

def add_bucket_flags(parser) -> None:
    """`kvid inspect`'s bucket edges; unset flags keep curate.buckets.Buckets' defaults."""
    from curate.buckets import Buckets

    d = Buckets()
    group = parser.add_argument_group("loader buckets (curate.loader.ClipDataset's batch shapes)")
    for flag, field, what in (("--bucket-aspect-ratios", "aspect_ratios", "width/height per bucket, or W:H"),
                              ("--bucket-resolution-edges", "resolution_edges", "short side edges in px"),
                              ("--bucket-duration-edges", "duration_edges", "duration edges in s")):
        default = ",".join(f"{v:.4g}" for v in getattr(d, field))
        group.add_argument(flag, dest=field, type=_edges, metavar="LIST", help=f"{what}, comma-separated (default: {default})")


def _edges(text: str) -> tuple[float, ...]:
    import argparse

    from curate.buckets import parse_edges

    try:
        return parse_edges(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers (or W:H ratios): {text!r}") from None


def buckets_from_args(args):
    """A Buckets of the flags of ``add_bucket_flags``; bad edges are one-line config errors."""
    from curate.buckets import Buckets

    given = {k: getattr(args, k) for k in ("aspect_ratios", "resolution_edges", "duration_edges")
             if getattr(args, k, None) is not None}
    try:
        return Buckets(**given)
    except ValueError as e:
        raise ConfigError(f"bucket edges: {e}") from None


def bucket_section(index: list[dict], buckets) -> dict:
    """Clips per shape bucket of the loader, the fullest first, and the edges used."""
    from curate.buckets import histogram

    return {"counts": histogram(index, buckets), "buckets": buckets}


def _text_buckets(b: dict) -> list[str]:
    top = max((n for _, n in b["counts"]), default=1)
    lines = [f"loader buckets (aspect, short side, duration: {len(b['counts'])} in use):"]
    lines += [f"  {label:<28} | {'#' * int(round(30 * n / top)):<30} {n}" for label, n in b["counts"]]
    return lines if b["counts"] else lines + ["  (no clips)"]


def _html_buckets(b: dict) -> str:
    e = html.escape
    top = max((n for _, n in b["counts"]), default=1)
    rows = "".join(f"<tr><td>{e(label)}</td><td><div class=bar style='width:{200 * n / top:.0f}px'></div></td><td>{n}</td></tr>"
                   for label, n in b["counts"])
    edges = b["buckets"]
    return (f"<h2>loader buckets</h2><p>Clips per batch shape of <code>curate.loader.ClipDataset</code>: aspect ratio "
            f"(nearest of {', '.join(f'{r:.3g}' for r in edges.aspect_ratios)}), short side (edges "
            f"{', '.join(f'{v:g}' for v in edges.resolution_edges)} px), duration (edges "
            f"{', '.join(f'{v:g}' for v in edges.duration_edges)} s).</p><table class=hist>{rows}</table>")


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
    lines += _text_scene_filters(s["scene_filters"])
    if "buckets" in s:
        lines += _text_buckets(s["buckets"])
    return "\n".join(lines)


def read_manifest(out_dir: str) -> dict:
    path = os.path.join(out_dir, layout.MANIFEST)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def captioning_off(manifest: dict) -> bool:
    return str((manifest.get("config") or {}).get("caption_model", "")).lower() == "none"


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


def is_whole_source_reject(row: dict) -> bool:
    """A reject decided before any scene was cut (probe, source filters): no position in it."""
    return row["start_frame"] is None and row["source_start_s"] is None


def scene_thumbnail(out_dir: str, row: dict, height: int = 96) -> tuple[str | None, str]:
    """One frame of the source at the middle of a row's scene (a rejected scene was never
    encoded; a duplicate has no video of its own), cached under OUT/report_thumbs/. Returns
    (path relative to OUT or None, why there is none)."""
    if is_whole_source_reject(row):
        return None, "no thumbnail: the whole source was rejected before any scene was cut"
    source = schema.source_path(row)
    if not os.path.isfile(source):
        return None, "no thumbnail: the source is not a local file here"
    rel = os.path.join(THUMBS, f"frame-{row['clip_id']}.jpg")
    path = os.path.join(out_dir, rel)
    if os.path.exists(path):
        return rel, ""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    start = row["source_start_s"] or 0.0
    end = row["source_end_s"] if row["source_end_s"] is not None else start
    # Square pixels at the display aspect, as the clip would have been.
    scale = f"scale=trunc(ih*dar/2)*2:ih,setsar=1,scale=-2:{height}"
    try:
        run_ffmpeg(["-ss", f"{(start + end) / 2:.3f}", "-i", safe_input(source), "-vf", scale,
                    "-frames:v", "1", "-q:v", "4", "-y", path], timeout=60)
    except (FFmpegError, OSError):
        return None, "no thumbnail: that part of the source could not be decoded"
    if not os.path.exists(path):
        return None, "no thumbnail: no frame at that time in the source"
    return rel, ""


def clip_file(out_dir: str, row: dict) -> str | None:
    """A playable copy of the clip's mp4 beside the report (OUT/report_files/<id>.mp4), cut
    out of its shard by the index's offset and size. Returns the path relative to OUT."""
    rel = os.path.join(CLIP_FILES, f"{row['clip_id']}.mp4")
    path = os.path.join(out_dir, rel)
    if os.path.exists(path) and os.path.getsize(path) == row["shard_size"]:
        return rel
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic.atomic_write_bytes(path, shards.read_clip_bytes(out_dir, row))
    except (OSError, TypeError):
        return None
    return rel


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
        rel = scene_thumbnail(out_dir, r)[0] if r else None
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
    d = edge_decimals(hist)
    rows = "".join(
        f"<tr><td>{lo:.{d}f}&ndash;{hi:.{d}f}</td>"
        f"<td><div class=bar style='width:{200 * c / top:.0f}px'></div></td><td>{c}</td></tr>"
        for lo, hi, c in hist
    )
    return f"<div><h3>{html.escape(title)}</h3><table class=hist>{rows}</table></div>"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f} s"


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 100_000 else f"{max(1, round(n_bytes / 1e3))} kB"


def source_position(row: dict) -> str:
    """Where in the source a clip or rejected scene lies, in words: source frames and seconds.
    ``end_frame`` is exclusive, so frames 0-80 are the 80 frames 0 to 79."""
    if is_whole_source_reject(row):
        return "the whole source"
    parts = []
    if row["start_frame"] is not None and row["end_frame"] is not None:
        n = row["end_frame"] - row["start_frame"]
        fps = f" at {row['src_fps']:.3g} fps" if row.get("src_fps") else ""
        parts.append(f"source frames {row['start_frame']} to {row['end_frame'] - 1} ({n} frames{fps})")
    if row["source_start_s"] is not None and row["source_end_s"] is not None:
        parts.append(f"{row['source_start_s']:.2f}&ndash;{row['source_end_s']:.2f} s")
    return ", ".join(parts)


def output_format(row: dict) -> str:
    """What was written, with the re-timing spelled out (a 30 fps scene becomes 24 fps)."""
    retimed = ""
    if row.get("src_fps") and row["fps"] and abs(row["src_fps"] - row["fps"]) > 0.01:
        retimed = f", re-timed from the source's {row['src_fps']:.3g} fps"
    return (f"{row['duration_s']:.2f} s<br>{row['width']}x{row['height']} px<br>"
            f"{row['num_frames']} output frames at {row['fps']:g} fps{retimed}")


def caption_html(row: dict, manifest: dict) -> str:
    e = html.escape
    if row["caption"]:
        return f"<div class=cap>{e(row['caption'])}</div>"
    if captioning_off(manifest):
        return ("<div class='cap none'>no caption: captioning was off (caption_model: none); "
                "<code>kvid caption OUT</code> adds captions</div>")
    return "<div class='cap none'>no caption (empty)</div>"


def message_html(text: str | None, short: int = 160) -> str:
    """A reject message, never cut mid-word: short ones whole, long ones folded at a word
    boundary with the full text one click away (and in the tooltip)."""
    e = html.escape
    if not text:
        return ""
    if len(text) <= short:
        return f"<div class=msg>{e(text)}</div>"
    cut = text.rfind(" ", 0, short)
    head = text[: cut if cut > short // 2 else short]
    return f"<details class=msg title='{e(text)}'><summary>{e(head)} &hellip;</summary>{e(text)}</details>"


def clip_row(out_dir: str, row: dict, manifest: dict, thumbs: int) -> str:
    e = html.escape
    strip = thumbnail_strip(out_dir, row, thumbs) if thumbs > 0 else None
    mp4 = clip_file(out_dir, row)
    img = f"<img src='{e(strip)}' alt='frames of {e(row['clip_id'])}' loading=lazy>" if strip else "(no thumbnail)"
    if mp4:
        img = f"<a href='{e(mp4)}' title='play the clip'>{img}</a>"
        play = f"<a class=play href='{e(mp4)}'>&#9654; play clip</a> ({_size(row['shard_size'])} mp4)"
    else:
        play = "(clip not readable from its shard)"
    motion = "" if row["motion_score"] is None else f"{row['motion_score']:.2f} ({e(row['motion_backend'] or '')})"
    return (
        f"<tr class=clip id='clip-{e(row['clip_id'])}'><td>{img}<div>{play}</div>{caption_html(row, manifest)}</td>"
        f"<td><code>{e(row['clip_id'])}</code><br>{e(os.path.basename(row['source']))}<br>{source_position(row)}</td>"
        f"<td>{output_format(row)}</td><td>{motion}</td></tr>"
    )


def reject_row(out_dir: str, row: dict, thumbs: int) -> str:
    e = html.escape
    if thumbs > 0:
        thumb, why = scene_thumbnail(out_dir, row)
    else:
        thumb, why = None, "no thumbnail (--thumbs 0)"
    img = f"<img src='{e(thumb)}' alt='source frame' loading=lazy>" if thumb else f"<span class=why>{e(why)}</span>"
    return (
        f"<tr class=reject id='reject-{e(row['clip_id'])}'><td class=thumb>{img}</td>"
        f"<td>{e(os.path.basename(row['source']))}<br><span class=pos>{source_position(row)}</span></td>"
        f"<td>{e(row['reject_stage'] or '')}</td><td>{e(row['reject_reason'] or '')}</td>"
        f"<td>{_seconds(row['duration_s'])}</td>"
        f"<td>{message_html(row['error_message'])}</td></tr>"
    )


# The settings a reader needs to read the report: the thresholds behind every reject reason.
def settings_by_group(config: dict) -> list[tuple[str, list[Setting], list[Setting]]]:
    """(group title, the settings that decide the output, the rest) for the keys in ``config``,
    in the order the settings are declared."""
    groups: dict[str, tuple[list[Setting], list[Setting]]] = {}
    for s in SETTINGS:
        if s.key in config:
            main, rest = groups.setdefault(s.title, ([], []))
            (main if s.info.decides else rest).append(s)
    return [(title, main, rest) for title, (main, rest) in groups.items()]


def settings_html(manifest: dict) -> str:
    """The thresholds and settings of the run, from OUT/manifest.json (the effective config),
    each with its help, by group: those that decide the output, then the rest folded."""
    e = html.escape
    config = manifest.get("config") or {}
    if not config:
        return "<h2>settings</h2><p>manifest.json has no config: settings unknown.</p>"

    def line(s: Setting) -> str:
        return (f"<tr><td><code>{e(s.key)}</code></td><td><b>{e(json.dumps(config[s.key]))}</b></td>"
                f"<td>{e(s.info.help)}</td></tr>")

    groups = settings_by_group(config)
    main = "".join(f"<tr><th colspan=3>{e(title)}</th></tr>" + "".join(map(line, decide))
                   for title, decide, _ in groups if decide)
    rest = "".join(f"<tr><th colspan=3>{e(title)}</th></tr>" + "".join(map(line, other))
                   for title, _, other in groups if other)
    return (
        "<h2>settings</h2><p>The settings of the last run that decide its clips (from <code>manifest.json</code>); "
        "a reject's reason names the threshold it failed.</p>"
        f"<table class=settings>{main}</table>"
        f"<details><summary>how it ran (the other settings)</summary><table class=settings>{rest}</table></details>"
    )


def settings_text(manifest: dict) -> str:
    """One line per group with the settings that decide the output, and whether captioning was on."""
    config = manifest.get("config") or {}
    if not config:
        return "settings: unknown (manifest.json has no config)"
    lines = ["settings of the last run:"]
    for title, decide, _ in settings_by_group(config):
        if decide:
            values = ", ".join(f"{s.key} {json.dumps(config[s.key])}" for s in decide)
            lines.append(f"  {title + ':':<20} {values}")
    if captioning_off(manifest):
        lines.append("  captioning was off (caption_model none): captions are empty; `kvid caption OUT` adds them")
    return "\n".join(lines)


def write_html(out_dir: str, s: dict, thumbs: int) -> str:
    manifest = read_manifest(out_dir)
    e = html.escape
    clips = sorted(s["index"], key=lambda r: (r["source"], r["start_frame"] or 0))
    clip_rows = "".join(clip_row(out_dir, r, manifest, thumbs) for r in clips[:MAX_CLIPS_IN_REPORT])
    more = len(clips) - MAX_CLIPS_IN_REPORT
    rejects = sorted(s["rejects"], key=lambda r: (r["source"], r["start_frame"] or 0))
    reject_rows = "".join(reject_row(out_dir, r, thumbs) for r in rejects)
    reasons = "".join(f"<tr><td>{e(k)}</td><td>{v}</td></tr>" for k, v in s["rejects_by_reason"].most_common())
    hists = "".join(_html_hist(t, h) for t, h in s["hist"].items())
    caption_note = (" Captioning was off for this run (<code>caption_model: none</code>), so captions are empty."
                    if captioning_off(manifest) else "")
    page = f"""<!doctype html><html><head><meta charset=utf-8><title>kvid report: {e(out_dir)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}} table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:4px 8px;vertical-align:top;text-align:left}}
.bar{{background:#4a7;height:12px}} .hist td{{border:none;padding:1px 6px}} .cap{{max-width:700px;font-size:90%;color:#333}}
.cap.none,.why,.pos{{color:#777;font-style:italic}} .msg{{max-width:480px;overflow-wrap:anywhere;font-size:90%}}
.msg summary{{cursor:pointer}} .settings td,.settings th{{padding:2px 8px}} .settings th{{background:#f3f3f3}}
.grid{{display:flex;flex-wrap:wrap;gap:2em}} img{{max-width:720px}} td.thumb{{max-width:200px}}</style></head><body>
<h1>kvid report</h1><p><code>{e(os.path.abspath(out_dir))}</code> &mdash; status {e(str(manifest.get('status', '?')))},
kvid {e(str(manifest.get('kvid_version', '?')))}</p>
<p><b>{s['inputs']}</b> inputs &rarr; <b>{s['clips']}</b> clips and <b>{len(s['rejects'])}</b> rejects;
{s['hours_in']:.3f} h in, {s['hours_out']:.3f} h out</p>
<div class=grid>{hists}<div><h3>rejects by stage/reason</h3><table>{reasons}</table></div></div>
{settings_html(manifest)}
<h2>clips</h2><p>Each clip is a scene of its source: <i>source frames</i> count the source's own frames at its
frame rate; the clip was re-timed to the output rate, so its <i>output frames</i> differ (80 source
frames at 30 fps = 2.67 s = 64 output frames at 24 fps). The thumbnails and &#9654; links open the clip's
mp4, copied beside this page into <code>{CLIP_FILES}/</code> (safe to delete).{caption_note}</p>
<table><tr><th>frames and caption</th><th>clip and position in the source</th><th>output</th><th>motion</th></tr>
{clip_rows}</table>
{f'<p>{more} more clips not shown.</p>' if more > 0 else ''}
{_html_scene_filters(out_dir, s["scene_filters"], s["rejects"], thumbs)}
{_html_buckets(s["buckets"]) if "buckets" in s else ""}
{duplicates_html(out_dir, s)}
<h2>rejects</h2><p>A scene's thumbnail is a source frame from the middle of the scene. A source rejected
whole (unreadable, too low a frame rate, ...) has no scene and no thumbnail.</p>
<table><tr><th>frame</th><th>source and position</th><th>stage</th><th>reason</th><th>length</th><th>message</th></tr>
{reject_rows}</table>
</body></html>"""
    path = os.path.join(out_dir, REPORT)
    # "replace": a file name that is not valid UTF-8 must not sink the page
    atomic.atomic_write_bytes(path, page.encode("utf-8", "replace"))
    return path


def inspect_output(out_dir: str, html: bool = True, open_browser: bool = False, thumbs: int = 5, buckets=None) -> int:
    if not os.path.isdir(os.path.join(out_dir, layout.INDEX)) and not os.path.exists(os.path.join(out_dir, layout.MANIFEST)):
        raise ConfigError(f"{out_dir} is not a kvid output folder (no index/ or manifest.json)")
    s = summarize(out_dir)
    from curate.buckets import Buckets

    s["buckets"] = bucket_section(s["index"], buckets or Buckets())
    print(format_text(s, out_dir))
    print(settings_text(read_manifest(out_dir)))
    if html:
        path = write_html(out_dir, s, thumbs)
        print(f"report: {path}")
        if open_browser:
            webbrowser.open("file://" + os.path.abspath(path))
    return 0
