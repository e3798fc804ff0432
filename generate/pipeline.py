"""Kandinsky Video 1.1 text-to-video / image-to-video pipeline (explicit denoising loops).

Stages (see docs/generate.md):

1. **text**: encode the prompt once (and the negative prompt if given); the encoder can then be
   offloaded or freed.
2. **first frame** (text-to-video only): the keyframe U-Net in image mode draws a latent at twice
   the video resolution, guidance ``(w+1) cond - w uncond``; decoded by the image MoVQ,
   resized to the video size and re-encoded. Image-to-video uses the given image instead.
3. **keyframes**: 12 latent frames conditioned on the (noise-augmented) first-frame latent, the
   motion score and the augmentation level. Guidance on text and first frame with the three
   branches ``[text+image, null+image, null+no image]`` batched in one forward:
   ``eps = u + w_I (e_I - u) + w_T (e_TI - e_I)``.
4. **interpolation**: 0, 1 or 2 passes (fps low / medium / high) predicting 3 frames between
   each pair of frames: 12 -> 45 -> 177 frames.
5. **decode**: temporal MoVQ decoder on chunks of frames, to uint8 RGB.

A branch whose guidance coefficient is 0 is not evaluated, so guidance weights of 1 (keyframes)
or 0 (first frame, interpolation) cost a single branch.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .config import FPS_PRESETS, PipelineConfig, num_video_frames
from .interpolation import InterpolationUNet3D
from .loading import PipelineLoadingMixin
from .motion_levels import MotionLevels, load_motion_levels, resolve_motion
from .movq import MoVQ
from .params import DEFAULTS
from .placement import PipelinePlacementMixin
from .scheduler import DDPMScheduler
from .text_encoder import KandinskyTextEncoder, PromptEmbeds, TextEncoderConfig
from .unet import KandinskyUNet3D
from .video_io import VideoOutput, decoded_to_pil, prepare_image


class _Timer:
    def __init__(self, device: torch.device):
        self.device = device
        self.stages: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, float]]:
        rec = self.stages.setdefault(name, {"seconds": 0.0, "unet_calls": 0, "unet_rows": 0})
        self._sync()
        t0 = time.perf_counter()
        try:
            yield rec
        finally:
            self._sync()
            rec["seconds"] += time.perf_counter() - t0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _progress(iterable, desc: str, enabled: bool, total: int | None = None):
    # disable=None: tqdm switches itself off when stderr is not a terminal
    return tqdm(iterable, desc=desc, total=total, disable=None if enabled else True, leave=False, dynamic_ncols=True)


@dataclass
class _Branch:
    """One term of classifier-free guidance: its weight, its text context, how the model's
    input is built from the current latent, and any per-branch model arguments."""

    weight: float
    context: PromptEmbeds
    input_of: Callable[[torch.Tensor], torch.Tensor]
    model_kwargs: dict[str, Any] = field(default_factory=dict)


class KandinskyVideoPipeline(PipelineLoadingMixin, PipelinePlacementMixin):
    """Kandinsky Video 1.1 inference. Build with :func:`get_T2V_pipeline`, :meth:`from_official`,
    :meth:`from_pretrained` or :meth:`from_random`; call with a prompt (and optionally an image)."""

    def __init__(
        self,
        text_encoder: KandinskyTextEncoder | None,
        unet: KandinskyUNet3D,
        interpolation_unet: InterpolationUNet3D,
        movq: MoVQ,
        video_movq: MoVQ,
        config: PipelineConfig | None = None,
        motion_levels: MotionLevels | None = None,
    ):
        self.text_encoder = text_encoder
        self.unet = unet.eval()
        self.interpolation_unet = interpolation_unet.eval()
        self.movq = movq.eval()
        self.video_movq = video_movq.eval()
        if text_encoder is not None:
            text_encoder.eval()
        self.config = config or PipelineConfig(
            unet=unet.config,
            interpolation_unet=interpolation_unet.config,
            movq=movq.config,
            video_movq=video_movq.config,
            text_encoder=text_encoder.config
            if text_encoder is not None
            else TextEncoderConfig(context_dim=unet.config.context_dim),
        )
        self.motion_levels = motion_levels or MotionLevels.official()
        self.device = unet.device if unet.device.type != "meta" else torch.device("cpu")
        self.offload = "none"
        self.batch_guidance = True
        self.decode_chunk_size: int | None = None  # None: the official rule, n // 4 chunks
        self.unet_autocast: torch.dtype | None = None  # see PipelinePlacementMixin
        self.source: dict[str, Any] = {}

    # ------------------------------------------------------------------ stages

    @property
    def size_multiple(self) -> int:
        return self.config.size_multiple

    def encode_prompt(self, prompts: str | Sequence[str], progress: bool = False) -> PromptEmbeds:
        """Encode prompts (once); returns embeddings on the execution device in fp32."""
        if self.text_encoder is None:
            raise RuntimeError(
                "the text encoder was released or not loaded: pass prompt_embeds=, or build the pipeline with a text encoder"
            )
        single = isinstance(prompts, str)
        with self._on_device("text_encoder") as te:
            bar = _progress(range(1), "text encode", progress)
            embeds = te.encode([prompts] if single else list(prompts))
            bar.update(1)
            bar.close()
        return embeds.to(self.device)

    def _null_context(self, like: PromptEmbeds, null_embedding: torch.Tensor) -> PromptEmbeds:
        ctx = torch.zeros_like(like.context)
        ctx[:, 0] = null_embedding.to(device=ctx.device, dtype=ctx.dtype)
        mask = torch.zeros_like(like.mask)
        mask[:, 0] = True
        return PromptEmbeds(ctx, mask)

    @staticmethod
    def _same_length(a: PromptEmbeds, b: PromptEmbeds) -> tuple[PromptEmbeds, PromptEmbeds]:
        """Pad two embeddings to a common length so that they can share one batch, without
        changing what the U-Nets compute for either.

        The added positions are masked out of every attention, but the attention-pooling query
        is the mean over the whole length, padding included (as upstream). Zeros would shrink
        that mean; the row's own mean leaves it unchanged: (sum + n * sum / L) / (L + n) = sum / L.
        """
        length = max(a.context.shape[1], b.context.shape[1])

        def pad(e: PromptEmbeds) -> PromptEmbeds:
            n = length - e.context.shape[1]
            if n == 0:
                return e
            fill = e.context.mean(dim=1, keepdim=True).expand(-1, n, -1)
            return PromptEmbeds(
                torch.cat([e.context, fill], dim=1), torch.nn.functional.pad(e.mask, (0, n), value=False)
            )

        return pad(a), pad(b)

    def _branch_contexts(
        self, embeds: PromptEmbeds, negative: PromptEmbeds | None, null_embedding: torch.Tensor
    ) -> tuple[PromptEmbeds, PromptEmbeds]:
        """(conditional, unconditional) text: the unconditional one is the negative prompt if
        given, else the learned null embedding in a zero context of the same length (official)."""
        if negative is None:
            return embeds, self._null_context(embeds, null_embedding)
        return self._same_length(embeds, negative)

    def _sample(
        self,
        stage: str,
        x: torch.Tensor,
        sched: DDPMScheduler,
        branches: list[_Branch],
        model: Callable[..., torch.Tensor],
        generator: torch.Generator,
        progress: bool,
        timer: _Timer | None,
    ) -> torch.Tensor:
        """The guided sampling loop every stage shares: at each timestep, ``model(input, t,
        context, mask, **kwargs)`` on each branch of non-zero weight, the weighted sum of the
        outputs, one scheduler step."""
        live = [b for b in branches if b.weight != 0]
        record = timer.stages.setdefault(stage, {}) if timer else {}
        for i, t in enumerate(_progress(sched.timesteps, stage.replace("_", " "), progress)):
            tt = _scalar(t, self.device)
            out = self._evaluate(
                lambda s, c, m, **kw: model(s, tt, c, m, **kw),  # noqa: B023 (called at once, in this step)
                [b.input_of(x) for b in live], [b.context for b in live], [b.weight for b in live],
                [b.model_kwargs for b in live], record=record,
            )
            x = sched.step(out, i, x, generator=generator)
        return x

    def _evaluate(
        self,
        model: Callable[..., torch.Tensor],
        inputs: list[torch.Tensor],
        contexts: list[PromptEmbeds],
        coefs: list[float],
        per_branch_kwargs: list[dict[str, Any]] | None = None,
        record: dict | None = None,
    ) -> torch.Tensor:
        """Run the model on every branch (batched in one forward unless ``batch_guidance`` is off)
        and return ``sum(coef_b * out_b)`` in fp32. Adds the U-Net calls and rows it ran to ``record``."""
        per = per_branch_kwargs or [{} for _ in inputs]
        acc = torch.promote_types(inputs[0].dtype, torch.float32)  # guidance maths in fp32 (or fp64)
        batched = self.batch_guidance and len(inputs) > 1
        _count(record, sum(x.shape[0] for x in inputs), 1 if batched else len(inputs))
        with self._unet_precision():
            if batched:
                merged = {k: torch.cat([p[k] for p in per]) for k in per[0]}
                ctx = torch.cat([c.context for c in contexts])
                mask = torch.cat([c.mask for c in contexts])
                out = model(torch.cat(inputs), ctx, mask, **merged).to(acc)
                outs = out.chunk(len(inputs))
            else:
                outs = [model(x, c.context, c.mask, **p).to(acc) for x, c, p in zip(inputs, contexts, per)]
        result = coefs[0] * outs[0]
        for c, o in zip(coefs[1:], outs[1:]):
            result = result + c * o
        return result

    def generate_first_frame_latent(
        self,
        embeds: PromptEmbeds,
        negative: PromptEmbeds | None,
        width: int,
        height: int,
        guidance_scale: float,
        num_inference_steps: int,
        generator: torch.Generator,
        progress: bool = True,
        timer: _Timer | None = None,
    ) -> torch.Tensor:
        """Text-to-image with the keyframe U-Net in image mode, at twice the video size -> latent."""
        f = self.movq.config.downsample_factor
        shape = (1, self.unet.config.out_channels, 2 * height // f, 2 * width // f)
        sched = DDPMScheduler(self.config.keyframe_scheduler).with_steps(num_inference_steps)
        with self._on_device("unet") as unet:
            dev = self.device
            x = torch.randn(shape, generator=generator, device=dev)
            cond, uncond = self._branch_contexts(embeds, negative, unet.null_embedding)
            static = torch.zeros(1, unet.config.num_channels - shape[1], *shape[2:], device=dev)
            w = float(guidance_scale)
            # (w + 1) cond - w uncond; w = 0 needs the conditional branch only
            inp = lambda x: torch.cat([x, static], dim=1)  # noqa: E731
            branches = [_Branch(w + 1.0, cond, inp), _Branch(-w, uncond, inp)]
            x = self._sample("first_frame", x, sched, branches, unet, generator, progress, timer)
        return x

    def decode_image(self, latent: torch.Tensor) -> Image.Image:
        """Image MoVQ decode of one latent -> PIL (clip, x255, truncate, as upstream)."""
        with self._on_device("movq") as movq:
            img = movq.decode(latent.to(self.device)).float()
        return decoded_to_pil(img[0])

    def generate_first_frame(self, embeds, negative, width, height, guidance_scale, num_inference_steps, generator,
                             progress: bool = True, timer: _Timer | None = None) -> Image.Image:
        """Text-to-image first frame as a PIL image at twice the video size."""
        latent = self.generate_first_frame_latent(
            embeds, negative, width, height, guidance_scale, num_inference_steps, generator, progress, timer
        )
        return self.decode_image(latent)

    def encode_image(self, image: Image.Image | np.ndarray | str | os.PathLike, width: int, height: int) -> torch.Tensor:
        """Resize to cover (width, height), centre-crop, encode with the image MoVQ -> (1, 4, h, w) fp32."""
        pil = prepare_image(image, width, height)
        arr = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        with self._on_device("movq") as movq:
            latent = movq.encode((2.0 * arr - 1.0).to(self.device))
        return latent.float()

    def generate_keyframes(
        self,
        first_frame_latent: torch.Tensor,
        embeds: PromptEmbeds,
        negative: PromptEmbeds | None,
        motion_score: float,
        noise_augmentation: int,
        guidance_weight_prompt: float,
        guidance_weight_image: float,
        num_inference_steps: int,
        generator: torch.Generator,
        progress: bool = True,
        timer: _Timer | None = None,
    ) -> torch.Tensor:
        """12 keyframe latents (T, 4, h, w) conditioned on the first frame, motion and noise level."""
        T = self.config.num_keyframes
        sched = DDPMScheduler(self.config.keyframe_scheduler).with_steps(num_inference_steps)
        dev = self.device
        _, c, h, w = first_frame_latent.shape
        with self._on_device("unet") as unet:
            x = torch.randn((T, c, h, w), generator=generator, device=dev)
            kf = first_frame_latent.to(dev)
            aug = torch.rand(kf.shape, generator=generator, device=dev)  # uniform noise, as published
            kf = sched.add_noise(kf, aug, int(noise_augmentation))
            image_cond = torch.zeros(T, c + 1, h, w, device=dev)
            image_cond[0, :c] = kf[0]
            image_cond[0, c] = 1.0
            no_image = torch.zeros_like(image_cond)
            text, null = self._branch_contexts(embeds, negative, unet.null_embedding)
            w_t, w_i = float(guidance_weight_prompt), float(guidance_weight_image)
            with_image = lambda x: torch.cat([x, image_cond], dim=1)  # noqa: E731
            without_image = lambda x: torch.cat([x, no_image], dim=1)  # noqa: E731
            # eps = (1 - w_I) u + (w_I - w_T) e_I + w_T e_TI
            branches = [_Branch(w_t, text, with_image), _Branch(w_i - w_t, null, with_image),
                        _Branch(1.0 - w_i, null, without_image)]
            motion = _scalar(motion_score, dev) if unet.config.motion_score else None
            level = _scalar(noise_augmentation, dev) if unet.config.noise_augmentation else None

            def model(s, t, c, m):
                return unet(s, t, c, m, num_frames=T, motion_score=motion, noise_level=level)

            x = self._sample("keyframes", x, sched, branches, model, generator, progress, timer)
        return x

    def interpolate(
        self,
        frames: torch.Tensor,
        embeds: PromptEmbeds,
        negative: PromptEmbeds | None,
        skip_frames: int,
        guidance_scale: float,
        num_inference_steps: int,
        generator: torch.Generator,
        progress: bool = True,
        timer: _Timer | None = None,
        stage: str = "interpolation",
    ) -> torch.Tensor:
        """(N, 4, h, w) -> (4N - 3, 4, h, w): 3 new frames between each pair."""
        n, c, h, w = frames.shape
        groups = n - 1
        sched = DDPMScheduler(self.config.interpolation_scheduler).with_steps(num_inference_steps)
        dev = self.device
        with self._on_device("interpolation_unet") as iunet:
            out_ch = iunet.config.out_channels
            x = torch.randn((groups, out_ch, h, w), generator=generator, device=dev)
            frames = frames.to(dev)
            left, right = frames[:-1], frames[1:]
            text, null = self._branch_contexts(embeds, negative, iunet.null_embedding)
            g = float(guidance_scale)
            blank_left, blank_right = torch.zeros_like(left), torch.zeros_like(right)
            # (g + 1) with the neighbouring keyframes and the text - g with neither
            branches = [
                _Branch(g + 1.0, text, lambda x: torch.cat([left, x, right], dim=1),
                        {"temporal_mask": torch.ones(groups, device=dev)}),
                _Branch(-g, null, lambda x: torch.cat([blank_left, x, blank_right], dim=1),
                        {"temporal_mask": torch.zeros(groups, device=dev)}),
            ]
            skip, perturbation = _scalar(skip_frames, dev), _scalar(0.0, dev)

            def model(s, t, c, m, temporal_mask):
                return iunet(s, t, c, m, num_groups=groups, skip_frames=skip, perturbation_time=perturbation,
                             temporal_mask=temporal_mask)

            x = self._sample(stage, x, sched, branches, model, generator, progress, timer)
        new = x.view(groups, out_ch // c, c, h, w)
        video = torch.empty(4 * n - 3, c, h, w, device=dev, dtype=x.dtype)
        video[0::4] = frames.to(x.dtype)
        for k in range(out_ch // c):
            video[k + 1::4] = new[:, k]
        return video

    def decode(self, latents: torch.Tensor, progress: bool = True) -> np.ndarray:
        """Video MoVQ decode in temporal chunks -> (T, H, W, 3) uint8 on the host.

        Chunking (``decode_chunk_size``) bounds memory; the default follows the official code
        (``n // 4`` chunks, i.e. 4-5 frames each). Temporal layers see one chunk at a time.
        """
        n = latents.shape[0]
        if self.decode_chunk_size:
            chunks = latents.split(self.decode_chunk_size)
        else:
            chunks = latents.chunk(max(1, n // 4))
        out = []
        with self._on_device("video_movq") as vmovq:
            for chunk in _progress(chunks, "decode", progress):
                img = vmovq.decode(chunk.to(self.device)).float()
                img = ((img + 1.0) / 2.0).clamp(0.0, 1.0)
                # official: ToPILImage on floats -> mul(255).byte() (truncation)
                out.append(img.mul(255).to(torch.uint8).permute(0, 2, 3, 1).cpu())
        return torch.cat(out).numpy()

    # ------------------------------------------------------------------ call

    def check_inputs(self, width: int, height: int, fps: str, num_inference_steps: int, interpolation_steps: int) -> None:
        m = self.size_multiple
        if width <= 0 or height <= 0 or width % m or height % m:
            raise ValueError(f"width and height must be positive multiples of {m}, got {width}x{height}")
        if fps not in FPS_PRESETS:
            raise ValueError(f"fps must be one of {list(FPS_PRESETS)}, got {fps!r}")
        if num_inference_steps < 1 or interpolation_steps < 1:
            raise ValueError("num_inference_steps and interpolation_steps must be >= 1")

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | None = None,
        negative_prompt: str | None = DEFAULTS.negative_prompt,
        image: Image.Image | np.ndarray | str | os.PathLike | None = None,
        width: int = DEFAULTS.width,
        height: int = DEFAULTS.height,
        fps: str = DEFAULTS.fps,
        motion: str | float = DEFAULTS.motion,
        key_frame_guidance_scale: float = DEFAULTS.key_frame_guidance_scale,
        guidance_weight_prompt: float = DEFAULTS.guidance_weight_prompt,
        guidance_weight_image: float = DEFAULTS.guidance_weight_image,
        interpolation_guidance_scale: float = DEFAULTS.interpolation_guidance_scale,
        noise_augmentation: int = DEFAULTS.noise_augmentation,
        num_inference_steps: int = DEFAULTS.num_inference_steps,
        interpolation_steps: int = DEFAULTS.interpolation_steps,
        seed: int | None = DEFAULTS.seed,
        generator: torch.Generator | None = None,
        motion_levels: str | os.PathLike | MotionLevels | None = None,
        prompt_embeds: PromptEmbeds | None = None,
        negative_prompt_embeds: PromptEmbeds | None = None,
        progress: bool = True,
    ) -> VideoOutput:
        """Generate a 5.5 s video. See the module docstring for the stages; the parameters with
        their defaults and help are :class:`generate.params.GenerationParams`.

        ``image`` (image-to-video) replaces the generated first frame. ``motion`` is a level name
        (through ``motion_levels``: a ``motion_levels.json`` or its folder; default: the pipeline's,
        else the official 1/10/50/100) or a number used as is. ``seed`` makes the run reproducible
        on a given device; without seed and generator a random seed is drawn and reported in
        ``info``. ``prompt_embeds`` skip the text encoder (see :meth:`encode_prompt`).
        """
        self.check_inputs(width, height, fps, num_inference_steps, interpolation_steps)
        if prompt is None and prompt_embeds is None:
            raise ValueError("give a prompt (or prompt_embeds)")
        levels = load_motion_levels(motion_levels) if motion_levels is not None else self.motion_levels
        motion_score = resolve_motion(motion, levels)
        if generator is None:
            seed = int(seed) if seed is not None else secrets.randbelow(2**31)
            generator = torch.Generator(device=self.device).manual_seed(seed)
        timer = _Timer(self.device)
        t_start = time.perf_counter()

        with timer.stage("text"):
            embeds = prompt_embeds.to(self.device) if prompt_embeds is not None else self.encode_prompt(prompt, progress)
            negative = None
            if negative_prompt_embeds is not None:
                negative = negative_prompt_embeds.to(self.device)
            elif negative_prompt:
                negative = self.encode_prompt(negative_prompt, progress)

        first_frame = None
        with timer.stage("first_frame"):
            if image is None:
                latent = self.generate_first_frame_latent(
                    embeds, negative, width, height, key_frame_guidance_scale, num_inference_steps, generator,
                    progress, timer,
                )
        with timer.stage("image_movq"):  # decode the drawn first frame (t2v), encode the conditioning image
            if image is None:
                first_frame = self.decode_image(latent)
            first_latent = self.encode_image(first_frame if image is None else image, width, height)

        with timer.stage("keyframes"):
            latents = self.generate_keyframes(
                first_latent, embeds, negative, motion_score, noise_augmentation, guidance_weight_prompt,
                guidance_weight_image, num_inference_steps, generator, progress, timer,
            )
        for k, skip in enumerate(FPS_PRESETS[fps]):
            name = f"interpolation_{k + 1}"
            with timer.stage(name):
                latents = self.interpolate(
                    latents, embeds, negative, skip, interpolation_guidance_scale, interpolation_steps, generator,
                    progress, timer, name,
                )
        with timer.stage("decode"):
            array = self.decode(latents, progress)

        expected = num_video_frames(fps, self.config.num_keyframes)
        assert array.shape[0] == expected, (array.shape, expected)
        info = {
            "seed": seed,
            "motion": motion,
            "motion_score": motion_score,
            "motion_levels": levels.describe(),
            "num_frames": int(array.shape[0]),
            "stages": timer.stages,
            "seconds_total": time.perf_counter() - t_start,
            "mode": "i2v" if image is not None else "t2v",
        }
        return VideoOutput(
            array=array, fps=array.shape[0] / self.config.video_seconds, fps_preset=fps, info=info,
            first_frame=first_frame,
        )


def _scalar(value: float, device: torch.device) -> torch.Tensor:
    """A (1,) fp32 tensor filled on the device (a fill kernel: no host-to-device copy, no sync).

    Passing tensors rather than Python numbers keeps torch.compile from specialising (and
    recompiling) on every timestep or motion value.
    """
    return torch.full((1,), float(value), device=device, dtype=torch.float32)


def _count(rec: dict | None, rows: int, calls: int) -> None:
    if rec is not None:
        rec["unet_rows"] = rec.get("unet_rows", 0) + rows
        rec["unet_calls"] = rec.get("unet_calls", 0) + calls


# The official API's factories, as functions (docs/generate.md): the pipeline's own constructors.
load_pipeline = KandinskyVideoPipeline.load
get_T2V_pipeline = KandinskyVideoPipeline.get_T2V_pipeline
