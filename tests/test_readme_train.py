"""The README's "Train on it" code runs as written on a curated folder: the DataLoader loop
over ClipDataset, then `kvid export ... --format lance` and reading it back with lance."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

from curate import shards, synthetic
from curate.where import read_selection


def train_blocks() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text.split("### Train on it", 1)[1]
    python = re.search(r"```python\n(.*?)```", after, re.S)
    bash = re.search(r"```bash\n(.*?)```", after, re.S)
    assert python and bash, "the Train on it section lost a code block"
    return python.group(1), bash.group(1)


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")  # torchdata 0.11 on a newer torch
def test_readme_training_loop_and_lance_export_run_as_written(tmp_path, ray_local, monkeypatch, capsys):
    from pipelines.config import build_config
    from pipelines.curate import run_curate

    code, commands = train_blocks()
    out_name = re.search(r'^OUT = "([^"]+)"', code, re.M).group(1)
    assert out_name == "kvid-demo/curated" and out_name in commands  # both name what `kvid demo` writes
    raw = tmp_path / "raw"
    synthetic.scene_video(str(raw / "cuts.mp4"), [90, 75, 66], fps=30, size=(320, 240))  # 3 scenes, 2.2-3 s
    cfg = build_config({}, {"inputs": [str(raw)], "out": str(tmp_path / out_name), "motion_backend": "dis",
                            "caption_model": "none", "text_filter": False})  # lavfi test sources draw text
    run_curate(cfg, show_progress=False)
    index = shards.read_index(str(tmp_path / out_name)).to_pylist()
    assert len(index) == 3

    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})  # as written, from the folder holding OUT
    printed = capsys.readouterr().out.splitlines()
    seen: dict[str, list[str]] = {"0": [], "1": []}
    for line in printed:
        epoch, rest = line.split(" ", 1)
        shape = tuple(int(v) for v in re.search(r"\(([\d, ]+)\)", rest).group(1).split(","))
        ids = re.findall(r"'([0-9a-f]{16})'", rest)
        assert shape[0] == len(ids) and shape[1:3] == (16, 3) and min(shape[3:]) == 128
        seen[epoch] += ids
    everything = sorted(r["clip_id"] for r in index)
    assert sorted(seen["0"]) == everything == sorted(seen["1"])  # two epochs, every clip once each

    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    proc = subprocess.run(["bash", "-e", "-c", commands], cwd=tmp_path, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    where = re.search(r"--where '([^']+)'", commands).group(1)
    wanted = read_selection(out_name, where).to_pylist()
    assert wanted, [r["motion_score"] for r in index]  # the example's filter keeps something on such clips
    rows, first_size = proc.stdout.strip().splitlines()[-1].split()
    assert int(rows) == len(wanted) and int(first_size) in {r["shard_size"] for r in wanted}
