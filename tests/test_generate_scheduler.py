"""The DDPM sampler: its schedule against the same formulas in float64, within a bound on the
error of its float32 arithmetic, and its steps (diffusers' ``DDPMScheduler`` semantics with the
official settings: ``squaredcos_cap_v2``, zero terminal SNR, thresholding, ``fixed_small_log``).

No reference digits from another machine: kvid computes the schedule in float32, as diffusers
does, and float32 results differ between CPUs (vectorised cumprod, libm). Some coefficients are
ill-conditioned: the variance at t=20 divides by 1 - alphas_cumprod[0] (about 4e-5), so one
float32 ulp of the cumprod moves it by 0.1 %. The test recomputes every value in float64 and
bounds the float32 error by running error analysis: each float32 operation rounds with a
relative error of at most u = 2**-24, and autograd carries each of those, to first order, to
every coefficient. The bound is wide exactly where the computation is ill-conditioned.
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


U = 2.0**-24  # float32 unit roundoff: a correctly rounded operation errs by at most u, relative
LIBM_ULPS = 2  # exp and log are not correctly rounded: a couple of ulps


def schedule_with_roundings(n: int, timesteps: list[int]):
    """kvid's schedule (generate/scheduler.py) in float64, each float32 operation written as
    ``exact * (1 + d[op])``. Returns ``f(*ds) -> [alphas_cumprod[:n-1], std of each step but
    the last]``, the zero ``ds`` to evaluate it at, and each operation's rounding in ulps. A
    rounding inside a cumprod is a rounding of its factor (p_i = p_{i-1} x_i (1 + d_i)).
    alphas_cumprod[n-1] is 0 exactly (zero terminal SNR) and the last step adds no noise: both
    are left out (their logs are -inf)."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas64 = torch.tensor([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
                           dtype=torch.float64)
    t_now, t_next = torch.tensor(timesteps[:-1]), torch.tensor(timesteps[1:])
    steps = len(timesteps) - 1
    # (operation, how many roundings, ulps each), in the order kvid computes them.
    ops = [("beta", n, 1), ("1-beta", n, 1), ("cumprod", n, 1), ("sqrt", n, 1), ("shift", n, 1),
           ("first-last", 1, 1), ("first/", 1, 1), ("rescale", n, 1), ("square", n, 1), ("ratio", n - 1, 1),
           ("1-alpha", n, 1), ("alpha", n, 1), ("cumprod2", n - 1, 1),
           ("a_t/a_prev", steps, 1), ("1-ratio", steps, 1), ("1-a_prev", steps, 1), ("1-a_t", steps, 1),
           ("quotient", steps, 1), ("variance", steps, 1), ("log", steps, LIBM_ULPS), ("half", steps, 1),
           ("exp", steps, LIBM_ULPS)]

    def f(*ds):
        e = {name: 1 + d for (name, _, _), d in zip(ops, ds)}
        betas = betas64 * e["beta"]
        sqrt_ab = torch.cumprod((1 - betas) * e["1-beta"] * e["cumprod"], 0).sqrt() * e["sqrt"]
        first, last = sqrt_ab[0], sqrt_ab[-1]
        scale = first / ((first - last) * e["first-last"]) * e["first/"]
        scaled = (sqrt_ab - last) * e["shift"] * scale * e["rescale"]
        ab = scaled * scaled * e["square"]
        alphas = torch.cat([ab[:1], ab[1:] / ab[:-1] * e["ratio"]])
        alpha = (1 - (1 - alphas) * e["1-alpha"]) * e["alpha"]
        acp = torch.cumprod(alpha[: n - 1] * e["cumprod2"], 0)
        a_t, a_prev = acp[t_now], acp[t_next]
        cur_beta = (1 - a_t / a_prev * e["a_t/a_prev"]) * e["1-ratio"]
        quotient = (1 - a_prev) * e["1-a_prev"] / ((1 - a_t) * e["1-a_t"]) * e["quotient"]
        variance = quotient * cur_beta * e["variance"]
        std = (0.5 * (variance.log() * e["log"]) * e["half"]).exp() * e["exp"]
        return torch.cat([acp, std])

    return f, tuple(torch.zeros(k, dtype=torch.float64) for _, k, _ in ops), [u for _, _, u in ops]


def float64_reference(s: DDPMScheduler):
    """(alphas_cumprod[:-1], stds of the steps but the last) in float64, and a first-order bound
    on the error float32 arithmetic has on each: u times the sum over every rounding of
    |d value / d rounding| (running error analysis, by automatic differentiation)."""
    f, zeros, ulps = schedule_with_roundings(s.config.num_train_timesteps, s.timesteps)
    values = f(*zeros)
    jac = torch.autograd.functional.jacobian(f, zeros, vectorize=True)
    bound = U * sum(k * j.abs().sum(1) for k, j in zip(ulps, jac))
    n = s.config.num_train_timesteps - 1
    return values[:n], bound[:n], values[n:], bound[n:]


def test_schedule_is_within_the_float32_error_bound_of_float64():
    s = DDPMScheduler()
    acp, acp_bound, std, std_bound = float64_reference(s)
    # Twice the first-order bound: second-order terms are orders of magnitude below it.
    got = s.alphas_cumprod.double()
    assert torch.all((got[:-1] - acp).abs() <= 2 * acp_bound)
    assert s.alphas_cumprod[-1].item() == 0.0  # rescaled to zero terminal SNR
    stds = torch.tensor([c["std"] for c in s._coeffs], dtype=torch.float64)
    assert torch.all((stds[:-1] - std).abs() <= 2 * std_bound)
    assert stds[-1] == 0.0  # no noise on the last step
    # The bound is wide exactly where the computation is ill-conditioned: at t=20 the std
    # divides by 1 - alphas_cumprod[0] ~ 4e-5, so it is known to about 1 % in float32 (the
    # other CPU's 0.006351814 and this one's 0.006342834 are both inside); at t=980 to 2e-6.
    idx = {t: i for i, t in enumerate(s.timesteps)}
    rel = std_bound / std
    assert rel[idx[20]] > 3e-3 and rel[idx[980]] < 1e-5
    assert abs(0.006351814 - std[idx[20]]) <= 2 * std_bound[idx[20]]


def test_the_error_bound_is_no_licence_for_a_wrong_schedule():
    """A small slip in the formulas lands far outside the bound."""
    s = DDPMScheduler()
    acp, acp_bound, std, std_bound = float64_reference(s)
    off_by_one = DDPMScheduler(DDPMSchedulerConfig(num_train_timesteps=1001))
    assert torch.any((off_by_one.alphas_cumprod.double()[:999] - acp).abs() > 100 * acp_bound)
    linear = DDPMScheduler(DDPMSchedulerConfig(beta_schedule="linear"))
    stds = torch.tensor([c["std"] for c in linear._coeffs[:-1]], dtype=torch.float64)
    assert torch.any((stds - std).abs() > 100 * std_bound)


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
