"""Typed parts of a discrete continuous-time negative ELBO (as `diffax.continuous.ELBOTerms`)."""

from __future__ import annotations

from typing import NamedTuple

import jax


class ELBOTerms(NamedTuple):
    """Per-example terms of the negative ELBO, each `[B]` float32 in nats.

    `total` = prior + reconstruction + diffusion, an upper bound on -log p(x_0).

    * prior: KL(q(x_1 | x_0) || prior), zero when alpha(1) = 0 (`Process.prior_kl`);
    * reconstruction: E[-log p_theta(x_0 | x_{t=0})], zero when alpha(0) = 1;
    * diffusion: the time integral over (0, 1] (masked cross-entropy or reverse-rate KL).

    Reference: Kingma et al. 2021 (VDM), the same decomposition for Gaussian diffusion.
    """

    prior: jax.Array
    reconstruction: jax.Array
    diffusion: jax.Array

    @property
    def total(self) -> jax.Array:
        """prior + reconstruction + diffusion, `[B]`."""
        return self.prior + self.reconstruction + self.diffusion
