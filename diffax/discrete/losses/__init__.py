"""Training objectives for discrete diffusion, by name.

Every registered loss has the signature `loss(key, process, model_fn, x0, t=None, *,
prediction=...) -> [B]` in nats per sequence, so configs can pick one by name and pass the
network's parameterization:

| name | what | bound? |
|---|---|---|
| "masked_elbo" | weighted cross-entropy on masked positions (absorbing processes) | -ELBO |
| "ctmc_elbo" | reverse-rate KL, model rates from a denoiser (any process) | -ELBO |
| "score_entropy" | denoising score entropy, model rates from a concrete score | -ELBO |
| "flow_matching_ce" | unweighted denoiser cross-entropy along the path | no |

`LOSSES` is the registry (`losses` is kept as an alias). The bound losses also come as typed
terms (`masked_bound`, `rate_kl_bound` -> `ELBOTerms(prior, reconstruction, diffusion)`).
"""

from collections.abc import Callable

import jax

from diffax.core import Registry
from diffax.discrete.losses.ctmc_elbo import ctmc_elbo
from diffax.discrete.losses.elbo_terms import ELBOTerms
from diffax.discrete.losses.endpoints import prior_kl, reconstruction
from diffax.discrete.losses.flow_matching import flow_matching_ce
from diffax.discrete.losses.masked import (
    masked_bound,
    masked_bound_with_log_z,
    masked_elbo,
    masked_elbo_terms,
)
from diffax.discrete.losses.rate_kl import rate_kl_bound, rate_kl_terms
from diffax.discrete.losses.score_entropy import score_entropy
from diffax.discrete.losses.times import antithetic_times, stratified_times

LossFn = Callable[..., jax.Array]

LOSSES: Registry = Registry("loss")
LOSSES.register("masked_elbo")(masked_elbo)
LOSSES.register("ctmc_elbo")(ctmc_elbo)
LOSSES.register("score_entropy")(score_entropy)
LOSSES.register("flow_matching_ce")(flow_matching_ce)
losses = LOSSES  # the lower-case name from before the registries were renamed


def loss_fn(name: str) -> LossFn:
    """The registered loss called `name`: `(key, process, model_fn, x0, **kw) -> [B]` nats.

    Raises `ValueError` naming the allowed values for an unknown name.
    """
    return LOSSES.get(name, "loss")


__all__ = [
    "LOSSES",
    "ELBOTerms",
    "antithetic_times",
    "ctmc_elbo",
    "flow_matching_ce",
    "loss_fn",
    "losses",
    "masked_bound",
    "masked_bound_with_log_z",
    "masked_elbo",
    "masked_elbo_terms",
    "prior_kl",
    "rate_kl_bound",
    "rate_kl_terms",
    "reconstruction",
    "score_entropy",
    "stratified_times",
]
