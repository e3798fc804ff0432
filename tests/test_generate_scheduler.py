"""The DDPM sampler against reference values of diffusers' DDPMScheduler with the official settings.

Reference numbers were produced once with diffusers 0.42 ``DDPMScheduler(num_train_timesteps=1000,
beta_schedule="squaredcos_cap_v2", rescale_betas_zero_snr=True, thresholding=True,
variance_type="fixed_small_log")`` (diffusers is not a dependency of kvid).
"""

from __future__ import annotations

import math

import pytest
import torch

from generate import DDPMScheduler, DDPMSchedulerConfig


def test_timesteps_leading_and_trailing():
    kf = DDPMScheduler(DDPMSchedulerConfig.keyframes())
    assert kf.timesteps == list(range(980, -1, -20))  # 50 steps, 'leading'
    interp = DDPMScheduler(DDPMSchedulerConfig.interpolation())
    assert interp.timesteps == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]  # 10 steps, 'trailing'
    assert kf.with_steps(4).timesteps == [750, 500, 250, 0]


def test_alphas_cumprod_reference_values_and_zero_terminal_snr():
    s = DDPMScheduler()
    ref = {0: 0.999958872795105, 20: 0.9981142282485962, 500: 0.4922650456428528,
           980: 0.0008737005409784615, 998: 2.277813791806693e-06}
    for t, v in ref.items():
        assert s.alphas_cumprod[t].item() == pytest.approx(v, rel=1e-6, abs=1e-12)
    assert s.alphas_cumprod[999].item() == 0.0  # rescaled to zero terminal SNR
    # fixed_small_log standard deviations (diffusers' _get_variance)
    idx = {t: i for i, t in enumerate(s.timesteps)}
    assert s._coeffs[idx[980]]["std"] == pytest.approx(0.8721771836280823, rel=1e-6)
    assert s._coeffs[idx[20]]["std"] == pytest.approx(0.006342834327369928, rel=1e-6)
    assert s._coeffs[idx[0]]["std"] == 0.0  # no noise on the last step


def test_last_step_returns_the_clamped_x0_prediction():
    s = DDPMScheduler()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 3, generator=g) * 3
    eps = torch.randn(2, 4, 3, 3, generator=g)
    a = s.alphas_cumprod[0].item()
    expected = ((x - math.sqrt(1 - a) * eps) / math.sqrt(a)).clamp(-1, 1)  # thresholding with max 1 = clamp
    out = s.step(eps, len(s.timesteps) - 1, x)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)


def test_v_prediction_first_trailing_step_uses_x0_equals_minus_v():
    s = DDPMScheduler(DDPMSchedulerConfig.interpolation())
    x = torch.randn(1, 4, 2, 2)
    v = torch.full((1, 4, 2, 2), 0.25)
    assert s.predict_x0(v, 0, x).allclose(-v)  # alpha_bar(999) = 0: the sample carries no signal


def test_step_noise_follows_the_generator():
    s = DDPMScheduler()
    x, eps = torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4, 4)
    a = s.step(eps, 0, x, generator=torch.Generator().manual_seed(1))
    b = s.step(eps, 0, x, generator=torch.Generator().manual_seed(1))
    c = s.step(eps, 0, x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_add_noise_formula():
    s = DDPMScheduler()
    x, n = torch.randn(3, 4), torch.rand(3, 4)
    a = s.alphas_cumprod[20]
    torch.testing.assert_close(s.add_noise(x, n, 20), a.sqrt() * x + (1 - a).sqrt() * n)


def test_bad_step_count():
    with pytest.raises(ValueError, match="num_inference_steps"):
        DDPMScheduler().set_timesteps(0)
