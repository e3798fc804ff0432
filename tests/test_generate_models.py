"""Architecture of the generate components: sizes, official key names, conditioning, temporal mixing."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from generate_fixtures import official_movq_keys, official_unet_keys

from generate import (
    InterpolationUNet3D,
    InterpolationUNetConfig,
    KandinskyUNet3D,
    MoVQ,
    MoVQConfig,
    UNet3DConfig,
)
from generate.layers import conv_over_frames
from generate.loading import randomize_parameters_

pytestmark = pytest.mark.usefixtures("one_thread")


def _meta(klass, cfg):
    with torch.device("meta"):
        return klass(cfg)


def _count(module, pred=lambda name: True):
    return sum(p.numel() for n, p in module.named_parameters() if pred(n))


def test_full_size_parameter_counts_match_the_released_models():
    unet = _meta(KandinskyUNet3D, UNet3DConfig.kandinsky_video_1_1())
    assert _count(unet) == 4_149_077_956  # 4.149B
    assert _count(unet, lambda n: "temporal" in n) == 1_110_490_752  # 1.110B temporal
    assert _count(unet, lambda n: "temporal" not in n) == 3_038_587_204  # the Kandinsky 3 U-Net
    interp = _meta(InterpolationUNet3D, InterpolationUNetConfig.kandinsky_video_1_1())
    assert _count(interp) == 3_979_941_530  # 3.980B
    movq = _meta(MoVQ, MoVQConfig.image())
    assert _count(movq) == 270_603_567  # 270.6M
    video = _meta(MoVQ, MoVQConfig.video())
    assert _count(video.decoder) == 556_645_919  # 556.6M
    assert not hasattr(video, "encoder")  # decoding only


def test_full_size_state_dict_keys_are_the_official_ones():
    cases = [
        (KandinskyUNet3D, UNet3DConfig.kandinsky_video_1_1(), official_unet_keys(UNet3DConfig()) | {"null_embedding"}),
        (InterpolationUNet3D, InterpolationUNetConfig(), official_unet_keys(InterpolationUNetConfig(), interp=True)
         | {"null_embedding"}),
        (MoVQ, MoVQConfig.image(), official_movq_keys(MoVQConfig.image())),
        (MoVQ, MoVQConfig.video(), official_movq_keys(MoVQConfig.video(), encoder=False)),
        (MoVQ, MoVQConfig.video(with_encoder=True), official_movq_keys(MoVQConfig.video(), encoder=True)),
    ]
    for klass, cfg, official in cases:
        ours = set(_meta(klass, cfg).state_dict())
        assert ours == official, (klass.__name__, sorted(ours - official)[:5], sorted(official - ours)[:5])
    # spot checks of names quoted from the official checkpoints
    t2v = official_unet_keys(UNet3DConfig())
    for k in ("down_samples.1.resnet_attn_blocks.0.3.temporal_resnet_blocks.0.2.weight", "image_in_layer.weight",
              "to_temporal_embed.1.weight", "temporal_motion_score_encoding.3.bias"):
        assert k in t2v


@pytest.mark.parametrize("kernel", [(1, 1, 1), (3, 1, 1), (3, 3, 3), (5, 3, 3)])
def test_conv_over_frames_equals_conv3d(kernel):
    g = torch.Generator().manual_seed(0)
    b, t, c, o, h, w = 2, 5, 6, 4, 7, 9
    x = torch.randn(b * t, c, h, w, generator=g)
    weight = torch.randn(o, c, *kernel, generator=g)
    bias = torch.randn(o, generator=g)
    ref = F.conv3d(x.view(b, t, c, h, w).transpose(1, 2), weight, bias, padding=tuple(k // 2 for k in kernel))
    ref = ref.transpose(1, 2).reshape(b * t, o, h, w)
    torch.testing.assert_close(conv_over_frames(x, weight, bias, t), ref, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return randomize_parameters_(KandinskyUNet3D(UNet3DConfig.tiny()), seed=1).eval()


def _video_inputs(cfg, branches=1, t=4, hw=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(branches * t, cfg.num_channels, hw, hw, generator=g)
    ctx = torch.randn(branches, 5, cfg.context_dim, generator=g)
    mask = torch.ones(branches, 5, dtype=torch.bool)
    mask[:, 3:] = False
    return x, ctx, mask


@torch.no_grad()
def test_motion_and_noise_level_conditioning_change_the_unet_output(unet):
    x, ctx, mask = _video_inputs(unet.config)
    base = unet(x, 500.0, ctx, mask, num_frames=4, motion_score=3.0, noise_level=20)
    again = unet(x, 500.0, ctx, mask, num_frames=4, motion_score=3.0, noise_level=20)
    torch.testing.assert_close(base, again, atol=0, rtol=0)
    other_motion = unet(x, 500.0, ctx, mask, num_frames=4, motion_score=30.0, noise_level=20)
    other_noise = unet(x, 500.0, ctx, mask, num_frames=4, motion_score=3.0, noise_level=200)
    assert (base - other_motion).abs().max() > 1e-4
    assert (base - other_noise).abs().max() > 1e-4
    # image mode has no temporal modules: the conditioning does not exist there
    img = unet(x[:2], 500.0, ctx, mask)
    assert img.shape == (2, unet.config.out_channels, 8, 8)


@torch.no_grad()
def test_disabled_conditioning_is_an_error():
    m = KandinskyUNet3D(UNet3DConfig.tiny(motion_score=False))
    assert not hasattr(m, "temporal_motion_score_encoding")
    x, ctx, mask = _video_inputs(m.config)
    with pytest.raises(ValueError, match="motion-score"):
        m(x, 10.0, ctx, mask, num_frames=4, motion_score=1.0)


@torch.no_grad()
def test_frames_interact_in_video_mode_only(unet):
    x, ctx, mask = _video_inputs(unet.config)
    x2 = x.clone()
    x2[1] += 1.0  # change frame 1 only
    vid = unet(x, 300.0, ctx, mask, num_frames=4, motion_score=1.0, noise_level=20)
    vid2 = unet(x2, 300.0, ctx, mask, num_frames=4, motion_score=1.0, noise_level=20)
    assert (vid[0] - vid2[0]).abs().max() > 1e-5  # temporal layers carry the change to frame 0
    img = unet(x, 300.0, ctx.repeat_interleave(4, 0), mask.repeat_interleave(4, 0))
    img2 = unet(x2, 300.0, ctx.repeat_interleave(4, 0), mask.repeat_interleave(4, 0))
    torch.testing.assert_close(img[0], img2[0], atol=0, rtol=0)  # image mode: rows independent


@torch.no_grad()
def test_shared_context_equals_per_row_context(unet):
    """Keys/values computed once per branch == the official per-frame repetition of the text."""
    unet = copy.deepcopy(unet).double()  # float64: compare the maths, not the rounding
    x, ctx, mask = _video_inputs(unet.config, branches=3)
    x, ctx = x.double(), ctx.double()
    shared = unet(x, 700.0, ctx, mask, num_frames=4, motion_score=2.0, noise_level=20)
    per_row = unet(x, 700.0, ctx.repeat_interleave(4, 0), mask.repeat_interleave(4, 0), num_frames=4,
                   motion_score=2.0, noise_level=20)
    torch.testing.assert_close(shared, per_row, atol=1e-9, rtol=1e-9)
    # and each branch is independent of the others (no leakage across the batch)
    alone = unet(x[4:8], 700.0, ctx[1:2], mask[1:2], num_frames=4, motion_score=2.0, noise_level=20)
    torch.testing.assert_close(shared[4:8], alone, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("temporal_type", ["conv1d_attn1d_layers", "conv3d_layers"])
@torch.no_grad()
def test_temporal_layer_variants(temporal_type):
    torch.manual_seed(0)
    fresh = KandinskyUNet3D(UNet3DConfig.tiny(temporal_type=temporal_type)).eval()
    assert not any(".3.temporal_resnet_blocks" in k for k in fresh.state_dict())  # layers, not blocks
    assert any("temporal_layer" in k for k in fresh.state_dict())
    x, ctx, mask = _video_inputs(fresh.config)
    x2 = x.clone()
    x2[1] += 1.0
    # freshly initialised temporal layers are zero: frames do not interact yet
    a = fresh(x, 300.0, ctx, mask, num_frames=4, motion_score=1.0, noise_level=20)
    b = fresh(x2, 300.0, ctx, mask, num_frames=4, motion_score=1.0, noise_level=20)
    torch.testing.assert_close(a[0], b[0], atol=1e-6, rtol=0)
    trained = randomize_parameters_(fresh, seed=3)
    a = trained(x, 300.0, ctx, mask, num_frames=4, motion_score=1.0, noise_level=20)
    b = trained(x2, 300.0, ctx, mask, num_frames=4, motion_score=1.0, noise_level=20)
    assert (a[0] - b[0]).abs().max() > 1e-5


@torch.no_grad()
def test_interpolation_temporal_mask_switches_pair_mixing_off():
    torch.manual_seed(0)
    m = randomize_parameters_(InterpolationUNet3D(InterpolationUNetConfig.tiny()), seed=2).eval()
    g = torch.Generator().manual_seed(0)
    groups = 3
    x = torch.randn(groups, 20, 8, 8, generator=g)
    ctx = torch.randn(1, 4, m.config.context_dim, generator=g)
    mask = torch.ones(1, 4, dtype=torch.bool)
    x2 = x.clone()
    x2[1] += 1.0  # change the middle pair
    out = {}
    for name, tm in (("on", torch.ones(groups)), ("off", torch.zeros(groups))):
        a = m(x, 899.0, ctx, mask, num_groups=groups, skip_frames=3, temporal_mask=tm)
        b = m(x2, 899.0, ctx, mask, num_groups=groups, skip_frames=3, temporal_mask=tm)
        out[name] = (a[0] - b[0]).abs().max()
        assert a.shape == (groups, 12, 8, 8)
    assert out["on"] > 1e-5  # temporal layers mix neighbouring pairs
    assert out["off"] == 0  # masked rows behave as independent images
    s1 = m(x, 899.0, ctx, mask, num_groups=groups, skip_frames=3)
    s3 = m(x, 899.0, ctx, mask, num_groups=groups, skip_frames=1)
    assert (s1 - s3).abs().max() > 1e-5  # skip_frames embedding is used


@torch.no_grad()
def test_video_decoder_mixes_frames_image_decoder_does_not():
    torch.manual_seed(0)
    video = randomize_parameters_(MoVQ(MoVQConfig.tiny(temporal=True, temporal_attention_block=True,
                                                       with_encoder=False)), seed=1).eval()
    image = MoVQ(MoVQConfig.tiny()).eval()
    z = torch.randn(4, 4, 4, 4)
    z2 = z.clone()
    z2[2] += 1.0
    assert (video.decode(z)[0] - video.decode(z2)[0]).abs().max() > 1e-5
    torch.testing.assert_close(image.decode(z)[0], image.decode(z2)[0], atol=0, rtol=0)
    assert image.decode(z).shape == (4, 3, 32, 32)
    lat = image.encode(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert lat.shape == (2, 4, 4, 4)
    with pytest.raises(RuntimeError, match="without an encoder"):
        video.encode(torch.zeros(1, 3, 32, 32))


@torch.no_grad()
def test_random_materialisation_of_a_meta_model_runs():
    """The path the full-size benchmark takes: build on meta, allocate on the device, random init."""
    from generate.loading import _materialize_random_

    with torch.device("meta"):
        m = KandinskyUNet3D(UNet3DConfig.tiny())
    m = _materialize_random_(m, torch.device("cpu"), torch.float32, seed=0).eval()
    assert not any(p.is_meta for p in m.parameters())
    x, ctx, mask = _video_inputs(m.config)
    out = m(x, 10.0, ctx, mask, num_frames=4, motion_score=1.0, noise_level=20)
    assert torch.isfinite(out).all()
