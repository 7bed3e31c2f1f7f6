"""Test support: uniformly dequantized 8-bit data with an exact noisy density and score.

Each dimension independently takes one of `levels` (8-bit values) with equal probability; after
uniform dequantization y = 2 (x + u)/256 - 1 the density is a mixture of boxes of width 2/256, and
under any process p_t(z) = sum_k [Phi((z - alpha a_k)/sigma) - Phi((z - alpha b_k)/sigma)] /
(K w alpha) per dimension. The true NLL is log2(K) bits per dimension.
"""

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr


def _log_phi_diff(upper, lower):
    """log(Phi(upper) - Phi(lower)) for upper > lower, without cancellation in either tail.

    Uses Phi(b) - Phi(a) = Phi(-a) - Phi(-b) when both lie in the upper tail; the arguments are
    swapped before the logs (not the results), so gradients stay finite.
    """
    flip = lower > 0
    hi, lo = jnp.where(flip, -lower, upper), jnp.where(flip, -upper, lower)
    return log_ndtr(hi) + jnp.log1p(-jnp.exp(log_ndtr(lo) - log_ndtr(hi)))


class BoxMixture:
    def __init__(self, levels):
        self.levels = jnp.asarray(levels, jnp.int32)
        self.lo = 2.0 * self.levels / 256.0 - 1.0
        self.width = 2.0 / 256.0

    def sample(self, key, shape):
        idx = jax.random.randint(key, shape, 0, self.levels.shape[0])
        return self.levels[idx]

    def marginal_log_prob(self, process, z, t):
        """log p_t(z) summed over dimensions, `z: [B, D]`, `t: [B]` -> `[B]`."""
        a = process.alpha(t)[:, None, None]
        s = process.sigma(t)[:, None, None]
        zz = z[..., None]
        u = (zz - a * self.lo) / s
        lower = (zz - a * (self.lo + self.width)) / s
        k = self.levels.shape[0]
        per_dim = jax.nn.logsumexp(_log_phi_diff(u, lower), axis=-1) - jnp.log(
            k * self.width * a[..., 0]
        )
        return per_dim.sum(-1)

    def model_fn(self, process):
        """The exact eps prediction -sigma * score."""

        def fn(z, t):
            score = jax.grad(lambda z: self.marginal_log_prob(process, z, t).sum())(z)
            return -process.sigma(t)[:, None] * score

        return fn
