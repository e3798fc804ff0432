"""RAFT backend on CPU with random weights built in code; the weights loader; offline errors."""

from __future__ import annotations

import os
import pickle
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from motion_fixtures import encode_bytes, translating_frames  # noqa: E402

from curate.stage import Cluster  # noqa: E402
from motion import MotionStage, MotionWeightsError, compute_motion, get_backend  # noqa: E402
from motion import raft as raft_mod  # noqa: E402

SIZE = 128  # RAFT's minimum input; the smallest size that exercises the real model
UPDATES = 2


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # Tiny models: one thread is as fast, and far steadier on a busy 2-core machine
    # (OpenMP threads of several processes spinning against each other).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=["raft_small", "raft_large"])
def raft(request):
    b = get_backend(request.param, weights=None, device="cpu", num_flow_updates=UPDATES)
    b.setup()
    return b


def _row(clip_id, mp4):
    return {"clip_id": clip_id, "status": "ok", "mp4": mp4}


def test_flow_shapes_padding_and_dtype(raft):
    # 128 x 172: width not a multiple of 8 -> padded for the model, cropped back after.
    frames = translating_frames(3, 2, 0, height=SIZE, width=172)
    flow = raft.flow(frames[:2], frames[1:])
    assert flow.shape == (2, SIZE, 172, 2) and flow.dtype == np.float32
    assert np.isfinite(flow).all()
    # below RAFT's 128 px minimum: padded up, still the input's shape out
    small = translating_frames(2, 1, 0, height=64, width=80)
    assert raft.flow(small[:1], small[1:]).shape == (1, 64, 80, 2)
    # statistics computed on the device agree with the numpy definition on the same flow
    from motion import stats_from_flow

    s_dev = raft.pair_stats(frames[:2], frames[1:])
    s_np = stats_from_flow(flow)
    np.testing.assert_allclose(s_dev[:, 0], s_np[:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s_dev[:, 2], s_np[:, 2], rtol=1e-2, atol=1e-3)  # lower vs mean median
    assert raft.describe()["dtype"] == "float32" and raft.device == "cpu"


def test_batch_composition_does_not_change_results(raft):
    frames = translating_frames(7, 3, 1, height=SIZE, width=SIZE + 32)
    one_by_one = compute_motion(frames, raft, batch_size=1)
    batched = compute_motion(frames, raft, batch_size=4)
    assert one_by_one.num_pairs == batched.num_pairs == 6
    np.testing.assert_allclose(batched.pair_scores, one_by_one.pair_scores, rtol=1e-4, atol=1e-5)
    strided = compute_motion(frames, raft, stride=4, batch_size=4)
    assert strided.num_pairs == 2 and strided.stride == 4
    np.testing.assert_allclose(strided.pair_scores, one_by_one.pair_scores[::4], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", ["raft_small", "raft_large"])
def test_stage_batches_pairs_across_clips(variant):
    clip_a = encode_bytes(translating_frames(4, 2, 0, height=SIZE, width=SIZE), lossless=True, suffix=".mkv")
    clip_b = encode_bytes(translating_frames(6, 0, 3, height=SIZE, width=SIZE, seed=1), lossless=True, suffix=".mkv")
    stage = MotionStage(backend=variant, size=SIZE, batch_size=4, device="cpu", random_weights=True, num_flow_updates=UPDATES)
    assert stage.placement(Cluster(cpus=2, gpus=1)).resources.gpus == 0  # device cpu: no GPU, even where there is one
    stage.setup()
    calls = []
    orig = stage.flow.pair_stats

    def spy(a, b):
        calls.append(len(a))
        return orig(a, b)

    stage.flow.pair_stats = spy
    both = stage([_row("a", clip_a), _row("b", clip_b)])
    # 3 + 5 = 8 pairs in batches of 4 filled across clips: 4, 4 (clip by clip: 3, 4, 1)
    assert calls == [4, 4], calls
    calls.clear()
    alone_a = stage([_row("a", clip_a)])[0]
    alone_b = stage([_row("b", clip_b)])[0]
    for got, ref, pairs in ((both[0], alone_a, 3), (both[1], alone_b, 5)):
        assert got["status"] == "ok"
        assert got["motion_backend"] == variant and got["motion_size"] == SIZE and got["motion_stride"] == 1
        assert len(got["motion_pair_scores"]) == pairs
        assert all(isinstance(x, float) for x in got["motion_pair_scores"])
        np.testing.assert_allclose(got["motion_pair_scores"], ref["motion_pair_scores"], rtol=1e-4, atol=1e-5)
        for k in ("motion_score", "motion_camera", "motion_object"):
            assert got[k] == pytest.approx(ref[k], rel=1e-4, abs=1e-5)
        assert got["motion_score"] == pytest.approx(np.mean(got["motion_pair_scores"]), rel=1e-9)
    # stride: pairs (0,1), (3,4) of clip b
    strided = MotionStage(backend=variant, size=SIZE, stride=3, batch_size=4, device="cpu", random_weights=True,
                          num_flow_updates=UPDATES)
    strided._backend = stage.flow  # same random model
    out = strided([_row("b", clip_b)])[0]
    assert out["motion_stride"] == 3 and len(out["motion_pair_scores"]) == 2
    np.testing.assert_allclose(out["motion_pair_scores"], alone_b["motion_pair_scores"][::3], rtol=1e-4, atol=1e-5)


def test_alias_and_options():
    b = get_backend("raft", weights=None, device="cpu")
    assert b.name == "raft_large" and b.num_flow_updates == 12 and b.dtype == "float32"
    with pytest.raises(ValueError, match="CUDA"):
        get_backend("raft_small", weights=None, device="cpu", dtype="bf16")
    with pytest.raises(ValueError, match="num_flow_updates"):
        get_backend("raft_small", weights=None, num_flow_updates=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            get_backend("raft_small", weights=None, device="cuda")
        assert MotionStage(backend="raft_large", random_weights=True).placement(Cluster(cpus=2)).resources.gpus == 0


# -- weights ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_state_dict():
    return raft_mod.build_raft("raft_small").state_dict()


def test_loads_a_real_state_dict_strictly(tmp_path, small_state_dict):
    torch.manual_seed(123)
    ref = raft_mod.build_raft("raft_small")
    path = tmp_path / "raft_small.pth"
    torch.save(ref.state_dict(), path)
    b = get_backend("raft_small", weights=str(path), device="cpu", num_flow_updates=UPDATES)
    b.setup()
    assert b.weights_path == str(path)
    for k, v in ref.state_dict().items():
        assert torch.equal(b.model.state_dict()[k], v), k
    # safetensors works too
    from safetensors.torch import save_file

    st = tmp_path / "raft_small.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(st))
    b2 = get_backend("raft_small", weights=str(st), device="cpu", num_flow_updates=UPDATES)
    frames = translating_frames(2, 1, 0, height=SIZE, width=SIZE)
    np.testing.assert_allclose(b2.flow(frames[:1], frames[1:]), b.flow(frames[:1], frames[1:]), rtol=1e-5, atol=1e-5)


class _Thing:
    def __init__(self):
        self.weights = [1.0, 2.0]


class _Evil:
    """Unpickling this runs os.mkdir(marker): a code-execution canary."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize(
    "kind,match",
    [
        ("text", "not a PyTorch weights file"),
        ("random", "not a PyTorch weights file"),
        ("pickle_object", "not a PyTorch weights file"),
        ("evil_pickle", "not a PyTorch weights file"),
        ("tensor", "not a state dict"),
        ("dict_of_non_tensors", "not a state dict"),
        ("wrong_keys", "not a torchvision raft_small state dict"),
        ("wrong_shapes", "wrong shapes"),
        ("missing", "not found"),
        ("directory", "not a file"),
    ],
)
def test_weights_loader_refuses_non_weights(tmp_path, kind, match, small_state_dict):
    path = tmp_path / "weights.pth"
    if kind == "text":
        path.write_text("these are not the weights you are looking for\n" * 20)
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(50_000))
    elif kind == "pickle_object":
        torch.save({"model": _Thing()}, path)  # an arbitrary object inside a torch file
    elif kind == "evil_pickle":
        with open(path, "wb") as f:
            pickle.dump(_Evil(str(tmp_path / "pwned")), f, protocol=2)
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "dict_of_non_tensors":
        torch.save({"a": 1, "b": "x"}, path)
    elif kind == "wrong_keys":
        torch.save({"encoder.weight": torch.zeros(3, 3), "encoder.bias": torch.zeros(3)}, path)
    elif kind == "wrong_shapes":
        sd = dict(small_state_dict)
        k = next(k for k, v in sd.items() if v.ndim == 4)
        sd[k] = torch.zeros(1, 1, 1, 1)
        torch.save(sd, path)
    elif kind == "directory":
        path = tmp_path / "adir"
        path.mkdir()
    b = get_backend("raft_small", weights=str(path), device="cpu")
    with pytest.raises(MotionWeightsError, match=match) as e:
        b.setup()
    assert str(path) in str(e.value)
    assert b.model is None
    assert not (tmp_path / "pwned").exists()  # nothing was executed


def test_large_weights_for_small_model_names_the_fix(tmp_path):
    path = tmp_path / "large.pth"
    torch.save(raft_mod.build_raft("raft_large").state_dict(), path)
    with pytest.raises(MotionWeightsError, match="raft_large weights: use --motion-backend raft_large"):
        get_backend("raft_small", weights=str(path), device="cpu").setup()


def test_checkpoint_wrapping_state_dict_is_unwrapped(tmp_path, small_state_dict):
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": small_state_dict, "epoch": 3}, path)
    b = get_backend("raft_small", weights=str(path), device="cpu")
    b.setup()
    assert b.model is not None


# -- default weights, offline ---------------------------------------------------------------


def _assert_names_the_fix(msg: str, variant: str):
    assert "--motion-backend dis" in msg
    assert "--motion-weights" in msg
    assert raft_mod.default_weights_path(variant) in msg


def test_missing_default_weights_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("KVID_OFFLINE", raising=False)
    # No internet, whatever machine runs the test: the weights host does not resolve.
    real_url = raft_mod.default_weights_url

    def dead_url(variant="raft_large"):
        return real_url(variant).replace("download.pytorch.org", "kvid-no-such-host.invalid")

    monkeypatch.setattr(raft_mod, "default_weights_url", dead_url)
    t0 = time.monotonic()
    stage = MotionStage(backend="raft_large", device="cpu")
    with pytest.raises(MotionWeightsError) as e:
        stage.setup()
    elapsed = time.monotonic() - t0
    _assert_names_the_fix(str(e.value), "raft_large")
    assert "no internet" in str(e.value)
    assert str(tmp_path / "torch-home") in str(e.value)
    assert elapsed < 20, f"took {elapsed:.1f} s: must fail fast, not wait on the network"
    assert not any((tmp_path / "torch-home").rglob("*.pth"))


def test_offline_env_never_touches_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("KVID_OFFLINE", "1")

    def no_network(*a, **k):
        raise AssertionError("network probed although KVID_OFFLINE=1")

    monkeypatch.setattr(raft_mod, "_probe_network", no_network)
    monkeypatch.setattr(raft_mod, "_download", no_network)
    with pytest.raises(MotionWeightsError, match="KVID_OFFLINE=1") as e:
        get_backend("raft_small", device="cpu").setup()
    _assert_names_the_fix(str(e.value), "raft_small")
    with pytest.raises(MotionWeightsError, match="allow_download=False"):
        monkeypatch.delenv("KVID_OFFLINE")
        get_backend("raft_small", device="cpu", allow_download=False).setup()


def test_network_probe_is_bounded(monkeypatch):
    # A black-holed connection (the request never answers) is cut off by the timeout.
    def hang(*a, **k):
        time.sleep(30)

    monkeypatch.setattr(raft_mod.urllib.request, "urlopen", hang)
    t0 = time.monotonic()
    why = raft_mod._probe_network("https://example.invalid/models/x.pth", timeout=0.5)
    assert why is not None and "no answer within" in why and "example.invalid" in why
    assert time.monotonic() - t0 < 5


def test_cached_default_weights_are_used(tmp_path, monkeypatch, small_state_dict):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(raft_mod, "_probe_network", lambda *a, **k: pytest.fail("network used"))
    path = raft_mod.default_weights_path("raft_small")
    assert path.startswith(str(tmp_path)) and os.path.basename(path).startswith("raft_small_")
    os.makedirs(os.path.dirname(path))
    torch.save(small_state_dict, path)
    b = get_backend("raft_small", device="cpu")
    b.setup()
    assert b.weights_path == path


def test_default_weights_download_is_checked_and_atomic(tmp_path, monkeypatch, small_state_dict):
    # The download path without a network: serve the "weights" from a file:// URL whose
    # name carries the sha256 prefix, as torchvision's URLs do.
    import hashlib

    src = tmp_path / "src.pth"
    torch.save(small_state_dict, src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    served = tmp_path / f"raft_small_C_T_V2-{digest[:8]}.pth"
    src.rename(served)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KVID_OFFLINE", raising=False)
    monkeypatch.setattr(raft_mod, "default_weights_url", lambda variant="raft_large": served.as_uri())
    b = get_backend("raft_small", device="cpu")
    b.setup()
    cached = tmp_path / "home" / "hub" / "checkpoints" / served.name
    assert b.weights_path == str(cached) and cached.read_bytes() == served.read_bytes()
    # a corrupted download (hash prefix mismatch) is refused and leaves nothing behind
    bad = tmp_path / "raft_large_C_T_SKHT_V2-00000000.pth"
    bad.write_bytes(b"not the weights")
    monkeypatch.setattr(raft_mod, "default_weights_url", lambda variant="raft_large": bad.as_uri())
    with pytest.raises(MotionWeightsError, match="sha256"):
        get_backend("raft_large", device="cpu").setup()
    assert sorted(p.name for p in cached.parent.iterdir()) == [served.name]
