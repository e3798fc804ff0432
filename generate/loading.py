"""Building a pipeline: official checkpoints, our saved format, random weights; and saving it.

:class:`PipelineLoadingMixin` holds ``KandinskyVideoPipeline``'s constructors, diffusers style:
each classmethod builds the components and calls ``cls(...)``, so this module never imports
the pipeline. ``generate.pipeline`` exposes :meth:`~PipelineLoadingMixin.load` and
:meth:`~PipelineLoadingMixin.get_T2V_pipeline` as the functions ``load_pipeline`` and
``get_T2V_pipeline``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import save_file
from torch import nn

from curate.version import KVID_VERSION

from .checkpoints import (
    check_official_folder,
    load_checked,
    load_component,
    load_state_file,
    map_official_state_dict,
    read_official_configs,
    save_component,
)
from .config import DEFAULT_MOVQ_DTYPE, PipelineConfig, dtype_name, parse_dtype
from .interpolation import InterpolationUNet3D
from .motion_levels import MotionLevels, load_motion_levels
from .movq import MoVQ
from .text_encoder import (
    KandinskyTextEncoder,
    MissingWeightsError,
    flan_ul2_encoder_config,
    tiny_t5_encoder,
    tiny_tokenizer,
)
from .unet import KandinskyUNet3D

PIPELINE_FILE = "pipeline.json"

P = TypeVar("P", bound="PipelineLoadingMixin")


def randomize_parameters_(module: nn.Module, seed: int = 0, std: float = 0.05) -> nn.Module:
    """Give every zero-initialised parameter random values (tests/benchmarks with random weights).

    Upstream zero-initialises the temporal output convs, the conditional-norm MLPs and the merge
    scalars, which would make motion/noise/frame conditioning inert in a random model.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for _name, p in module.named_parameters():
            if p.is_meta or bool((p != 0).any()):
                continue
            if p.numel() == 1:  # merge scalars
                p.copy_(torch.rand(p.shape, generator=g) * 0.4 + 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def _materialize_random_(module: nn.Module, device: torch.device, dtype: torch.dtype, seed: int) -> nn.Module:
    """Meta-built module -> random weights directly on ``device`` (no host copy of a multi-GB model)."""
    module.to_empty(device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if t.dim() >= 2:
                fan_in = t[0].numel()
                t.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=g)
            elif name.endswith("merge") or "merge" in name.split(".")[-1]:
                t.fill_(0.3)
            elif name.endswith("weight") and "norm" in name:
                t.fill_(1.0)
            else:
                t.normal_(0.0, 0.02, generator=g)
    return module.to(dtype=dtype)


class PipelineLoadingMixin:
    """``from_official``, ``from_pretrained``, ``from_random``, ``load``, ``get_T2V_pipeline`` and
    ``save_pretrained`` of ``KandinskyVideoPipeline``. The constructors call ``cls(text_encoder,
    unet, interpolation_unet, movq, video_movq, config=, motion_levels=)`` and then the
    placement methods (``to``, ``enable_offload``, ``compile``: generate/placement.py)."""

    text_encoder: KandinskyTextEncoder | None
    config: PipelineConfig
    motion_levels: MotionLevels
    device: torch.device
    source: dict[str, Any]

    @classmethod
    def from_official(
        cls: type[P],
        weights_dir: str | os.PathLike,
        text_encoder: str | os.PathLike | KandinskyTextEncoder | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        text_encoder_dtype: torch.dtype | str | None = None,
        movq_dtype: torch.dtype | str | None = None,
        offload: str = "none",
        motion_levels: str | os.PathLike | MotionLevels | None = None,
        load_text_encoder: bool = True,
    ) -> P:
        """Load the official checkpoints from a local folder (see :mod:`generate.checkpoints`).

        ``text_encoder``: hub id or local folder of the T5 encoder (default: the one named in
        ``configs.json``, else ``google/flan-ul2``), or a ready :class:`KandinskyTextEncoder`.
        """
        folder = Path(weights_dir)
        files = check_official_folder(folder)  # fail before anything heavy is read
        config = PipelineConfig.from_official(read_official_configs(folder))
        dt = parse_dtype(dtype)
        te = None
        if isinstance(text_encoder, KandinskyTextEncoder):
            te = text_encoder
        elif load_text_encoder:
            te = KandinskyTextEncoder.from_pretrained(
                text_encoder or config.text_encoder.pretrained,
                projections=load_state_file(files["text_projection"]),
                tokens_length=config.text_encoder.tokens_length,
                context_dim=config.text_encoder.context_dim,
                dtype=parse_dtype(text_encoder_dtype, dt),
            )
        modules: dict[str, nn.Module] = {}
        builders = {
            "unet": (KandinskyUNet3D, config.unet),
            "interpolation_unet": (InterpolationUNet3D, config.interpolation_unet),
            "movq": (MoVQ, config.movq),
            "video_movq": (MoVQ, config.video_movq),
        }
        for name, (klass, cfg) in builders.items():
            with torch.device("meta"):
                module = klass(cfg)
            state = map_official_state_dict(name, load_state_file(files[name]), module)
            load_checked(module, state, component=f"{name} ({files[name].name})")
            target = parse_dtype(movq_dtype, DEFAULT_MOVQ_DTYPE) if "movq" in name else dt
            modules[name] = module.to(dtype=target)
            del state
        pipe = cls(te, config=config, motion_levels=load_motion_levels(motion_levels), **modules)
        pipe.source = {"kind": "official", "path": str(folder)}
        pipe.device = torch.device(device)
        pipe.enable_offload(offload)
        return pipe

    @classmethod
    def from_pretrained(
        cls: type[P],
        folder: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        text_encoder_dtype: torch.dtype | str | None = None,
        movq_dtype: torch.dtype | str | None = None,
        offload: str = "none",
        motion_levels: str | os.PathLike | MotionLevels | None = None,
        load_text_encoder: bool = True,
    ) -> P:
        """Load a folder written by :meth:`save_pretrained` (exact round trip when dtype is None)."""
        folder = Path(folder)
        meta_path = folder / PIPELINE_FILE
        if not meta_path.is_file():
            raise MissingWeightsError(
                f"{folder} has no {PIPELINE_FILE}: not a pipeline saved by KandinskyVideoPipeline.save_pretrained. "
                "For the official checkpoints use from_official (t2v.pt, interpolation.pt, ...)."
            )
        meta = json.loads(meta_path.read_text())
        config = PipelineConfig.from_dict(meta["config"])
        modules = {
            "unet": load_component(folder / "unet", KandinskyUNet3D),
            "interpolation_unet": load_component(folder / "interpolation_unet", InterpolationUNet3D),
            "movq": load_component(folder / "movq", MoVQ),
            "video_movq": load_component(folder / "video_movq", MoVQ),
        }
        te = None
        if load_text_encoder:
            te = KandinskyTextEncoder.from_pretrained(
                folder / "text_encoder", projections=folder / "text_encoder",
                tokens_length=config.text_encoder.tokens_length, context_dim=config.text_encoder.context_dim,
                dtype=parse_dtype(meta.get("text_encoder_dtype"), torch.float32), local_files_only=True,
            )
        pipe = cls(te, config=config, motion_levels=load_motion_levels(motion_levels), **modules)
        pipe.source = {"kind": "kvid", "path": str(folder)}
        pipe.device = torch.device(device)
        if dtype is not None:
            pipe.to(dtype=dtype, text_encoder_dtype=text_encoder_dtype, movq_dtype=movq_dtype)
        pipe.enable_offload(offload)
        return pipe

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write our format: one sub-folder per component (config.json + model.safetensors),
        the text encoder through transformers ``save_pretrained`` plus ``projection.safetensors``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("unet", "interpolation_unet", "movq", "video_movq"):
            save_component(self.components[name], folder / name)
        te_dtype = None
        if self.text_encoder is not None:
            te_dir = folder / "text_encoder"
            self.text_encoder.encoder.save_pretrained(te_dir)
            self.text_encoder.tokenizer.save_pretrained(te_dir)
            proj = {k: v.detach().contiguous().cpu() for k, v in self.text_encoder.projection.state_dict().items()}
            save_file(proj, str(te_dir / "projection.safetensors"))
            te_dtype = dtype_name(self.text_encoder.dtype)
        meta = {
            "kvid_version": KVID_VERSION, "config": self.config.to_dict(), "text_encoder_dtype": te_dtype,
            "has_text_encoder": self.text_encoder is not None,
        }
        (folder / PIPELINE_FILE).write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def from_random(
        cls: type[P],
        size: str = "tiny",
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        with_text_encoder: bool = True,
    ) -> P:
        """Random weights, for tests (``tiny``) and speed/memory benchmarks (``full``: the released
        architecture, 4.1B + 4.0B U-Nets, and a Flan-UL2-shaped 8.6B text encoder). Outputs are noise."""
        dev, dt = torch.device(device), parse_dtype(dtype)
        if size == "tiny":
            config = PipelineConfig.tiny()
            torch_state = torch.random.get_rng_state()
            torch.manual_seed(seed)
            try:
                unet = randomize_parameters_(KandinskyUNet3D(config.unet), seed)
                interp = randomize_parameters_(InterpolationUNet3D(config.interpolation_unet), seed + 1)
                movq = randomize_parameters_(MoVQ(config.movq), seed + 2)
                video = randomize_parameters_(MoVQ(config.video_movq), seed + 3)
                with torch.no_grad():
                    unet.null_embedding.normal_()
                    interp.null_embedding.normal_()
                te = None
                if with_text_encoder:
                    enc = tiny_t5_encoder(d_model=16, seed=seed)
                    te = KandinskyTextEncoder(enc, tiny_tokenizer(), config.text_encoder)
                    randomize_parameters_(te.projection, seed + 4)
            finally:
                torch.random.set_rng_state(torch_state)
        elif size == "full":
            config = PipelineConfig.kandinsky_video_1_1()
            mods = []
            for i, (klass, cfg) in enumerate(
                [(KandinskyUNet3D, config.unet), (InterpolationUNet3D, config.interpolation_unet),
                 (MoVQ, config.movq), (MoVQ, config.video_movq)]
            ):
                with torch.device("meta"):
                    m = klass(cfg)
                mods.append(_materialize_random_(m, dev, dt, seed + i))
            unet, interp, movq, video = mods
            te = None
            if with_text_encoder:
                from transformers import T5EncoderModel  # deferred: transformers loads slowly, only `full` needs it

                with torch.device("meta"):
                    enc = T5EncoderModel(flan_ul2_encoder_config())
                _materialize_random_(enc, dev, dt, seed + 10)
                te = KandinskyTextEncoder(enc, tiny_tokenizer(), config.text_encoder, d_model=4096)
                te.projection.to(dev, dt)
        else:
            raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
        pipe = cls(te, unet, interp, movq, video, config=config)
        pipe.source = {"kind": "random", "size": size, "seed": seed}
        pipe.device = dev
        return pipe.to(dev, dt)

    @classmethod
    def load(
        cls: type[P],
        path: str | os.PathLike,
        *,
        text_encoder: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        offload: str = "none",
        motion_levels: str | os.PathLike | MotionLevels | None = None,
    ) -> P:
        """Load either our saved format (``pipeline.json``) or an official folder (``t2v.pt`` ...).

        ``path`` may also be ``random:tiny`` / ``random:full`` (random weights: smoke tests, benchmarks).
        """
        spec = str(path)
        if spec.startswith("random:"):
            pipe = cls.from_random(spec.split(":", 1)[1], device=device, dtype=dtype)
            pipe.motion_levels = load_motion_levels(motion_levels)
            return pipe.enable_offload(offload)
        p = Path(spec)
        if (p / PIPELINE_FILE).is_file():
            return cls.from_pretrained(
                p, device=device, dtype=dtype, offload=offload, motion_levels=motion_levels
            )
        return cls.from_official(
            p, text_encoder, device=device, dtype=dtype, offload=offload, motion_levels=motion_levels
        )

    @classmethod
    def get_T2V_pipeline(
        cls: type[P],
        device: str | torch.device = "cuda",
        dtype: torch.dtype | str = torch.bfloat16,
        weights_dir: str | os.PathLike | None = None,
        text_encoder: str | os.PathLike | None = None,
        *,
        offload: str | None = None,
        compile: bool = False,
        motion_levels: str | os.PathLike | MotionLevels | None = None,
    ) -> P:
        """Factory in the spirit of the official ``get_T2V_pipeline``, from a local folder.

        ``weights_dir`` defaults to ``$KVID_WEIGHTS``; it holds the official files (t2v.pt, ...)
        or a folder saved by ``save_pretrained``. On CUDA the text encoder waits on the CPU and
        visits the GPU only to encode (``offload="text_encoder"``); use ``offload="model"`` for
        smaller GPUs, ``"none"`` to keep everything resident.
        """
        weights_dir = weights_dir or os.environ.get("KVID_WEIGHTS")
        if not weights_dir:
            raise MissingWeightsError(
                "no weights folder: pass weights_dir= (or set KVID_WEIGHTS) to a folder with the official files "
                "t2v.pt, interpolation.pt, t5_projections.pt, movq.pt, video_movq.pt from ai-forever/KandinskyVideo_1_1"
            )
        dev = torch.device(device)
        if offload is None:
            offload = "text_encoder" if dev.type == "cuda" else "none"
        pipe = cls.load(
            weights_dir, text_encoder=text_encoder, device=dev, dtype=dtype, offload=offload, motion_levels=motion_levels
        )
        if compile:
            pipe.compile()
        return pipe
