"""Training objectives for discrete diffusion, by name.

Every registered loss has the signature `loss(key, process, model_fn, x0, t=None, *,
prediction=...) -> [B]` in nats per sequence, so configs can pick one by name and pass the
network's parameterization:

| name | what | bound? |
|---|---|---|
| "masked_elbo" | weighted cross-entropy on masked positions (`Masked` only) | -ELBO |
| "ctmc_elbo" | reverse-rate KL, model rates from a denoiser (any process) | -ELBO |
| "score_entropy" | denoising score entropy, model rates from a concrete score | -ELBO |
| "flow_matching_ce" | unweighted denoiser cross-entropy along the path | no |
"""

from collections.abc import Callable

import jax

from diffax.core import Registry
from diffax.discrete.losses.endpoints import prior_kl, reconstruction
from diffax.discrete.losses.flow_matching import flow_matching_ce
from diffax.discrete.losses.masked import masked_elbo, masked_elbo_terms
from diffax.discrete.losses.rate_kl import ctmc_elbo, rate_kl_terms, score_entropy
from diffax.discrete.losses.times import antithetic_times

LossFn = Callable[..., jax.Array]

losses: Registry = Registry("loss")
losses.register("masked_elbo")(masked_elbo)
losses.register("ctmc_elbo")(ctmc_elbo)
losses.register("score_entropy")(score_entropy)
losses.register("flow_matching_ce")(flow_matching_ce)


def loss_fn(name: str) -> LossFn:
    """The registered loss called `name`: `(key, process, model_fn, x0, **kw) -> [B]` nats.

    Raises `ValueError` naming the allowed values for an unknown name.
    """
    return losses.get(name, "loss")


__all__ = [
    "antithetic_times",
    "ctmc_elbo",
    "flow_matching_ce",
    "loss_fn",
    "losses",
    "masked_elbo",
    "masked_elbo_terms",
    "prior_kl",
    "rate_kl_terms",
    "reconstruction",
    "score_entropy",
]
