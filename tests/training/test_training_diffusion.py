"""The IDDPM hybrid loss against direct numeric computations."""

import math

import pytest
import torch

from diffusers_pixart.training.diffusion import IDDPMDiffusion, discretized_gaussian_log_likelihood, normal_kl


def test_normal_kl_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(50, generator=gen), torch.randn(50, generator=gen)
    lv1, lv2 = torch.randn(50, generator=gen), torch.randn(50, generator=gen)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, (0.5 * lv1).exp()), torch.distributions.Normal(m2, (0.5 * lv2).exp())
    )
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), expected, rtol=1e-5, atol=1e-6)


def test_discretized_likelihood_is_a_distribution_over_256_bins():
    bins = torch.linspace(-1, 1, 256)
    for mean, log_scale in [(0.0, -2.0), (0.3, -4.0), (-0.9, 0.5)]:
        logp = discretized_gaussian_log_likelihood(bins, torch.tensor(mean), torch.tensor(log_scale))
        assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-4)
        # An interior bin is the normal probability of [x - 1/255, x + 1/255].
        normal = torch.distributions.Normal(mean, math.exp(log_scale))
        x = bins[100]
        direct = normal.cdf(x + 1 / 255) - normal.cdf(x - 1 / 255)
        assert logp[100].exp().item() == pytest.approx(direct.item(), rel=1e-4)


def test_posterior_matches_bayes_rule():
    diffusion = IDDPMDiffusion()
    t = torch.tensor([5])
    betas = diffusion.scheduler.betas.double()
    abar = torch.cumprod(1 - betas, 0)
    x0, xt = torch.tensor([[0.7]]), torch.tensor([[0.5]])
    # q(x_{t-1}|x0) = N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1}); q(x_t|x_{t-1}) = N(sqrt(1-b_t) x_{t-1}, b_t).
    prior_var, prior_mean = 1 - abar[4], abar[4].sqrt() * 0.7
    lik_prec = (1 - betas[5]) / betas[5]
    post_var = 1 / (1 / prior_var + lik_prec)
    post_mean = post_var * (prior_mean / prior_var + (1 - betas[5]).sqrt() * 0.5 / betas[5])
    mean, log_var = diffusion.posterior(x0, xt, t)
    assert mean.item() == pytest.approx(post_mean.item(), rel=1e-5)
    assert log_var.exp().item() == pytest.approx(post_var.item(), rel=1e-5)


def _batch(seed=0, t=(1, 10, 500, 999)):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(len(t), 4, 8, 8, generator=gen) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen)
    timesteps = torch.tensor(t)
    return x0, noise, timesteps


def test_vb_is_zero_with_the_true_posterior_and_eps_part_is_mse():
    diffusion = IDDPMDiffusion()
    x0, noise, t = _batch()
    xt = diffusion.add_noise(x0, noise, t)
    # The true noise gives the true posterior mean; v_sigma = -1 selects the (clipped) posterior variance.
    exact = torch.cat([noise, -torch.ones_like(noise)], dim=1)
    losses = diffusion.training_losses(exact, x0, xt, noise, t)
    assert losses["vb"].abs().max().item() < 1e-4
    assert losses["mse"].abs().max().item() == 0.0

    eps = torch.randn(noise.shape, generator=torch.Generator().manual_seed(1))
    v_sigma = torch.rand(noise.shape, generator=torch.Generator().manual_seed(2)) * 2 - 1
    losses = diffusion.training_losses(torch.cat([eps, v_sigma], 1), x0, xt, noise, t)
    torch.testing.assert_close(losses["mse"], ((eps - noise) ** 2).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(losses["loss"], losses["mse"] + losses["vb"])
    assert (losses["vb"] > 0).all()


def test_vb_kl_matches_a_direct_computation():
    diffusion = IDDPMDiffusion()
    x0, noise, t = _batch(t=(3, 3, 700, 700))
    xt = diffusion.add_noise(x0, noise, t)
    eps = noise + 0.3
    v_sigma = torch.full_like(noise, 0.5)
    vb = diffusion.training_losses(torch.cat([eps, v_sigma], 1), x0, xt, noise, t)["vb"]
    betas = diffusion.scheduler.betas.double()
    abar = torch.cumprod(1 - betas, 0)
    for i, step in enumerate(t.tolist()):
        a, ap, b = abar[step], abar[step - 1], betas[step]
        post_var = b * (1 - ap) / (1 - a)
        x0_hat = (xt[i].double() - (1 - a).sqrt() * eps[i].double()) / a.sqrt()

        def post_mean(x_start, i=i, a=a, ap=ap, b=b):
            return (ap.sqrt() * b * x_start + (1 - b).sqrt() * (1 - ap) * xt[i].double()) / (1 - a)

        model_var = torch.exp(0.75 * torch.log(b) + 0.25 * torch.log(post_var))
        kl = torch.distributions.kl_divergence(
            torch.distributions.Normal(post_mean(x0[i].double()), post_var.sqrt()),
            torch.distributions.Normal(post_mean(x0_hat), model_var.sqrt()),
        )
        assert vb[i].item() == pytest.approx(kl.mean().item() / math.log(2), rel=1e-3)


def test_vb_at_t0_is_the_decoder_nll_in_bits():
    diffusion = IDDPMDiffusion()
    x0, noise, t = _batch(t=(0, 0))
    xt = diffusion.add_noise(x0, noise, t)
    out = torch.cat([noise, torch.zeros_like(noise)], 1)
    vb = diffusion.training_losses(out, x0, xt, noise, t)["vb"]
    mean, _ = diffusion.posterior(x0, xt, t)  # the true noise gives the posterior mean
    log_var = 0.5 * torch.log(diffusion.scheduler.betas[0].double()) + 0.5 * diffusion.posterior_log_variance_clipped[0]
    nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var.float()).mean(dim=(1, 2, 3)) / math.log(2)
    torch.testing.assert_close(vb, nll)


def test_vb_gradient_reaches_only_the_variance():
    diffusion = IDDPMDiffusion()
    x0, noise, t = _batch()
    xt = diffusion.add_noise(x0, noise, t)
    out = torch.randn(4, 8, 8, 8, requires_grad=True)
    diffusion.training_losses(out, x0, xt, noise, t)["vb"].sum().backward()
    assert out.grad[:, :4].abs().max().item() == 0.0
    assert out.grad[:, 4:].abs().max().item() > 0.0


def test_min_snr_and_v_prediction():
    diffusion = IDDPMDiffusion(prediction_type="v_prediction", snr_gamma=5.0, learn_sigma=False)
    x0, noise, t = _batch()
    xt = diffusion.add_noise(x0, noise, t)
    abar = diffusion.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    v = abar.sqrt() * noise - (1 - abar).sqrt() * x0
    losses = diffusion.training_losses(v, x0, xt, noise, t)
    assert losses["loss"].abs().max().item() < 1e-10
    # predict_x_start inverts the velocity.
    torch.testing.assert_close(diffusion.predict_x_start(v, xt, t), x0, atol=1e-4, rtol=1e-4)
    snr = abar.flatten() / (1 - abar.flatten())
    torch.testing.assert_close(diffusion.mse_weights(t), snr.clamp(max=5.0) / (snr + 1))
    wrong = torch.zeros_like(v)
    losses = diffusion.training_losses(wrong, x0, xt, noise, t)
    torch.testing.assert_close(losses["loss"], diffusion.mse_weights(t) * (v**2).mean(dim=(1, 2, 3)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="prediction_type"):
        IDDPMDiffusion(prediction_type="sample")
    with pytest.raises(ValueError, match="snr_gamma"):
        IDDPMDiffusion(snr_gamma=0)
    diffusion = IDDPMDiffusion()
    x0, noise, t = _batch()
    with pytest.raises(ValueError, match="8 expected"):
        diffusion.training_losses(noise, x0, x0, noise, t)
