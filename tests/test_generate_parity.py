"""Parity with the official Kandinsky Video 1.1 code, on figures the official code computed.

``tests/fixtures/kv11_parity`` is an official-layout weights folder (``configs.json`` in the
official format, the five weight files as safetensors) for a tiny config with random weights,
plus ``cases.safetensors``: inputs and the official outputs of every model forward and of one
guided sampling step of each stage. Its README says how it was made (official commit, config,
seeds). Here the folder is loaded with our official loader, strictly, and our modules must
reproduce the official figures; the official code itself is not part of this repository.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from generate import KandinskyVideoPipeline
from generate.scheduler import DDPMScheduler
from generate.text_encoder import PromptEmbeds

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURE = Path(__file__).parent / "fixtures" / "kv11_parity"
# Both sides run these tiny networks in float32 on a CPU, on this machine and on the one that
# made the fixture, so they differ by rounding: the official einsum attention against our SDPA,
# other summation orders, other vector units. Each output sums reductions of at most ~1,000
# terms through ~20 layers; rounding errors of u = 6e-8 add like a random walk, to about
# 20 * sqrt(1000) * u ~ 4e-5 of the output's scale. Measured: 1-3e-6 of the largest |value|.
# The tolerance is 3e-5 of that scale: 10x what we measure, and 3,000x below what a planted bug
# gives (attention scaled by head_dim instead of its square root: 1e-1 and more).
RTOL = 3e-5


@pytest.fixture(scope="module")
def pipe():
    return KandinskyVideoPipeline.from_official(FIXTURE, load_text_encoder=False, dtype="fp32")


@pytest.fixture(scope="module")
def cases():
    return load_file(str(FIXTURE / "cases.safetensors"))


@pytest.fixture(scope="module")
def meta():
    with safe_open(str(FIXTURE / "cases.safetensors"), "pt") as f:
        m = f.metadata()
    return {**m, "rng_seeds": json.loads(m["rng_seeds"])}


def assert_matches(ours: torch.Tensor, official: torch.Tensor, what: str) -> None:
    assert ours.shape == official.shape, (what, ours.shape, official.shape)
    err = (ours.float() - official.float()).abs().max().item()
    scale = official.float().abs().max().item()
    assert err <= RTOL * scale, f"{what}: max |ours - official| = {err:.3g}, {err / scale:.2g} of the largest |value|" \
        f" (tolerance {RTOL:g} of it)"


@torch.no_grad()
def test_keyframe_unet3d_forward_with_motion_and_noise_level(pipe, cases):
    c = {k.split(".", 1)[1]: v for k, v in cases.items() if k.startswith("unet_video.")}
    out = pipe.unet(
        c["x"], c["t"], c["context"], c["mask"], num_frames=6, frame_index=c["frame_index"],
        motion_score=c["motion_score"], noise_level=c["noise_level"],
    )
    assert_matches(out, c["out"], "keyframe U-Net3D")


@torch.no_grad()
def test_first_frame_unet_forward_image_mode(pipe, cases):
    c = {k.split(".", 1)[1]: v for k, v in cases.items() if k.startswith("unet_image.")}
    assert_matches(pipe.unet(c["x"], c["t"], c["context"], c["mask"]), c["out"], "image-mode U-Net")


@torch.no_grad()
def test_interpolation_unet_forward(pipe, cases):
    c = {k.split(".", 1)[1]: v for k, v in cases.items() if k.startswith("interp.")}
    out = pipe.interpolation_unet(
        c["x"], c["t"], c["context"], c["mask"], num_groups=3, skip_frames=c["skip_frames"], perturbation_time=0.0,
        temporal_mask=c["temporal_mask"],
    )
    assert_matches(out, c["out"], "interpolation U-Net")


@torch.no_grad()
def test_image_movq_encode_decode_and_video_movq_decode(pipe, cases):
    assert_matches(pipe.movq.encode(cases["movq.image"]), cases["movq.encoded"], "image MoVQ encode")
    assert_matches(pipe.movq.decode(cases["movq.latent"]), cases["movq.decoded"], "image MoVQ decode")
    assert_matches(pipe.video_movq.decode(cases["video_movq.latent"]), cases["video_movq.decoded"], "video MoVQ decode")


@pytest.fixture
def one_step(monkeypatch):
    """Make the pipeline's loops run a single step of the official schedule: step ``index``.

    The official figures were made the same way (the official sampler keeps one timestep), so
    the noise drawn for x_T and for the step follow the same seed in both.
    """

    def run_only(index: int) -> None:
        full = DDPMScheduler.with_steps

        def with_steps(self, num_inference_steps):
            s = full(self, num_inference_steps)
            s.timesteps, s._coeffs = s.timesteps[index:index + 1], s._coeffs[index:index + 1]
            return s

        monkeypatch.setattr(DDPMScheduler, "with_steps", with_steps)

    return run_only


def _embeds(cases, stage):
    return PromptEmbeds(cases[f"{stage}.context"], cases[f"{stage}.mask"])


@torch.no_grad()
def test_one_guided_first_frame_step(pipe, cases, meta, one_step):
    one_step(int(meta["step_keyframes_index"]))
    g = torch.Generator().manual_seed(meta["rng_seeds"]["first_frame"])
    # latent 16x16 = twice the 8x8 video latent; the fixture MoVQ downsamples by 2
    latent = pipe.generate_first_frame_latent(_embeds(cases, "step_first_frame"), None, 16, 16, 5.0, 50, g, False)
    assert_matches(latent, cases["step_first_frame.out"], "first-frame step (guidance 5)")


@torch.no_grad()
def test_one_guided_keyframes_step(pipe, cases, meta, one_step):
    one_step(int(meta["step_keyframes_index"]))
    g = torch.Generator().manual_seed(meta["rng_seeds"]["keyframes"])
    latents = pipe.generate_keyframes(
        cases["step_keyframes.key_frame"], _embeds(cases, "step_keyframes"), None, motion_score=10,
        noise_augmentation=20, guidance_weight_prompt=5.0, guidance_weight_image=2.0, num_inference_steps=50,
        generator=g, progress=False,
    )
    assert_matches(latents, cases["step_keyframes.out"], "keyframes step (weights prompt 5, image 2)")


@torch.no_grad()
def test_one_guided_interpolation_step(pipe, cases, meta, one_step):
    one_step(int(meta["step_interpolation_index"]))
    g = torch.Generator().manual_seed(meta["rng_seeds"]["interpolation"])
    keyframes = cases["step_interpolation.keyframes"]
    video = pipe.interpolate(keyframes, _embeds(cases, "step_interpolation"), None, skip_frames=3,
                             guidance_scale=0.5, num_inference_steps=10, generator=g, progress=False)
    assert torch.equal(video[0::4], keyframes)
    official = cases["step_interpolation.out"].view(3, 3, 4, 8, 8)  # (pairs, 3 frames, c, h, w)
    ours = torch.stack([video[k + 1::4] for k in range(3)], dim=1)
    assert_matches(ours, official, "interpolation step (guidance 0.5)")


def test_tokenizer_ids_equal_the_official_slow_t5_tokenizer():
    """The official code tokenizes with the slow (sentencepiece) ``T5Tokenizer``; transformers 5 has
    only the fast one, which ``AutoTokenizer`` gives us. On a tiny T5-style sentencepiece model
    (trained offline, nmt_nfkc normalisation like T5's) the ids and masks of our tokenisation equal
    the slow tokenizer's, called exactly as the official ``T5TextConditionProcessor`` does."""
    from transformers import AutoTokenizer

    from generate.text_encoder import KandinskyTextEncoder, TextEncoderConfig

    folder = FIXTURE / "tokenizer"
    expected = json.loads((folder / "expected_ids.json").read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))  # as KandinskyTextEncoder.from_pretrained loads it
    te = KandinskyTextEncoder(torch.nn.Identity(), tokenizer, TextEncoderConfig(tokens_length=128, context_dim=16), 8)
    cases = expected["cases"]
    ids, mask = te.tokenize([c["prompt"] for c in cases])
    for i, c in enumerate(cases):
        assert ids[i].tolist() == c["input_ids"], repr(c["prompt"][:60])
        assert mask[i].tolist() == c["attention_mask"], repr(c["prompt"][:60])
    # the set covers what it claims: unknown characters, a prompt cut at 128 tokens (ending with </s>)
    assert any(2 in c["input_ids"] for c in cases)  # <unk>
    long = [c for c in cases if c["untruncated_tokens"] > 128]
    assert long and long[0]["num_tokens"] == 128 and long[0]["input_ids"][-1] == tokenizer.eos_token_id
