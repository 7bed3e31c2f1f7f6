"""Predictor-corrector sampling: Langevin corrector steps at t, then any predictor step to s.

Song et al. 2021, Score-Based Generative Modeling through SDEs (Algorithms 4-5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.continuous.samplers.ddim import ddim
from diffax.continuous.samplers.registry import SAMPLERS, register_sampler
from diffax.continuous.samplers.sde import langevin_step
from diffax.continuous.samplers.step import Step
from diffax.core import check_positive_int
from diffax.core.arrays import TINY


@register_sampler("pc")
def pc(predictor: Step | str | None = None, snr: float = 0.16, corrector_steps: int = 1) -> Step:
    """Predictor-corrector: `corrector_steps` Langevin steps at t, then one predictor step.

    NFE = (predictor's evaluations + corrector_steps) per step (+1 if `denoise`). Corrector
    step j uses the noise `fold_in(key, j + 1)`, the predictor the key `fold_in(key, 0)`; the
    predictor keeps its own state (a multistep predictor works).

    Args:
      predictor: a `Step` (or a name in `SAMPLERS`); default (None) the ancestral step, the
        exact DDPM posterior q(x_s | x_t, x0_hat), i.e. `ddim(eta=1.0)` (score_sde's ancestral
        predictor).
      snr: target signal-to-noise ratio of the Langevin steps (`langevin_step`).
      corrector_steps: Langevin steps per grid time (>= 0).
    """
    if predictor is None:
        predictor = ddim(eta=1.0)
    elif isinstance(predictor, str):
        predictor = SAMPLERS.get(predictor, "predictor")()
    if not isinstance(predictor, Step):
        raise TypeError(
            "predictor must be a diffax.continuous.Step or a name in SAMPLERS ("
            f"{', '.join(SAMPLERS.names())}), got {type(predictor).__name__}"
        )
    corrector_steps = check_positive_int(corrector_steps, "corrector_steps", minimum=0)

    def step(model, key, x, state, t, s):
        tb = jnp.full((x.shape[0],), t)
        sigma = jnp.maximum(model.process.sigma(t), TINY)
        for j in range(corrector_steps):
            _, eps = model.denoise(x, tb)
            noise = jax.random.normal(jax.random.fold_in(key, j + 1), x.shape, x.dtype)
            x = langevin_step(x, eps, sigma, snr, noise)
        return predictor.step(model, jax.random.fold_in(key, 0), x, state, t, s)

    return Step(
        predictor.init,
        step,
        evals_per_step=predictor.evals_per_step + corrector_steps,
        name="pc",
        uses_sde_t_max=True,
        reference="Song et al. 2021, Score-Based Generative Modeling through SDEs (Algorithms 4-5)",
        info=predictor.info,
    )


predictor_corrector = pc
