"""kvid as a person runs it: in a terminal, interrupted with Ctrl-C, twice at once, on a
full disk, with odd file names and with mistakes. Each ends with what it promised, or one
line `kvid: error: ...` and a non-zero exit, never a traceback or a hang."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from terminal import ROOT, Terminal, kvid, kvid_env

from curate import output_lock, schema, shards, synthetic
from pipelines.config import build_config
from pipelines.curate import run_curate

OFFLINE = ["--motion-backend", "dis", "--caption-model", "none"]


def _ids(out) -> set[str]:
    return set(shards.read_index(str(out), ["clip_id"]).column("clip_id").to_pylist()) | set(
        shards.read_rejects(str(out), ["clip_id"]).column("clip_id").to_pylist()
    )


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("kvid: error: "), proc.stderr
    return lines[0]


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(kvid(*args), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                          env=kvid_env(), cwd=ROOT)


def test_demo_in_a_terminal(tmp_path):
    """The README's first command, as a person types it: it ends, with its summary, nothing
    of Ray's reaches the screen, and what it promises is what comes out."""
    term = Terminal(kvid("demo", "--out", str(tmp_path / "demo")))
    code = term.finish(timeout=300)
    screen = term.screen
    assert code == 0, screen[-3000:]
    assert "kvid curate: complete" in screen and "report.html" in screen
    assert "core_worker" not in screen and "(raylet)" not in screen and "\x1b[0m" not in screen, screen[-2000:]
    # What it promises on screen is what comes out.
    out = tmp_path / "demo" / "curated"
    index = shards.read_index(str(out)).to_pylist()
    rejects = shards.read_rejects(str(out)).to_pylist()
    kept = Counter(os.path.basename(r["source"]) for r in index)
    assert kept == {"cuts.mp4": 3, "letterbox.mp4": 1}
    reasons = {(os.path.basename(r["source"]), r["reject_reason"]) for r in rejects}
    assert reasons == {("cuts.mp4", "too_short"), ("low_fps.mp4", "fps"), ("too_short.mp4", "too_short"),
                       ("corrupt.mp4", "not_video"), ("grey.mp4", "flat"), ("still.mp4", "static")}
    assert all(r["scene_stats"] for r in rejects if r["reject_reason"] in ("flat", "static"))  # stats kept on rejects
    (box,) = [r for r in index if r["source"].endswith("letterbox.mp4")]
    assert box["width"] == 1280 and abs(box["height"] - 520) <= 2
    assert all(r["motion_score"] is not None and r["motion_score"] > 0 for r in index)  # DIS ran
    report = (out / "report.html").read_text()
    assert all(r["clip_id"] in report for r in index)


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_a_stopped_run_keeps_finished_work_and_resumes_to_the_same_ids(tmp_path, ray_local, stop):
    src = tmp_path / "src"
    src.mkdir()
    # (mandelbrot: testsrc2's timecode is an overlaid line of ~3% at 320x240, a text reject)
    synthetic.plain_video(str(src / "a_short.mp4"), duration_s=3, fps=24, size=(320, 240), source="mandelbrot")
    # Long enough to be still in flight when the short one is done: 12 scenes of 3 s.
    synthetic.scene_video(str(src / "b_long.mp4"), [72] * 12, fps=24, size=(640, 360))
    out = tmp_path / "out"
    term = Terminal(kvid("curate", str(src), "--out", str(out), *OFFLINE))
    assert term.wait_for("1/2 videos", timeout=240), term.screen[-3000:]
    if stop == "ctrl-c":
        term.ctrl_c()
    else:
        os.kill(term.proc.pid, signal.SIGTERM)  # a scheduler's stop
    code = term.finish(timeout=120)
    assert code == 130, term.screen[-3000:]
    assert "re-run the same command to resume" in term.screen
    committed = shards.read_index(str(out)).to_pylist()
    assert any(r["source"].endswith("a_short.mp4") for r in committed), "the finished source was thrown away"
    assert not [n for sub in ("shards", "index", "rejects") for n in os.listdir(out / sub) if n.startswith(".")]
    if stop == "sigterm":
        return  # the same commit path; the resume is checked once, below

    rerun = _run("curate", str(src), "--out", str(out), *OFFLINE, "-q", timeout=400)
    assert rerun.returncode == 0, rerun.stderr
    clean = tmp_path / "clean"
    run_curate(build_config({}, {"inputs": [str(src)], "out": str(clean), "motion_backend": "dis", "caption_model": "none"}),
               show_progress=False)
    assert _ids(out) == _ids(clean)


def test_a_second_driver_on_one_folder_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path):
    src = tmp_path / "a.mp4"
    synthetic.plain_video(str(src), duration_s=3, fps=24, size=(320, 240))
    out = tmp_path / "out"
    first = subprocess.Popen(kvid("curate", str(src), "--out", str(out), *OFFLINE, "-q"), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=kvid_env(), cwd=ROOT)
    lock = out / ".kvid" / "lock"
    for _ in range(600):
        if lock.exists() and lock.stat().st_size > 0:
            break
        time.sleep(0.1)
    second = _run("curate", str(src), "--out", str(out), *OFFLINE, "-q")
    message = _one_line_error(second)
    assert f"pid {first.pid}" in message and "kvid curate" in message
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert "complete" in stdout

    # A driver killed while it holds the folder leaves no lock that blocks the next run.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from curate.output_lock import OutputLock; OutputLock(sys.argv[1], 'kvid curate').acquire(); "
        "print('held', flush=True); time.sleep(600)"), str(out)], stdout=subprocess.PIPE, text=True, env=kvid_env())
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(output_lock.OutputBusy):
        output_lock.OutputLock(str(out), "test").acquire()
    holder.kill()
    holder.wait()
    output_lock.OutputLock(str(out), "test").acquire().release()


def _mount_tmpfs(path, size_bytes: int) -> bool:
    return os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)], capture_output=True).returncode == 0


def _tree_bytes(folder) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_full_disk_is_one_line_removes_the_open_part_and_resumes(tmp_path, ray_local):
    src = tmp_path / "src"
    src.mkdir()
    for i, source in enumerate(("testsrc2", "mandelbrot", "life", "testsrc")):
        synthetic.plain_video(str(src / f"v{i}.mp4"), duration_s=3, fps=24, size=(640, 480), source=source)
    clean = tmp_path / "clean"
    # No motion scoring: the disk is under test, and the runs are shorter without it.
    run_curate(build_config({}, {"inputs": [str(src)], "out": str(clean), "motion_backend": "none",
                                 "caption_model": "none", "shard_max_clips": 1, "crf": 12}), show_progress=False)
    need = _tree_bytes(clean)
    disk = tmp_path / "disk"
    disk.mkdir()
    # Room for the whole dataset plus 1 MiB, of which a filler file takes three quarters of the data's size.
    if not _mount_tmpfs(disk, need + 2**20):
        pytest.skip("needs root to mount a size-limited tmpfs")
    try:
        out = disk / "out"
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (need * 3 // 4))
        args = ("curate", str(src), "--out", str(out), "--motion-backend", "none", "--caption-model", "none", "-q",
                "--shard-max-clips", "1", "--crf", "12")
        message = _one_line_error(_run(*args, timeout=400))
        assert "no space left" in message and "re-run" in message
        leftovers = [n for sub in ("shards", "index", "rejects") for n in os.listdir(out / sub) if n.startswith(".")]
        assert leftovers == []
        for rec in shards.read_index(str(out)).to_pylist():  # what was committed reads back whole
            assert len(shards.read_clip_bytes(str(out), rec)) == rec["shard_size"]

        filler.unlink()  # the user frees space and runs the same command again
        rerun = _run(*args, timeout=400)
        assert rerun.returncode == 0, rerun.stderr
        assert _ids(out) == _ids(clean)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_file_name_that_is_not_utf8_is_curated_and_stored_losslessly(tmp_path, ray_local):
    src = tmp_path / "src"
    src.mkdir()
    synthetic.plain_video(str(src / "good.mp4"), duration_s=3, fps=24, size=(320, 240))
    raw = os.path.join(os.fsencode(src), b"caf\xe9 \xff.mp4")  # Latin-1 bytes, as on old shares
    # Another picture (a byte copy would be good.mp4's near duplicate), without testsrc2's timecode.
    synthetic.plain_video(str(tmp_path / "odd.mp4"), duration_s=3, fps=24, size=(320, 240), source="mandelbrot")
    shutil.move(tmp_path / "odd.mp4", raw)
    synthetic.zero_byte_file(str(src / "zero.mp4"))
    out = tmp_path / "out"
    summary = run_curate(build_config({}, {"inputs": [str(src)], "out": str(out), "motion_backend": "dis",
                                           "caption_model": "none"}), show_progress=False)
    assert summary["status"] == "complete"
    rows = shards.read_index(str(out)).to_pylist() + shards.read_rejects(str(out)).to_pylist()
    accounted = {schema.source_path(r) for r in rows}
    assert accounted == {str(src / "good.mp4"), os.fsdecode(raw), str(src / "zero.mp4")}
    (odd,) = [r for r in rows if r["source_bytes"]]
    assert odd["status"] == "ok" and odd["source_bytes"] == raw
    assert odd["source"].endswith("caf\\xe9 \\xff.mp4")  # readable, valid UTF-8
    # A re-run finds it done.
    again = run_curate(build_config({}, {"inputs": [str(src)], "out": str(out), "motion_backend": "dis",
                                         "caption_model": "none"}), show_progress=False)
    assert again["sources_run"] == 0 and again["sources_skipped"] == 3


def test_mistakes_are_one_line_errors(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    video = tmp_path / "v.mp4"
    synthetic.plain_video(str(video), duration_s=2, fps=24, size=(160, 120))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "is a file, not a folder" in _one_line_error(_run("curate", str(video), "--out", str(a_file), *OFFLINE))
    assert "no video files" in _one_line_error(_run("curate", str(empty), "--out", str(tmp_path / "o"), *OFFLINE))
    assert "no such file" in _one_line_error(_run("curate", str(tmp_path / "nope"), "--out", str(tmp_path / "o2"), *OFFLINE))
