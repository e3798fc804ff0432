"""bench/caption.py runs end to end on CPU (tiny model) and writes its JSON only with --save."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _load_bench():
    spec = importlib.util.spec_from_file_location("kvid_bench_caption", ROOT / "bench" / "caption.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_cpu_smoke(tmp_path, monkeypatch, capsys):
    bench = _load_bench()
    monkeypatch.setattr(bench, "ROOT", str(tmp_path))
    rc = bench.main(["--device", "cpu", "--model", "llava_onevision", "--batch-sizes", "1,2",
                     "--max-new-tokens", "3", "--min-clips", "2", "--frames", "4", "--save"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "clips/s" in out and "x vs b1" in out
    data = json.loads((tmp_path / "bench" / "results" / "caption-cpu.json").read_text())
    assert [r["batch"] for r in data["results"]] == [1, 2]
    for r in data["results"]:
        # min_new_tokens = max_new_tokens: every clip generates exactly 3 tokens
        assert r["out_tokens"] == 3 * r["clips"]
        assert r["clips_per_s"] > 0
    assert data["results"][0]["x_vs_b1"] == 1.0
    assert data["info"]["frames"] == 4 and data["info"]["video_tokens"] > 0


def test_bench_refuses_full_size_on_cpu():
    assert _load_bench().main(["--device", "cpu", "--size", "full"]) == 2
