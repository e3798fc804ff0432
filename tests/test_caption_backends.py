"""Backends through tiny random models built in code and loaded with load_backend(path).

Every family runs the real path: AutoConfig -> family -> from_pretrained (model and
processor) -> chat template -> processor (video placeholder expansion) -> generate.
"""

from __future__ import annotations

import functools
import time

import pytest
from caption_fixtures import enable_fake_num2words, sample_clips, tiny_model

from caption import backends, model_files
from caption.backends import load_backend, vllm_available
from caption.errors import CaptionBackendUnavailable, CaptionModelError
from caption.families import FAMILIES
from caption.model_files import inspect_model
from caption.prompts import get_template
from caption.sampling import sample_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")


FAMILY_NAMES = ["qwen2_5_vl", "qwen2_vl", "llava_next_video", "llava_onevision", "smolvlm"]
INSTRUCTION = "Describe this {duration_s} second video in detail."

_loaded: dict[str, object] = {}


@pytest.fixture
def backend(request, monkeypatch):
    family = request.param
    if family == "smolvlm":
        enable_fake_num2words(monkeypatch)
    if family not in _loaded:
        _loaded[family] = load_backend(tiny_model(family), device="cpu")
    return _loaded[family]


@functools.cache
def _sampled(name: str, n: int):
    return sample_frames(str(sample_clips()[name]), n=n, size=128, clip_id=name)


def _clips(names=("a3", "b25", "c125"), n=8):
    return [_sampled(k, n) for k in names]


def _prompts(clips):
    t = get_template(INSTRUCTION)
    return [t.render(num_frames=c.num_frames, duration_s=c.duration_s) for c in clips]


@pytest.mark.parametrize("backend", FAMILY_NAMES, indirect=True)
def test_load_backend_real_path(backend):
    import torch

    fam = backend.family
    assert isinstance(backend, backends.TransformersBackend)
    assert type(backend.model).__name__ == fam.model_class
    assert backend.model_name == tiny_model(fam.name)  # as given: stored as caption_model
    assert backend.dtype == torch.float32 and backend.device.type == "cpu"  # fp32 on CPU
    assert backend.model.config._attn_implementation == "sdpa"
    assert not backend.model.training
    assert backend.tokenizer.padding_side == "left"
    assert backend.frame_short_side > 0


@pytest.mark.parametrize("backend", FAMILY_NAMES, indirect=True)
def test_prompt_rendering(backend):
    fam = backend.family
    text = "Describe the camera motion of this clip."
    rendered = backend.render_prompt(text)
    assert rendered.count(fam.video_token) == 1
    assert text in rendered
    assert rendered.index(fam.video_token) < rendered.index(text)  # video first, then the instruction
    expected_shape = {
        "qwen2_5_vl": ("<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>" + text + "<|im_end|>\n",
                       "<|im_start|>assistant\n"),
        "qwen2_vl": ("<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>" + text + "<|im_end|>\n",
                     "<|im_start|>assistant\n"),
        "llava_next_video": ("USER: <video>\n" + text, "ASSISTANT:"),
        "llava_onevision": ("<|im_start|>user <video>\n" + text + "<|im_end|>", "<|im_start|>assistant\n"),
        "smolvlm": ("<video>" + text + "<end_of_utterance>", "Assistant:"),
    }[fam.name]
    assert expected_shape[0] in rendered
    assert rendered.endswith(expected_shape[1])

    # The processor expands the one placeholder into the model's video tokens, and the
    # count grows with the number of frames.
    tok = backend.tokenizer
    placeholder = "<image>" if fam.name == "smolvlm" else fam.video_token
    pid = tok.convert_tokens_to_ids(placeholder)
    counts = {}
    for n in (4, 8):
        clips = _clips(("a3",), n=n)
        inputs = backend.prepare_inputs(clips, [text])
        ids = inputs["input_ids"][0].tolist()
        counts[n] = ids.count(pid)
        assert text in tok.decode(ids, skip_special_tokens=False)
    assert counts[4] > 0
    assert counts[8] == 2 * counts[4] or (fam.name == "llava_onevision" and counts[8] - 1 == 2 * (counts[4] - 1))


@pytest.mark.parametrize("backend", FAMILY_NAMES, indirect=True)
def test_batch_equals_single(backend):
    clips = _clips()
    prompts = _prompts(clips)
    assert len({len(p) for p in prompts}) == 3  # "3", "2.5", "1.25": different lengths
    inputs = backend.prepare_inputs(clips, prompts)
    assert (inputs["attention_mask"] == 0).any(), "batch must exercise left padding"
    assert (inputs["attention_mask"][:, -1] == 1).all(), "padding must be on the left"
    batched = backend.generate(clips, prompts, max_new_tokens=10)
    tokens_batched = backend.last_num_output_tokens
    singles = [backend.generate([c], [p], max_new_tokens=10)[0] for c, p in zip(clips, prompts)]
    assert batched == singles
    assert len(set(batched)) >= 2, "outputs must depend on the clip, or this test proves nothing"
    assert 3 <= tokens_batched <= 30
    assert all(isinstance(t, str) for t in batched)


@pytest.mark.parametrize("backend", ["qwen2_5_vl"], indirect=True)
def test_one_prompt_for_all_and_length_mismatch(backend):
    clips = _clips(("a3", "c125"), n=4)
    out = backend.generate(clips, "Describe it.", max_new_tokens=4)
    assert len(out) == 2
    with pytest.raises(ValueError, match="2 prompts for 1 clips"):
        backend.generate(clips[:1], ["a", "b"], max_new_tokens=4)


@pytest.mark.parametrize("backend", ["llava_onevision", "qwen2_5_vl"], indirect=True)
def test_mixed_frame_counts_in_one_batch(backend):
    # A 30-frame clip sampled at 2 fps has 3 frames, others 8: LLaVA stacks pixel tensors,
    # so the backend splits by frame count; Qwen packs them. Either way: same as singles.
    clips = [_sampled("a3", 8), _sampled("c125", 3), _sampled("b25", 8)]
    prompts = ["Describe it."] * 3
    batched = backend.generate(clips, prompts, max_new_tokens=6)
    singles = [backend.generate([c], ["Describe it."], max_new_tokens=6)[0] for c in clips]
    assert batched == singles


@pytest.mark.parametrize("backend", ["qwen2_5_vl"], indirect=True)
def test_qwen25_gets_the_sampled_frame_rate(backend):
    # 8 frames over a 3 s clip = 2.67 fps; temporal patch 2 -> 0.75 s per grid step.
    clips = _clips(("a3",), n=8)
    inputs = backend.prepare_inputs(clips, ["Describe it."])
    assert float(inputs["second_per_grid_ts"][0]) == pytest.approx(2 / (8 / 3.0), rel=1e-3)
    assert inputs["video_grid_thw"][0, 0].item() == 4  # 8 frames / temporal patch 2


def test_inspect_model_reads_family_without_weights():
    spec = inspect_model(tiny_model("llava_onevision"))
    assert spec.family is FAMILIES["llava_onevision"]
    assert spec.local_files_only is True  # a local folder never touches the network
    assert spec.frame_short_side == 384


def test_missing_model_offline_fails_fast_with_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = "kvid-test-org/no-such-video-vlm-7b"
    t = time.monotonic()
    with pytest.raises(CaptionModelError) as e:
        load_backend(model, device="cpu")
    assert time.monotonic() - t < 10
    msg = str(e.value)
    assert model in msg
    assert f"huggingface-cli download {model}" in msg
    assert "HF_HOME" in msg and "local path" in msg and "captioning off" in msg


def test_missing_model_without_route_to_hub(monkeypatch):
    # No HF_HUB_OFFLINE, but the quick connection test fails: local files only, same error.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(model_files, "hub_reachable", lambda *a, **k: False)
    assert model_files.resolve_local_files_only("some-org/some-model") is True
    with pytest.raises(CaptionModelError, match="huggingface-cli download some-org/some-model"):
        inspect_model("some-org/some-model")


def test_missing_local_folder():
    with pytest.raises(CaptionModelError, match="/no/such/folder/qwen.*does not exist"):
        load_backend("/no/such/folder/qwen", device="cpu")


def test_folder_without_weights(tmp_path):
    from random_vlm import save_random_model

    path = save_random_model("qwen2_5_vl", tmp_path / "noweights", weights=False)
    with pytest.raises(CaptionModelError, match="no weight files"):
        load_backend(path, device="cpu")


def test_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaptionModelError, match="no usable config.json"):
        inspect_model(str(tmp_path / "empty"))


def test_unsupported_model_type(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=100).save_pretrained(tmp_path / "llama")
    with pytest.raises(CaptionModelError, match="model_type 'llama'.*qwen2_5_vl"):
        inspect_model(str(tmp_path / "llama"))


@pytest.mark.skipif(vllm_available(), reason="vllm is installed; the missing-package error cannot happen")
def test_vllm_missing_gives_install_hint():
    with pytest.raises(CaptionBackendUnavailable, match=r"pip install kvid\[vllm\]"):
        load_backend(tiny_model("qwen2_5_vl"), device="cuda", backend="vllm")
    # "auto" never picks a backend that is not installed
    b = load_backend(tiny_model("qwen2_vl"), device="cpu", backend="auto")
    assert isinstance(b, backends.TransformersBackend)


@pytest.mark.skipif(not vllm_available(), reason="vllm not installed (pip install kvid[vllm])")
def test_vllm_backend_generates():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA GPU")
    b = load_backend(tiny_model("qwen2_5_vl"), device="cuda", backend="vllm", max_model_len=4096,
                     gpu_memory_utilization=0.3)
    clips = _clips(("a3", "b25"), n=8)
    out = b.generate(clips, "Describe it.", max_new_tokens=8)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    assert b.last_num_output_tokens > 0


def test_smolvlm_without_num2words_says_what_to_install():
    import importlib.util

    if importlib.util.find_spec("num2words") is not None:
        pytest.skip("num2words is installed")
    with pytest.raises(CaptionModelError, match="pip install num2words"):
        load_backend(tiny_model("smolvlm"), device="cpu")


def test_dtype_resolution():
    import torch

    assert backends._resolve_dtype(None, "cuda") is torch.bfloat16
    assert backends._resolve_dtype(None, "cpu") is torch.float32
    assert backends._resolve_dtype("bf16", "cpu") is torch.bfloat16
    with pytest.raises(ValueError):
        backends._resolve_dtype("int3", "cpu")
