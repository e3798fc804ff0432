"""bench/gpu.sh: the one-command GPU run, checked on CPU at toy sizes (``--tiny``).

The GPU machine has no Ray, PySceneDetect, pydantic, webdataset, ffmpeg-python or ffmpeg: the
tiny run hides them all (a ``sitecustomize`` that makes their imports fail, a PATH without
ffmpeg), so an import chain that pulls one of them in fails here first.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU_SH = ROOT / "bench" / "gpu.sh"
HIDDEN = ["ray", "scenedetect", "pydantic", "pydantic_core", "webdataset", "ffmpeg"]  # not on the GPU machine
HIDDEN_TOOLS = {"ffmpeg", "ffprobe"}

BLOCKER = """
import sys
# Modules absent on the GPU machine: None in sys.modules makes `import x` raise ImportError
# and importlib.util.find_spec(x) return None, as for a package that is not installed.
for _name in {hidden!r}:
    sys.modules[_name] = None
"""


@pytest.fixture(scope="module")
def gpu_machine_env(tmp_path_factory) -> dict[str, str]:
    """Environment without the hidden packages and tools: a sitecustomize, and a PATH of links to
    every program on the current PATH except ffmpeg and ffprobe."""
    base = tmp_path_factory.mktemp("gpu-machine")
    site = base / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER.format(hidden=HIDDEN))
    bin_dir = base / "bin"
    bin_dir.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            src, dst = os.path.join(d, name), bin_dir / name
            if name in HIDDEN_TOOLS or dst.exists() or not os.access(src, os.X_OK) or os.path.isdir(src):
                continue
            dst.symlink_to(src)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PATH=str(bin_dir), PYTHONPATH=f"{site}{os.pathsep}{ROOT}", PYTHON=sys.executable,
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def _run_gpu_sh(out: Path, env: dict[str, str], *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(GPU_SH), str(out), "--tiny", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _json(path: Path):
    return json.loads(path.read_text())


def test_hidden_packages_and_ffmpeg_are_really_hidden(gpu_machine_env):
    code = ("import importlib.util, shutil\n"
            f"for m in {HIDDEN!r}:\n"
            "    assert importlib.util.find_spec(m) is None, m\n"
            "    try:\n"
            "        __import__(m)\n"
            "    except ImportError:\n"
            "        pass\n"
            "    else:\n"
            "        raise AssertionError(m)\n"
            "assert shutil.which('ffmpeg') is None and shutil.which('ffprobe') is None\n")
    r = subprocess.run([sys.executable, "-c", code], env=gpu_machine_env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_gpu_bench_code_imports_without_the_hidden_packages(gpu_machine_env):
    # Everything bench/gpu.sh runs, imported where Ray, PySceneDetect, pydantic and ffmpeg are
    # missing (the full run is the slow test below).
    code = ("import importlib.util, pathlib\n"
            "import motion, motion.raft, motion.stage, caption.backends, generate.pipeline\n"
            "for name in ('motion', 'caption', 'generate', 'gpu_parts'):\n"
            f"    path = pathlib.Path({str(ROOT)!r}) / 'bench' / f'{{name}}.py'\n"
            "    spec = importlib.util.spec_from_file_location(f'kvid_bench_{name}', path)\n"
            "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n")
    r = subprocess.run([sys.executable, "-c", code], env=gpu_machine_env, capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr


@pytest.mark.slow  # ~50 s of CPU time (five processes, each importing torch): over the default suite's budget
def test_tiny_run_end_to_end_without_ray_scenedetect_ffmpeg(tmp_path, gpu_machine_env):
    out = tmp_path / "gpu"
    r = _run_gpu_sh(out, gpu_machine_env, "--parts", "env,pytest,raft,caption,generate")
    logs = {p.name: p.read_text()[-3000:] for p in out.glob("*.log")}
    assert r.returncode == 0, (r.stdout, r.stderr)
    for part in ("env", "pytest", "raft", "caption", "generate"):
        st = _json(out / f"status-{part}.json")
        assert st["state"] == "ok", (part, st, logs.get(f"{part}.log"))
    # parts not selected are recorded as not run, not as failures
    assert not (out / "status-generate-high.json").exists()

    env = _json(out / "env.json")
    assert env["tiny"] is True and env["torch"] and env["date"].endswith("Z") and env["device_name"]
    assert env["ffmpeg"] is None

    tests = _json(out / "pytest-gpu.json")
    assert tests["mode"] == "collect-only" and tests["collection_errors"] == 0
    ids = {t["id"] for t in tests["tests"]}
    assert "tests/test_motion_gpu.py::test_raft_gpu_equals_cpu" in ids
    assert "tests/test_generate_pipeline.py::test_no_host_device_sync_inside_denoising_loops" in ids
    assert not any("test_documented_frame_counts" in i for i in ids)  # -m gpu selects GPU tests only

    raft = _json(out / "raft.json")
    assert {r["backend"] for r in raft["rows"] if "pairs_per_s" in r} == {"raft_large", "raft_small"}
    assert all(r["x_realtime"] == pytest.approx(r["pairs_per_s"] / 24) for r in raft["rows"] if "pairs_per_s" in r)
    assert raft["info"]["date"] and raft["info"]["torch"] and raft["info"]["device_name"]

    cap = _json(out / "caption.json")
    assert [r["batch"] for r in cap["results"]] == [1, 2]
    assert all(r["out_tokens"] == 2 * r["clips"] for r in cap["results"])  # exactly --max-new-tokens each
    assert cap["info"]["family"] == "qwen2_5_vl" and cap["info"]["date"]

    gen = _json(out / "generate.json")
    by_fps = {r["fps"]: r for r in gen["results"]}
    assert set(by_fps) == {"low", "medium"}
    assert by_fps["low"]["speedup_vs_baseline"] > 0 and "speedup_vs_baseline" not in by_fps["medium"]
    assert by_fps["medium"]["unet_tflop"] > by_fps["low"]["unet_tflop"] > 0  # medium adds an interpolation pass
    assert gen["env"]["baseline"].startswith("eager fp32") and gen["env"]["date"]

    for part in ("raft", "caption", "generate"):
        prof = _json(out / f"{part}-profile.json")
        assert prof["kind"] == "op" and prof["rows"] and prof["rows"][0]["self_ms"] > 0, part
        assert (out / f"{part}-profile.txt").read_text().startswith("# torch.profiler top ops")

    summary = _json(out / "summary.json")
    assert summary["tiny"] is True
    assert [g["goal"] for g in summary["goals"]] == [
        "raft_large_256_x_realtime", "vlm_7b_clips_per_s", "generator_high_s_per_video", "generator_peak_gb",
        "generator_unet_fraction_of_peak"]
    goals = {g["goal"]: g for g in summary["goals"]}
    assert goals["raft_large_256_x_realtime"]["met"] is None  # the goal is at 256 px; tiny runs 64 px
    assert goals["vlm_7b_clips_per_s"]["note"] == "model size tiny, not 7B"
    assert goals["generator_high_s_per_video"]["met"] is None  # high was not run
    md = (out / "summary.md").read_text()
    assert "not GPU figures" in md and "| generate-high | not run |" in md


def test_a_part_over_its_cap_is_stopped_and_the_next_part_still_runs(tmp_path, gpu_machine_env):
    out = tmp_path / "gpu"
    # 0.3 s cannot even import torch: the env part is killed at its cap, pytest then runs in full
    r = _run_gpu_sh(out, gpu_machine_env, "--parts", "env,pytest", "--cap", "env=0.3", "--tar", str(tmp_path / "r.tgz"))
    assert r.returncode == 0, (r.stdout, r.stderr)
    env_st, py_st = _json(out / "status-env.json"), _json(out / "status-pytest.json")
    assert env_st["state"] == "timed out" and env_st["timed_out"] is True and env_st["seconds"] < 5
    assert not (out / "env.json").exists()
    assert py_st["state"] == "ok"
    assert _json(out / "pytest-gpu.json")["collected"] >= 5
    assert "| env | timed out |" in (out / "summary.md").read_text()
    with tarfile.open(tmp_path / "r.tgz") as tar:  # one file to carry back from the GPU machine
        names = {os.path.basename(n) for n in tar.getnames()}
    assert {"status-env.json", "status-pytest.json", "pytest-gpu.json", "summary.md", "summary.json"} <= names


def _gpu_parts():
    spec = importlib.util.spec_from_file_location("kvid_bench_gpu_parts", ROOT / "bench" / "gpu_parts.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write(path: Path, doc) -> None:
    path.write_text(json.dumps(doc))


def test_summary_goals_met_missed_and_not_measured(tmp_path):
    gp = _gpu_parts()
    _write(tmp_path / "env.json", {"device_name": "NVIDIA H200", "torch": "2.11.0", "date": "2026-12-01T00:00:00Z",
                                   "tiny": False, "matmul": {"tflops": 790.0}})
    for p in ("env", "raft", "caption", "generate"):
        _write(tmp_path / f"status-{p}.json", {"part": p, "state": "ok", "rc": 0, "seconds": 10, "cap": 60})
    _write(tmp_path / "status-generate-high.json", {"part": "generate-high", "state": "timed out", "rc": 124,
                                                    "seconds": 90, "cap": 90, "timed_out": True})

    def raft_row(backend, size, dtype, batch, x):
        return {"backend": backend, "size": size, "dtype": dtype, "batch": batch, "x_realtime": x,
                "pairs_per_s": 24 * x}

    _write(tmp_path / "raft.json", {"rows": [
        raft_row("raft_large", 256, "bf16", 1, 5.0),
        raft_row("raft_large", 256, "bf16", 64, 61.0),
        raft_row("raft_large", 256, "fp32", 64, 30.0),
        raft_row("raft_small", 256, "bf16", 64, 200.0),  # not the goal's model
        raft_row("raft_large", 512, "bf16", 8, 90.0),  # nor its size
        {"backend": "raft_large", "size": 256, "dtype": "bf16", "batch": 128, "skipped": True}]})
    cap_row = {"backend": "transformers", "out_tokens_per_s": 100.0, "x_vs_b1": 1.0, "peak_gib": 17.0}
    _write(tmp_path / "caption.json", {"info": {"size": "full"}, "results": [
        {**cap_row, "batch": 1, "clips_per_s": 0.4}, {**cap_row, "batch": 16, "clips_per_s": 1.5}]})
    gen = {"peak_memory_kind": "cuda_max_allocated", "unet_fraction_of_peak": 0.31, "unet_tflops_achieved": 306.6}
    _write(tmp_path / "generate.json", {"results": [
        {**gen, "fps": "low", "frames": 12, "seconds_per_video": 20.0, "peak_memory_gib": 30.0,
         "baseline_seconds_without_text": 50.0, "speedup_vs_baseline": 2.5},
        {**gen, "fps": "medium", "frames": 45, "seconds_per_video": 40.0, "peak_memory_gib": 38.0}]})  # 40.8 GB
    (tmp_path / "caption-profile.txt").write_text("# torch.profiler top kernels: caption\n  50.0% gemm\n")
    _write(tmp_path / "caption-profile.json", {"rows": [{"name": "gemm"}]})

    s = gp.evaluate(tmp_path)
    goals = {g["goal"]: g for g in s["goals"]}
    assert goals["raft_large_256_x_realtime"]["value"] == 61.0 and goals["raft_large_256_x_realtime"]["met"] is True
    assert "bf16, batch 64" in goals["raft_large_256_x_realtime"]["from"]
    assert goals["vlm_7b_clips_per_s"]["value"] == 1.5 and goals["vlm_7b_clips_per_s"]["met"] is False
    assert goals["vlm_7b_clips_per_s"]["profile"] == "caption-profile.json"
    assert goals["generator_high_s_per_video"]["met"] is None  # high timed out: not measured, not "missed"
    assert goals["generator_peak_gb"]["value"] == pytest.approx(38.0 * 2**30 / 1e9)
    assert goals["generator_peak_gb"]["met"] is False
    assert goals["generator_peak_gb"]["profile"] is None  # no generate profile was written
    assert goals["generator_unet_fraction_of_peak"]["from"] == "generate.json: fps medium"
    assert goals["generator_unet_fraction_of_peak"]["note"] == "39% of this run's matmul"  # 306.6 / 790
    assert [(a["fps"], a["published_over_measured"]) for a in s["published_anchor"]] == [("medium", 1.5)]

    md = gp.render_markdown(tmp_path, s)
    assert "| generate-high | timed out | 90 (90) |" in md
    assert "| pytest | not run | - |" in md
    assert "Goal missed (7B VLM captions" in md and "50.0% gemm" in md
    assert "not GPU figures" not in md
    assert "| raft_large | 256 | bf16 | 120.0 | 64 | 1464.0 | 61.0 |" in md  # b1, then the best batch
    assert "| 16 | 1.50 | 100 | 1.00 | 17.0 |" in md
    assert "| low | 12 | 20.0 | 30.0 | 306.6 | 31.0% | 50.0 | 2.50 |" in md
    assert "| medium | 45 | 40.0 | 38.0 | 306.6 | 31.0% | - | - |" in md

    # fps high measured and fast enough: the time goal is met and the U-Net share is read from high
    _write(tmp_path / "generate-high.json", {"results": [
        {**gen, "fps": "high", "seconds_per_video": 28.0, "peak_memory_gib": 20.0, "unet_fraction_of_peak": 0.45}]})
    goals = {g["goal"]: g for g in gp.evaluate(tmp_path)["goals"]}
    assert goals["generator_high_s_per_video"]["met"] is True
    assert goals["generator_unet_fraction_of_peak"]["value"] == 0.45
    assert goals["generator_unet_fraction_of_peak"]["met"] is True


JUNIT = (
    '<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">'
    '<testsuite name="pytest" errors="0" failures="1" skipped="1" tests="3" time="12.5">'
    '<testcase classname="tests.test_motion_gpu" name="test_raft_gpu_equals_cpu" time="3.1" />'
    '<testcase classname="tests.test_motion_gpu" name="test_raft_bf16_close_to_fp32" time="0.1">'
    '<skipped type="pytest.skip" message="no CUDA device">skip</skipped></testcase>'
    '<testcase classname="tests.test_generate_pipeline" name="test_bf16_close_to_fp32_on_gpu" time="2.0">'
    '<failure message="AssertionError: 0.04 &lt; 0.03">trace</failure></testcase>'
    "</testsuite></testsuites>"
)


def test_pytest_results_from_junit_xml_or_from_the_log_of_a_stopped_run(tmp_path):
    gp = _gpu_parts()
    (tmp_path / "pytest-gpu.xml").write_text(JUNIT)
    assert gp.main(["pytest-json", str(tmp_path)]) == 0
    doc = _json(tmp_path / "pytest-gpu.json")
    assert (doc["total"], doc["passed"], doc["failures"], doc["skipped"]) == (3, 1, 1, 1)
    outcomes = {t["id"]: t["outcome"] for t in doc["tests"]}
    assert outcomes == {"tests.test_motion_gpu::test_raft_gpu_equals_cpu": "passed",
                        "tests.test_motion_gpu::test_raft_bf16_close_to_fp32": "skipped",
                        "tests.test_generate_pipeline::test_bf16_close_to_fp32_on_gpu": "failed"}
    assert "0.04 < 0.03" in doc["tests"][2]["message"]

    # stopped at its cap: no XML, only the -v lines printed so far
    (tmp_path / "pytest-gpu.xml").unlink()
    (tmp_path / "pytest.log").write_text(
        "============ test session starts ============\n"
        "tests/test_motion_gpu.py::test_raft_gpu_equals_cpu PASSED                 [ 20%]\n"
        "tests/test_motion_gpu.py::test_raft_bf16_close_to_fp32 FAILED             [ 40%]\n"
        "tests/test_generate_pipeline.py::test_model_offload_matches_resident_and_compile_matches_eager ")
    assert gp.main(["pytest-json", str(tmp_path)]) == 0
    doc = _json(tmp_path / "pytest-gpu.json")
    assert [t["outcome"] for t in doc["tests"]] == ["passed", "failed"]
    assert doc["passed"] == 1 and doc["failures"] == 1 and "no junit XML" in doc["note"]
