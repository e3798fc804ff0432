"""Shared helpers for the generate tests: official key names, tiny pipelines, a fake curated set.

The official state-dict key names are produced here by an independent enumeration written from
the layout of the public ``kandinsky_video`` code (module attribute paths), not from our
modules, so comparing the two catches a renamed or misplaced layer.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=False)
def one_thread():
    """Tiny models run faster single-threaded (and the CI box is shared); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------------------------
# official key names


def _emb(p):
    return [f"{p}.1.weight", f"{p}.1.bias", f"{p}.3.weight", f"{p}.3.bias"]


def _attn(p):
    return [f"{p}.{n}.weight" for n in ("to_query", "to_key", "to_value", "output_layer")]


def _cnorm(p):
    return [f"{p}.context_mlp.1.weight", f"{p}.context_mlp.1.bias"]


def _wb(p):
    return [f"{p}.weight", f"{p}.bias"]


def _attention_block(p):
    return _cnorm(f"{p}.in_norm") + _attn(f"{p}.attention") + _cnorm(f"{p}.out_norm") + [
        f"{p}.feed_forward.0.weight", f"{p}.feed_forward.2.weight"]


def _t2v_temporal_attention_block(p):
    return _cnorm(f"{p}.temporal_norm") + _attn(f"{p}.temporal_attention") + _cnorm(f"{p}.ff_norm") + [
        f"{p}.feed_forward.0.weight", f"{p}.feed_forward.2.weight"]


def _interp_temporal_attention_block(p):
    return _attention_block(p) + [f"{p}.temporal_merge1", f"{p}.temporal_merge2"]


def _resnet(p, cin, cout, up=None, interp=False):
    """up: None, True (upsample in block 1) or False (downsample in block 2)."""
    keys = []
    for b in range(4):
        q = f"{p}.resnet_blocks.{b}"
        keys += _cnorm(f"{q}.group_norm") + _wb(f"{q}.projection")
        if up is True and b == 1:
            keys += _wb(f"{q}.up_sample")
        if up is False and b == 2:
            keys += _wb(f"{q}.down_sample")
        if interp:
            keys += [f"{q}.temporal_projection_new.temporal_merge"] + _wb(f"{q}.temporal_projection_new.temporal_projection")
    if up is True:
        keys += _wb(f"{p}.shortcut_up_sample")
    if cin != cout:
        keys += _wb(f"{p}.shortcut_projection")
    if up is False:
        keys += _wb(f"{p}.shortcut_down_sample")
    return keys


def _temporal_resnet(p):
    keys = []
    for b in range(4):
        keys += _cnorm(f"{p}.temporal_resnet_blocks.{b}.0") + _wb(f"{p}.temporal_resnet_blocks.{b}.2")
    return keys


def official_unet_keys(cfg, interp: bool = False) -> set[str]:
    """Key names of the official t2v ``UNet`` (interp=False) or interpolation ``UNet`` for a config."""
    init = cfg.init_channels or cfg.model_channels
    dims = [init] + [cfg.model_channels * m for m in cfg.dim_mult]
    n = len(cfg.dim_mult)
    keys = _emb("to_time_embed") + _attn("feature_pooling.attention") + _wb("in_layer")
    if interp:
        keys += _emb("perturbation_to_time_embed") + ["time_embed_merge", "skip_merge", "skip_embeddings.weight"]
    else:
        keys += _emb("to_temporal_embed") + _wb("image_in_layer")
        keys += _emb("temporal_noise_aug_time_encoding") + _emb("temporal_motion_score_encoding")
    tattn = _interp_temporal_attention_block if interp else _t2v_temporal_attention_block
    cat = []
    for i in range(n):  # down
        cin, cout = dims[i], dims[i + 1]
        cat.append(0 if i == n - 1 else cout)
        p = f"down_samples.{i}"
        if cfg.add_self_attention[i]:
            keys += _attention_block(f"{p}.self_attention_block") + tattn(f"{p}.temporal_attention_block")
        for j in range(cfg.num_blocks[i]):
            q = f"{p}.resnet_attn_blocks.{j}"
            a = cin if j == 0 else cout
            keys += _resnet(f"{q}.0", a, cout, interp=interp)
            if cfg.add_cross_attention[i]:
                keys += _attention_block(f"{q}.1")
            down = False if (j == cfg.num_blocks[i] - 1 and i != n - 1) else None
            keys += _resnet(f"{q}.2", cout, cout, down, interp=interp)
            if not interp:
                keys += _temporal_resnet(f"{q}.3") + _temporal_resnet(f"{q}.4")
    for k in range(n):  # up, deepest level first
        i = n - 1 - k
        cin_level, cout_level = dims[i + 1], dims[i]
        c = cat.pop()
        p = f"up_samples.{k}"
        nb = cfg.num_blocks[i]
        for j in range(nb):
            q = f"{p}.resnet_attn_blocks.{j}"
            a = cin_level + c if j == 0 else cin_level
            b = cout_level if j == nb - 1 else cin_level
            keys += _resnet(f"{q}.0", a, a, True if (j == 0 and k != 0) else None, interp=interp)
            if cfg.add_cross_attention[i]:
                keys += _attention_block(f"{q}.1")
            keys += _resnet(f"{q}.2", a, b, interp=interp)
            if not interp:
                keys += _temporal_resnet(f"{q}.3") + _temporal_resnet(f"{q}.4")
        if cfg.add_self_attention[i]:
            keys += tattn(f"{p}.temporal_attention_block") + _attention_block(f"{p}.self_attention_block")
    keys += _wb("out_layer.0") + _wb("out_layer.2")  # GroupNorm (affine) and conv
    return set(keys)


def _snorm(p, zq: bool):
    keys = _wb(f"{p}.norm_layer")
    if zq:
        keys += _wb(f"{p}.conv_y") + _wb(f"{p}.conv_b")
    return keys


def _movq_resnet(p, cin, cout, zq, temporal):
    keys = _snorm(f"{p}.norm1", zq) + _wb(f"{p}.conv1") + _snorm(f"{p}.norm2", zq) + _wb(f"{p}.conv2")
    if cin != cout:
        keys += _wb(f"{p}.nin_shortcut")
    if temporal:
        keys += [f"{p}.temporal_merge1", f"{p}.temporal_merge2"]
        keys += _wb(f"{p}.temporal_projection1") + _wb(f"{p}.temporal_projection2")
    return keys


def _movq_attn(p, zq):
    return _snorm(f"{p}.norm", zq) + sum((_wb(f"{p}.{n}") for n in ("q", "k", "v", "proj_out")), [])


def official_movq_keys(cfg, encoder: bool = True) -> set[str]:
    """Key names of the official ``MoVQ`` (``temporal`` + ``temporal_attention_block`` for the video one)."""
    keys = []
    n = len(cfg.ch_mult)
    if encoder:
        keys += _wb("encoder.conv_in")
        res, block_in = cfg.resolution, cfg.ch
        mult = (1,) + tuple(cfg.ch_mult)
        for i in range(n):
            block_in = cfg.ch * mult[i]
            out = cfg.ch * cfg.ch_mult[i]
            for j in range(cfg.num_res_blocks):
                keys += _movq_resnet(f"encoder.down.{i}.block.{j}", block_in, out, False, False)
                block_in = out
                if res in cfg.attn_resolutions:
                    keys += _movq_attn(f"encoder.down.{i}.attn.{j}", False)
            if i != n - 1:
                keys += _wb(f"encoder.down.{i}.downsample.conv")
                res //= 2
        keys += _movq_resnet("encoder.mid.block_1", block_in, block_in, False, False)
        keys += _movq_attn("encoder.mid.attn_1", False)
        keys += _movq_resnet("encoder.mid.block_2", block_in, block_in, False, False)
        keys += _wb("encoder.norm_out.norm_layer") + _wb("encoder.conv_out") + _wb("quant_conv")
    keys += _wb("post_quant_conv")
    t = cfg.temporal
    ta = cfg.temporal and cfg.temporal_attention_block
    block_in = cfg.ch * cfg.ch_mult[-1]
    res = cfg.resolution // 2 ** (n - 1)
    keys += _wb("decoder.conv_in")
    keys += _movq_resnet("decoder.mid.block_1", block_in, block_in, True, t)
    keys += _movq_attn("decoder.mid.attn_1", True)
    if ta:
        keys += _movq_attn("decoder.mid.temporal_attn_1", True)
    keys += _movq_resnet("decoder.mid.block_2", block_in, block_in, True, t)
    for i in reversed(range(n)):
        out = cfg.ch * cfg.ch_mult[i]
        for j in range(cfg.num_res_blocks + 1):
            keys += _movq_resnet(f"decoder.up.{i}.block.{j}", block_in, out, True, t)
            block_in = out
            if res in cfg.attn_resolutions:
                keys += _movq_attn(f"decoder.up.{i}.attn.{j}", True)
                if ta:
                    keys += _movq_attn(f"decoder.up.{i}.temporal_attn.{j}", True)
        if i != 0:
            keys += _wb(f"decoder.up.{i}.upsample.conv")
            res *= 2
    keys += _snorm("decoder.norm_out", True) + _wb("decoder.conv_out")
    return set(keys)


# --------------------------------------------------------------------------------------------
# tiny pipelines and files


def tiny_pipeline(seed: int = 0):
    from generate import KandinskyVideoPipeline

    return KandinskyVideoPipeline.from_random("tiny", seed=seed)


FAST = dict(num_inference_steps=2, interpolation_steps=1, progress=False)


def write_official_folder(pipe, folder: Path, flicker: bool = True) -> Path:
    """Write ``pipe``'s weights in the official file layout (pickles, official key names)."""
    folder.mkdir(parents=True, exist_ok=True)

    def unet_file(m):
        sd = {k: v.clone() for k, v in m.state_dict().items() if k != "null_embedding"}
        return {"unet": sd, "null_embedding": m.null_embedding.clone()[None]}

    torch.save(unet_file(pipe.unet), folder / "t2v.pt")
    torch.save(unet_file(pipe.interpolation_unet), folder / "interpolation.pt")
    proj = {k: v.clone() for k, v in pipe.text_encoder.projection.state_dict().items()}
    torch.save({"projection_base": proj, "projection_interpolation": {k: v + 1 for k, v in proj.items()}},
               folder / "t5_projections.pt")
    torch.save({k: v.clone() for k, v in pipe.movq.state_dict().items()}, folder / "movq.pt")
    video = {k: v.clone() for k, v in pipe.video_movq.state_dict().items()}
    # the official video_movq.pt is a full MoVQ: an (unused) encoder copy rides along
    video.update({k: v.clone() for k, v in pipe.movq.state_dict().items() if k.startswith(("encoder.", "quant_conv."))})
    if flicker:
        c = pipe.video_movq.config.ch * pipe.video_movq.config.ch_mult[-1]
        video["decoder.mid.block_1.temporal_flicker_proj.weight"] = torch.zeros(c, 1)
        video["decoder.mid.block_1.temporal_flicker_proj.bias"] = torch.zeros(c)
    torch.save(video, folder / "video_movq.pt")
    cfg = pipe.config
    official_movq = lambda m: {k: v for k, v in m.to_dict().items() if k not in ("with_encoder", "attn_norm_uses_first_latent")}  # noqa: E731
    configs = {
        "t2v": {"configs": cfg.unet.to_dict()},
        "interpolation": {"configs": cfg.interpolation_unet.to_dict()},
        "image_movq": {"configs": {**official_movq(cfg.movq), "dropout": 0.0}},
        "video_movq": {"configs": {**official_movq(cfg.video_movq), "dropout": 0.0, "flicker_augmentation": flicker}},
        "text_encoder": {"weights_path": "unused", "tokens_length": cfg.text_encoder.tokens_length,
                         "context_dim": cfg.text_encoder.context_dim},
    }
    (folder / "configs.json").write_text(json.dumps(configs))
    return folder


def save_text_encoder(pipe, folder: Path) -> Path:
    pipe.text_encoder.encoder.save_pretrained(folder)
    pipe.text_encoder.tokenizer.save_pretrained(folder)
    return folder


def make_fake_curated(root: Path, captions: dict[str, str | None], size: str = "96x64") -> Path:
    """A curated folder written the way `kvid curate` writes one (curate.shards): one part
    with a tar of <id>.mp4/.json/.txt and its index, clips made with ffmpeg testsrc."""
    from curate import layout, shards
    from curate.schema import ClipRecord

    part = shards.PartWriter(str(root), layout.part_name(0))
    layout.ensure_layout(str(root))
    w, h = (int(v) for v in size.split("x"))
    for k, (clip_id, caption) in enumerate(captions.items()):
        mp4 = root / f"{clip_id}.mp4"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size={size}:rate=24:duration=0.5",
             "-vf", f"hue=h={40 * k}", "-pix_fmt", "yuv420p", "-c:v", "libx264", str(mp4)],
            check=True, stdin=subprocess.DEVNULL,
        )
        part.add(ClipRecord(clip_id=clip_id, caption=caption, fps=24.0, width=w, height=h, num_frames=12,
                            motion_score=1.5 + k), mp4.read_bytes())
        mp4.unlink()
    part.commit()
    return root
