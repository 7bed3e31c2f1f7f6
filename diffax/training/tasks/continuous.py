"""Task "continuous_diffusion": Gaussian diffusion on toy 2-D data or TFDS images.

Data (`data.source`): "toy" (a 2-D toy distribution with an exact density; `model.arch="mlp"`,
a `TimeMLP`) or "tfds_images" (NHWC float32 in [-1, 1]; `model.arch="unet"`, a `UNet`). Process,
prediction target, loss weighting, time sampler and sampler are picked by name from the config
and resolved through the registries of `diffax.continuous`.

Evaluation (`eval.likelihood`) is per dimension:

* "elbo": the continuous-time ELBO (Kingma et al. 2021, VDM). For 8-bit images the pixels are
  recovered exactly from the [-1, 1] batch and uniformly dequantized, so the result bounds
  -log2 P(x) / d of the discrete data (`diffax.continuous.elbo_bpd`);
* "pf_ode": the probability-flow ODE negative log-likelihood (Song et al. 2021), with the exact
  divergence for d <= 16 and the Hutchinson estimator otherwise; for images plus d log 128 nats,
  the dequantization bin term.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

import diffax.continuous as dc
from diffax.data import build_source
from diffax.nn import TimeMLP, UNet
from diffax.training.state import ModelDef
from diffax.training.tasks.base import TASKS
from diffax.training.tasks.model_dtype import compute_dtype
from diffax.training.tasks.sample_options import sample_options

LIKELIHOODS = ("elbo", "pf_ode")
ARCHS = ("mlp", "unet")
PRECONDITIONINGS = ("none", "edm")
# Up to this many dimensions the PF-ODE divergence is computed exactly (one JVP per dimension).
_EXACT_DIVERGENCE_MAX_DIM = 16


def _choice(value, allowed, key: str) -> None:
    if value not in allowed:
        raise ValueError(
            f"{key}={value!r} is not allowed; allowed values: {', '.join(map(repr, allowed))}"
        )


def build_process(p) -> dc.GaussianProcess:
    """The Gaussian process named by `process.name`, with its parameters from the config section.

    vp: `process.schedule` ("linear" with `process.{beta_min, beta_max}`, or "cosine" with its
    defaults); subvp: `process.{beta_min, beta_max}`; ve, edm: `process.{sigma_min, sigma_max}`;
    rectified_flow, cosine: none.
    """
    cls = dc.PROCESSES.get(p.name, "process.name")
    if p.name == "vp":
        _choice(p.schedule, ("linear", "cosine"), "process.schedule")
        if p.schedule == "cosine":
            return cls(schedule="cosine")
        return cls(p.beta_min, p.beta_max, schedule="linear")
    if p.name == "subvp":
        return cls(p.beta_min, p.beta_max)
    if p.name in ("ve", "edm"):
        return cls(p.sigma_min, p.sigma_max)
    return cls()


@TASKS.register("continuous_diffusion")
class ContinuousDiffusionTask:
    """Continuous-time Gaussian diffusion on a `VectorSource` (TimeMLP or UNet).

    Config keys read (once, here): data.* (through the source named by data.source),
    process.{name, schedule, beta_min, beta_max, sigma_min, sigma_max}, model.{arch, dim, depth,
    mlp_ratio, time_features, channel_mults, num_res_blocks, attention_levels, num_heads,
    num_groups, dtype, remat (unet)}, continuous.{prediction, preconditioning, sigma_data,
    weighting, time_sampler, t_min, t_max}, train.loss ("dsm"), eval.likelihood, sample.{sampler,
    num_steps, grid, options, temperature, top_p}, seed.
    """

    unit = "dim"
    sampler_options = staticmethod(dc.sampler_options)

    def __init__(self, config):
        m, c = config.model, config.continuous
        self.source = build_source(config.data, config.seed, kind="vectors", task=config.task)
        self.event_shape: tuple[int, ...] = tuple(self.source.example_shape)
        self.process = build_process(config.process)
        if config.train.loss != "dsm":
            raise ValueError(
                f"train.loss={config.train.loss!r} is not allowed; allowed values: 'dsm'"
            )
        _choice(c.prediction, dc.PREDICTIONS, "continuous.prediction")
        _choice(c.preconditioning, PRECONDITIONINGS, "continuous.preconditioning")
        if c.preconditioning == "edm" and c.prediction != "x0":
            raise ValueError(
                "continuous.preconditioning='edm' makes the network predict x0: set "
                f"continuous.prediction='x0' (got {c.prediction!r})"
            )
        dc.WEIGHTINGS.get(c.weighting, "continuous.weighting")
        dc.TIME_SAMPLERS.get(c.time_sampler, "continuous.time_sampler")
        self.prediction, self.t_min, self.t_max = c.prediction, c.t_min, c.t_max
        self.sigma_data = c.sigma_data if c.preconditioning == "edm" else None
        self.loss_options = {
            "weighting": c.weighting,
            "time_sampler": c.time_sampler,
            **({"sigma_data": c.sigma_data} if c.weighting == "edm" else {}),
        }
        s = config.sample
        self.sampler, self.num_steps = s.sampler, s.num_steps
        self.sample_options = sample_options(s, self.sampler_options)
        self.grid = None
        if s.grid != "default":
            dc.GRIDS.get(s.grid, "sample.grid")
            self.grid = s.grid
        _choice(config.eval.likelihood, LIKELIHOODS, "eval.likelihood")
        self.likelihood = config.eval.likelihood
        self.metric = "nll" if self.likelihood == "pf_ode" else "elbo"
        _choice(m.arch, ARCHS, "model.arch")
        want = "mlp" if len(self.event_shape) == 1 else "unet"
        if m.arch != want:
            raise ValueError(
                f"model.arch={m.arch!r} does not fit data.dataset={config.data.dataset!r} with "
                f"examples of shape {self.event_shape}; use model.arch={want!r}"
            )
        dtype = compute_dtype(m.dtype)

        def build(rngs):
            if m.arch == "mlp":
                return TimeMLP(
                    self.event_shape[0],
                    m.dim,
                    m.depth,
                    rngs=rngs,
                    hidden=int(m.dim * m.mlp_ratio),
                    time_features=m.time_features,
                    dtype=dtype,
                )
            return UNet(
                self.event_shape[-1],
                m.dim,
                tuple(m.channel_mults),
                m.num_res_blocks,
                tuple(m.attention_levels),
                rngs=rngs,
                num_heads=m.num_heads,
                num_groups=m.num_groups,
                dtype=dtype,
                remat=m.remat,
            )

        self.model_def, self.init_params = ModelDef.create(build, config.seed)

    def model_fn(self, params):
        """`(x: [B, ...], t: [B]) -> [B, ...]` in the `continuous.prediction` parameterization."""
        module = self.model_def.module(params)
        network = lambda x, t: module(x, t)
        if self.sigma_data is not None:
            return dc.edm_denoiser(network, self.process, self.sigma_data)
        return network

    def loss(self, params, key, batch):
        """Mean weighted denoising score-matching loss (per dimension) over the batch."""
        per_example = dc.dsm_loss(
            key,
            self.process,
            self.model_fn(params),
            batch,
            prediction=self.prediction,
            t_min=self.t_min,
            t_max=self.t_max,
            **self.loss_options,
        )
        return jnp.mean(per_example), {}

    def eval_nats(self, params, key, batch, num_time_samples: int):
        """`[B]` negative log-likelihood (bound) (`eval.likelihood`) in nats per example."""
        model_fn, d = self.model_fn(params), math.prod(self.event_shape)
        bits = self.source.pixel_bits
        if self.likelihood == "pf_ode":
            logp = dc.log_likelihood(
                key,
                self.process,
                model_fn,
                batch,
                prediction=self.prediction,
                exact_divergence=d <= _EXACT_DIVERGENCE_MAX_DIM,
                t_min=self.t_min,
            )
            # Pixels: the density is of y in [-1, 1]; bins of width 2 / 2^bits add
            # d log(2^(bits - 1)).
            return -logp + (0.0 if bits is None else d * (bits - 1) * math.log(2.0))
        if bits is None:
            terms = dc.elbo_terms(
                key,
                self.process,
                model_fn,
                batch,
                prediction=self.prediction,
                t_min=self.t_min,
                num_time_samples=num_time_samples,
            )
            return terms.total
        half = 2.0 ** (bits - 1) - 0.5
        pixels = jnp.round((batch + 1.0) * half).astype(jnp.int32)  # exact inverse of scaling
        terms = dc.elbo_bpd(
            key,
            self.process,
            model_fn,
            pixels,
            prediction=self.prediction,
            t_min=self.t_min,
            num_time_samples=num_time_samples,
        )
        return terms.total * (d * math.log(2.0))

    def tokens_per_example(self) -> int:
        """Dimensions per example (bits per dim = nats / (dims * log 2))."""
        return math.prod(self.event_shape)

    def sample(self, params, key, num: int):
        """`[num, *event_shape]` float32 samples and the sampler info (`nfe`)."""
        return dc.sample(
            key,
            self.process,
            self.model_fn(params),
            (num, *self.event_shape),
            sampler=self.sampler,
            num_steps=self.num_steps,
            prediction=self.prediction,
            grid=self.grid,
            **self.sample_options,
        )
