"""DDPM sampler with the settings of Kandinsky Video 1.1 (diffusers ``DDPMScheduler`` semantics).

Official settings (``kandinsky_video/model/diffusion.py``):

* first frame and keyframes: 1000 train steps, 50 inference steps, ``squaredcos_cap_v2`` betas
  rescaled to zero terminal SNR, epsilon prediction, ``leading`` spacing, thresholding
  (ratio 0.995, max 1.0: a clamp of x0 to [-1, 1]), variance ``fixed_small_log``;
* interpolation: 10 steps, v-prediction, ``trailing`` spacing, the rest the same.

The schedule is precomputed as Python floats when ``set_timesteps`` is called, so a step does
no indexing on device tensors and never synchronises the host with the GPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Literal

import torch


@dataclass(frozen=True)
class DDPMSchedulerConfig:
    num_train_timesteps: int = 1000
    beta_schedule: Literal["squaredcos_cap_v2", "linear"] = "squaredcos_cap_v2"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    rescale_betas_zero_snr: bool = True
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon"
    timestep_spacing: Literal["leading", "trailing", "linspace"] = "leading"
    steps_offset: int = 0
    thresholding: bool = True
    dynamic_thresholding_ratio: float = 0.995
    sample_max_value: float = 1.0
    variance_type: Literal["fixed_small_log", "fixed_small"] = "fixed_small_log"
    num_inference_steps: int = 50

    @classmethod
    def keyframes(cls, num_inference_steps: int = 50) -> DDPMSchedulerConfig:
        """First frame and keyframes."""
        return cls(num_inference_steps=num_inference_steps)

    @classmethod
    def interpolation(cls, num_inference_steps: int = 10) -> DDPMSchedulerConfig:
        return cls(prediction_type="v_prediction", timestep_spacing="trailing", num_inference_steps=num_inference_steps)

    def to_dict(self) -> dict:
        return asdict(self)


def _betas_squaredcos(n: int, max_beta: float = 0.999) -> torch.Tensor:
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)], dtype=torch.float32)


def _rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Algorithm 1 of Lin et al. 2023 (arXiv 2305.08891): shift/scale sqrt(alpha_bar) so its last value is 0."""
    alphas_bar_sqrt = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt -= last
    alphas_bar_sqrt *= first / (first - last)
    alphas_bar = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1 - alphas


class DDPMScheduler:
    """Ancestral DDPM sampler; ``step`` follows diffusers' ``DDPMScheduler.step`` exactly."""

    def __init__(self, config: DDPMSchedulerConfig | None = None):
        self.config = config or DDPMSchedulerConfig()
        c = self.config
        if c.beta_schedule == "squaredcos_cap_v2":
            betas = _betas_squaredcos(c.num_train_timesteps)
        elif c.beta_schedule == "linear":
            betas = torch.linspace(c.beta_start, c.beta_end, c.num_train_timesteps, dtype=torch.float32)
        else:
            raise ValueError(f"unsupported beta_schedule {c.beta_schedule!r}")
        if c.rescale_betas_zero_snr:
            betas = _rescale_zero_terminal_snr(betas)
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)  # fp32 as in diffusers
        self._acp = self.alphas_cumprod.tolist()
        self.timesteps: list[int] = []
        self.set_timesteps(c.num_inference_steps)

    def set_timesteps(self, num_inference_steps: int) -> None:
        c = self.config
        n_train = c.num_train_timesteps
        if not 1 <= num_inference_steps <= n_train:
            raise ValueError(f"num_inference_steps must be in [1, {n_train}], got {num_inference_steps}")
        if c.timestep_spacing == "leading":
            ratio = n_train // num_inference_steps
            ts = [i * ratio + c.steps_offset for i in range(num_inference_steps)][::-1]
        elif c.timestep_spacing == "trailing":
            ratio = n_train / num_inference_steps
            ts, v = [], float(n_train)
            while v > 0 and len(ts) < num_inference_steps:
                ts.append(int(round(v)) - 1)
                v -= ratio
        elif c.timestep_spacing == "linspace":
            ts = [round(i * (n_train - 1) / max(num_inference_steps - 1, 1)) for i in range(num_inference_steps)][::-1]
        else:
            raise ValueError(f"unsupported timestep_spacing {c.timestep_spacing!r}")
        self.num_inference_steps = num_inference_steps
        self.timesteps = [int(t) for t in ts]
        self._coeffs = [self._step_coefficients(i) for i in range(len(self.timesteps))]

    def _step_coefficients(self, index: int) -> dict[str, float]:
        # fp32 arithmetic on scalar tensors, like diffusers, then to Python floats
        t = self.timesteps[index]
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[self.timesteps[index + 1]] if index + 1 < len(self.timesteps) else torch.tensor(1.0)
        b_t, b_prev = 1 - a_t, 1 - a_prev
        cur_alpha = a_t / a_prev
        cur_beta = 1 - cur_alpha
        variance = torch.clamp((1 - a_prev) / (1 - a_t) * cur_beta, min=1e-20)
        if self.config.variance_type == "fixed_small_log":
            std = torch.exp(0.5 * torch.log(variance))
        else:
            std = variance**0.5
        return dict(
            t=float(t),
            sqrt_a=float(a_t**0.5),
            sqrt_b=float(b_t**0.5),
            x0_coeff=float(a_prev**0.5 * cur_beta / b_t),
            xt_coeff=float(cur_alpha**0.5 * b_prev / b_t),
            std=float(std) if t > 0 else 0.0,
        )

    def _threshold(self, x0: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.sample_max_value <= 1.0:  # quantile clamped to [1, max] = 1: a plain clamp
            return x0.clamp(-1.0, 1.0)
        flat = x0.reshape(x0.shape[0], -1).float()
        s = torch.quantile(flat.abs(), c.dynamic_thresholding_ratio, dim=1).clamp(1.0, c.sample_max_value)[:, None]
        return (torch.clamp(flat, -s, s) / s).reshape(x0.shape).to(x0.dtype)

    def predict_x0(self, model_output: torch.Tensor, index: int, sample: torch.Tensor) -> torch.Tensor:
        k = self._coeffs[index]
        p = self.config.prediction_type
        if p == "epsilon":
            return (sample - k["sqrt_b"] * model_output) / k["sqrt_a"]
        if p == "v_prediction":
            return k["sqrt_a"] * sample - k["sqrt_b"] * model_output
        return model_output

    def step(
        self, model_output: torch.Tensor, index: int, sample: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """One ancestral step from ``timesteps[index]`` to the next timestep; returns x_{prev}."""
        k = self._coeffs[index]
        x0 = self.predict_x0(model_output, index, sample)
        if self.config.thresholding:
            x0 = self._threshold(x0)
        prev = k["x0_coeff"] * x0 + k["xt_coeff"] * sample
        if k["std"] > 0:
            noise = torch.randn(model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype)
            prev = prev + k["std"] * noise
        return prev

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timestep: int) -> torch.Tensor:
        a = self.alphas_cumprod[int(timestep)].to(original.dtype)
        return a**0.5 * original + (1 - a) ** 0.5 * noise

    def with_steps(self, num_inference_steps: int) -> DDPMScheduler:
        return DDPMScheduler(replace(self.config, num_inference_steps=num_inference_steps))
