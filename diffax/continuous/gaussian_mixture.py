"""Gaussian-mixture data with closed-form noisy marginals: the exact oracle for samplers.

If `x_0 ~ sum_k w_k N(mu_k, diag(s_k^2))` then under any Gaussian process
`x_t ~ sum_k w_k N(alpha mu_k, diag(alpha^2 s_k^2 + sigma^2))`, so the score, the posterior means
E[x_0 | x_t] and E[eps | x_t], and log p_t are all available in closed form. Samplers driven by this
exact model must reproduce the mixture; the PF-ODE likelihood must equal `log_prob`.
Reference: Karras et al. 2022, EDM (section 3, ideal denoiser of a finite mixture).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from diffax.continuous.parameterizations import PREDICTIONS, ModelFn, from_x0_eps
from diffax.continuous.processes import GaussianProcess
from diffax.core import batch_time, check_choice, pytree_dataclass
from diffax.core.arrays import expand_as


@pytree_dataclass
class GaussianMixture:
    """A mixture of K axis-aligned Gaussians in R^D.

    Attributes:
      weights: `[K]` mixture weights (summing to 1).
      means: `[K, D]` component means.
      scales: `[K, D]` per-dimension standard deviations (> 0).
    """

    weights: jax.Array
    means: jax.Array
    scales: jax.Array

    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    def _posterior(self, process: GaussianProcess, x: jax.Array, t):
        """Per-component quantities at time t: responsibilities, residuals, variances."""
        t = batch_time(t, x.shape[0])
        a = expand_as(process.alpha(t), x)[:, None]  # [B, 1, 1]
        s = expand_as(process.sigma(t), x)[:, None]
        var = a * a * self.scales**2 + s * s  # [B, K, D]
        resid = x[:, None, :] - a * self.means  # [B, K, D]
        log_n = -0.5 * jnp.sum(resid**2 / var + jnp.log(2.0 * math.pi * var), axis=-1)
        logits = jnp.log(self.weights) + log_n  # [B, K]
        return logits, resid, var, a, s

    def marginal_log_prob(self, process: GaussianProcess, x: jax.Array, t) -> jax.Array:
        """log p_t(x) in nats for `x: [B, D]`, `t` scalar or `[B]`; returns `[B]`."""
        logits, *_ = self._posterior(process, x, t)
        return jax.nn.logsumexp(logits, axis=-1)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """log-density of the data distribution (t = 0, no noise) for `x: [B, D]`; `[B]`."""
        resid = x[:, None, :] - self.means
        var = self.scales**2
        log_n = -0.5 * jnp.sum(resid**2 / var + jnp.log(2.0 * math.pi * var), axis=-1)
        return jax.nn.logsumexp(jnp.log(self.weights) + log_n, axis=-1)

    def score(self, process: GaussianProcess, x: jax.Array, t) -> jax.Array:
        """grad_x log p_t(x), `[B, D]`."""
        logits, resid, var, _, _ = self._posterior(process, x, t)
        r = jax.nn.softmax(logits, axis=-1)[..., None]
        return jnp.sum(r * (-resid / var), axis=1)

    def x0_eps(self, process: GaussianProcess, x: jax.Array, t) -> tuple[jax.Array, jax.Array]:
        """Exact posterior means (E[x_0 | x_t], E[eps | x_t]), each `[B, D]`.

        Computed per component (no division by alpha or sigma), so exact at t = 0 and t = 1 too.
        """
        logits, resid, var, a, s = self._posterior(process, x, t)
        r = jax.nn.softmax(logits, axis=-1)[..., None]
        x0 = jnp.sum(r * (self.means + a * self.scales**2 / var * resid), axis=1)
        eps = jnp.sum(r * (s / var * resid), axis=1)
        return x0, eps

    def model_fn(self, process: GaussianProcess, prediction: str = "eps") -> ModelFn:
        """The exact model `(x: [B, D], t: [B]) -> [B, D]` in the given parameterization."""
        check_choice(prediction, PREDICTIONS, "prediction")

        def fn(x: jax.Array, t: jax.Array) -> jax.Array:
            x0, eps = self.x0_eps(process, x, t)
            return from_x0_eps(process, prediction, x0, eps, batch_time(t, x.shape[0]))

        return fn

    def sample(self, key: jax.Array, num: int) -> jax.Array:
        """Exact samples `[num, D]`."""
        k_comp, k_noise = jax.random.split(key)
        comp = jax.random.choice(k_comp, self.weights.shape[0], (num,), p=self.weights)
        noise = jax.random.normal(k_noise, (num, self.dim))
        return self.means[comp] + self.scales[comp] * noise

    def mean(self) -> jax.Array:
        """Mixture mean `[D]`."""
        return self.weights @ self.means

    def covariance(self) -> jax.Array:
        """Mixture covariance `[D, D]`."""
        m = self.mean()
        centred = self.means - m
        within = jnp.diag(self.weights @ self.scales**2)
        return within + (self.weights[:, None] * centred).T @ centred
