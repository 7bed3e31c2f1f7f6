"""A user-written absorbing process (Protocol only, no `Masked` inside) trains and samples.

`Absorbing` below implements every member of `diffax.discrete.Process` with its own math. The
losses, the likelihood and the samplers read it only through that Protocol, so their answers must
equal the exact ones from enumeration, and those of `dd.Masked` with the same schedule.
"""

import dataclasses
import functools
import itertools
import math

import chex
import discrete_support as sup
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.discrete as dd

TGT = sup.target()
X0 = TGT.sequences[[0, 13, 26]]  # an unlikely, a middling and a likely sequence
JIT_OR_NOT = pytest.mark.parametrize("transform", [lambda f: f, jax.jit], ids=["eager", "jit"])


def _per_example(t, batch: int) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch,))[:, None, None]


@dataclasses.dataclass(frozen=True)
class Absorbing:
    """Tokens jump to the absorbing id V at rate beta(t) = -alpha'/alpha and stay there."""

    vocab_size: int
    schedule: dd.Schedule = dataclasses.field(default_factory=dd.LinearSchedule)

    mask_id = property(lambda self: self.vocab_size)
    num_states = property(lambda self: self.vocab_size + 1)
    num_input_ids = property(lambda self: self.vocab_size + 1)
    rates_converge_at_alpha0 = property(lambda self: False)

    def check_prediction(self, prediction):
        if prediction not in dd.PREDICTIONS:
            raise ValueError(f"prediction must be one of {dd.PREDICTIONS}, got {prediction!r}")
        if prediction == "concrete_score" and self.schedule.alpha_at(1.0) == 0.0:
            raise ValueError("prediction='concrete_score' needs alpha(1) > 0")

    def prior_kl(self, x0):
        return dd.prior_kl_from_marginal(self, x0)

    def alpha(self, t):
        return self.schedule.alpha(t)

    def _kernel(self, keep):  # [B] probabilities of staying clean -> [B, S, S]
        keep = jnp.asarray(keep, jnp.float32)[:, None, None]
        eye = jnp.eye(self.num_states)
        to_mask = jnp.zeros_like(eye).at[:, self.mask_id].set(1.0)
        clean_rows = keep * eye + (1.0 - keep) * to_mask
        return jnp.where(
            (jnp.arange(self.num_states) == self.mask_id)[:, None], to_mask, clean_rows
        )

    def _rows(self, kernel, x):  # rows kernel[b, x[b, l], :] -> [B, L, S]
        return kernel[jnp.arange(x.shape[0])[:, None], x]

    def generator(self, t):
        q = np.zeros((self.num_states, self.num_states))
        q[: self.vocab_size, self.mask_id] = 1.0
        q[np.arange(self.vocab_size), np.arange(self.vocab_size)] = -1.0
        return self.schedule.rate(jnp.atleast_1d(t))[:, None, None] * jnp.asarray(q, jnp.float32)

    def transition_matrix(self, s, t):
        return self._kernel(self.alpha(jnp.atleast_1d(t)) / self.alpha(jnp.atleast_1d(s)))

    def marginal_matrix(self, t):
        return self._kernel(self.alpha(jnp.atleast_1d(t)))

    def transition_probs(self, x, s, t):
        s, t = (jnp.broadcast_to(jnp.asarray(u, jnp.float32), x.shape[:1]) for u in (s, t))
        return self._rows(self.transition_matrix(s, t), x)

    def marginal_probs(self, x0, t):
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x0.shape[:1])
        return self._rows(self.marginal_matrix(t), x0)

    def sample_marginal(self, key, x0, t):
        keep = jax.random.uniform(key, x0.shape) < self.alpha(_per_example(t, len(x0)))[..., 0]
        return jnp.where(keep, x0, self.mask_id).astype(jnp.int32)

    def prior_probs(self):
        a1 = self.schedule.alpha_at(1.0)
        return jnp.asarray([a1 / self.vocab_size] * self.vocab_size + [1.0 - a1], jnp.float32)

    def sample_prior(self, key, shape):
        return jax.random.categorical(key, jnp.log(self.prior_probs()), shape=shape).astype(
            jnp.int32
        )

    def forward_rates(self, x, t):
        beta = self.schedule.rate(_per_example(t, len(x)))
        to_mask = jax.nn.one_hot(jnp.full_like(x, self.mask_id), self.num_states)
        return jnp.where((x != self.mask_id)[..., None], beta * to_mask, 0.0)

    def _log_odds(self, t, batch):  # log(alpha / (1 - alpha)), [B, 1, 1]
        t = _per_example(t, batch)
        return jnp.log(self.alpha(t)) - jnp.log(self.schedule.one_minus_alpha(t))

    def _with_mask(self, clean, x, mask_column):
        column = jnp.broadcast_to(mask_column, clean.shape[:-1] + (1,))
        rows = jnp.concatenate([clean, column], axis=-1)
        stay = jnp.where(jax.nn.one_hot(x, self.num_states) > 0, 0.0, -jnp.inf)
        return jnp.where((x == self.mask_id)[..., None], rows, stay)

    def reverse_rates(self, x, t, *, log_p0=None, log_r=None):
        if log_p0 is None:
            log_p0 = log_r - self._log_odds(t, len(x))
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
        scale = -self.schedule.dalpha(t) / self.schedule.one_minus_alpha(t)
        rel = self._with_mask(jax.nn.log_softmax(log_p0, axis=-1), x, -jnp.inf)
        return scale, jnp.where((x == self.mask_id)[..., None], rel, -jnp.inf)

    def posterior_logits(self, x, s, t, log_p0):
        a_s, a_t = self.alpha(_per_example(s, len(x))), self.alpha(_per_example(t, len(x)))
        reveal = jnp.log(a_s - a_t) - jnp.log1p(-a_t) + jax.nn.log_softmax(log_p0, axis=-1)
        return self._with_mask(reveal, x, jnp.log1p(-a_s) - jnp.log1p(-a_t))

    def tweedie_logits(self, x, s, t, log_r):
        return self.posterior_logits(x, s, t, self.log_ratios_to_denoiser(log_r, x, t))

    def denoiser_to_log_ratios(self, log_p0, x, t):
        return jax.nn.log_softmax(log_p0, axis=-1) + self._log_odds(t, len(x))

    def log_ratios_to_denoiser(self, log_r, x, t):
        del x, t
        return jax.nn.log_softmax(log_r, axis=-1)


USER = Absorbing(sup.V)
EXACT = TGT.denoiser(USER)


@functools.cache
def _perturbed(process):
    """A time-free model that is not the exact denoiser."""
    bias = 0.7 * jnp.sin(jnp.arange(sup.L * sup.V, dtype=jnp.float32)).reshape(sup.L, sup.V)
    return lambda xt, t: TGT.denoiser(process)(xt, t) + bias


@functools.cache
def _exact_bound(process, model_fn) -> np.ndarray:
    """E[-ELBO] of a time-free model by enumeration of the mask patterns (linear schedule).

    Masks of size k carry weight int_0^1 t^(k-1) (1 - t)^(L-k) dt = 1 / (k C(L, k)).
    """
    x0 = jnp.asarray(TGT.sequences, jnp.int32)
    bound = np.zeros(len(x0))
    for k in range(1, sup.L + 1):
        for subset in itertools.combinations(range(sup.L), k):
            xt = x0.at[:, list(subset)].set(process.mask_id)
            logp = jax.nn.log_softmax(model_fn(xt, jnp.full(len(x0), 0.5)), axis=-1)
            nll = -jnp.take_along_axis(logp, x0[..., None], -1)[..., 0][:, list(subset)]
            bound += np.asarray(nll.sum(-1), np.float64) / (k * math.comb(sup.L, k))
    return bound


def test_protocol_members_are_all_implemented():
    members = [m for m in dir(dd.Process) if not m.startswith("_")] + ["vocab_size", "schedule"]
    missing = [m for m in members if not hasattr(USER, m)]
    assert not missing, missing
    chex.assert_shape(USER.prior_kl(jnp.asarray(X0, jnp.int32)), (3,))
    np.testing.assert_allclose(
        USER.marginal_matrix(jnp.array([0.3])), dd.Masked(sup.V).marginal_matrix(jnp.array([0.3]))
    )
    with pytest.raises(ValueError, match="prediction"):
        USER.check_prediction("x0")


@JIT_OR_NOT
def test_masked_elbo_equals_masked_and_the_enumerated_bound(transform):
    """(a) Same key, same schedule: the user process gives Masked's values; and the Monte-Carlo
    mean equals the exact -ELBO of a (non-exact) model, enumerated over the mask patterns."""
    x0 = jnp.asarray(TGT.sequences, jnp.int32)
    key = jax.random.key(3)
    ours = transform(lambda k: dd.masked_elbo(k, USER, _perturbed(USER), x0))(key)
    masked = dd.Masked(sup.V)
    theirs = transform(lambda k: dd.masked_elbo(k, masked, _perturbed(masked), x0))(key)
    chex.assert_shape(ours, (len(x0),))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    exact = _exact_bound(USER, _perturbed(USER))
    n = 4096
    batch = jnp.broadcast_to(x0[13], (n, sup.L))
    nats = np.asarray(
        transform(lambda k: dd.masked_elbo(k, USER, _perturbed(USER), batch))(key), np.float64
    )
    assert abs(nats.mean() - exact[13]) < 4 * nats.std() / np.sqrt(n), (nats.mean(), exact[13])


@JIT_OR_NOT
def test_exact_denoiser_bound_is_tight(transform):
    """(b) With the exact denoiser E[-ELBO] = -log p(x) (the masked bound is tight); the elbo
    terms sum to `elbo`, the prior term is the closed form 0 (alpha(1) = 0); other models are
    looser on average."""
    model = EXACT
    np.testing.assert_allclose(_exact_bound(USER, model), TGT.nll(TGT.sequences), rtol=1e-5)
    # Tiled, not repeated: the default stratified times then cover (0, 1] for every sequence.
    batch = jnp.tile(jnp.asarray(X0, jnp.int32), (4096, 1))
    nats = transform(lambda k: dd.masked_elbo(k, USER, model, batch))(jax.random.key(1))
    nats = np.asarray(nats, np.float64).reshape(-1, 3).T
    stderr = nats.std(1) / np.sqrt(nats.shape[1])
    assert np.all(np.abs(nats.mean(1) - TGT.nll(X0)) < 4 * stderr), (nats.mean(1), stderr)
    batch = jnp.repeat(jnp.asarray(X0, jnp.int32), 1024, axis=0)
    terms = transform(lambda k: dd.elbo_terms(k, USER, model, batch, num_samples=2))(
        jax.random.key(0)
    )
    total = transform(lambda k: dd.elbo(k, USER, model, batch, num_samples=2))(jax.random.key(0))
    chex.assert_trees_all_close(terms.total, total, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(terms.prior, jnp.zeros(len(batch)), atol=1e-6)
    nats = np.asarray(terms.total, np.float64).reshape(3, -1)
    stderr = nats.std(1) / np.sqrt(nats.shape[1])
    assert np.all(np.abs(nats.mean(1) - TGT.nll(X0)) < 4 * stderr), (nats.mean(1), stderr)
    worse = TGT.probs @ _exact_bound(USER, _perturbed(USER))
    assert worse > TGT.entropy() + 0.01


def test_training_a_table_model_decreases_masked_elbo():
    """(c) Plain SGD on a `[L, V]` logits table (a position-wise model) with `masked_elbo`.

    For a time-free factorized model every position is predicted exactly once in expectation,
    so E[-ELBO] = sum_l CE(marginal_l, softmax(table_l)): from L log V at zero logits down to
    the sum of the marginal entropies at the optimum.
    """
    columns = TGT.sequences.T
    marginals = np.stack([np.bincount(c, TGT.probs, sup.V) for c in columns])
    optimum = float(-(marginals * np.log(marginals)).sum())

    def loss(table, key):
        model = lambda xt, t: jnp.broadcast_to(table, xt.shape + (sup.V,))
        x0 = TGT.sample(jax.random.fold_in(key, 1), 256)
        return jnp.mean(dd.masked_elbo(key, USER, model, x0))

    @jax.jit
    def train(table):
        def step(table, i):
            value, grad = jax.value_and_grad(loss)(table, jax.random.key(i))
            return table - 0.5 * grad, value

        return jax.lax.scan(step, table, jnp.arange(300))

    table, values = train(jnp.zeros((sup.L, sup.V)))
    exact = lambda table: float(-(marginals * jax.nn.log_softmax(table, -1)).sum())
    assert exact(jnp.zeros((sup.L, sup.V))) == pytest.approx(sup.L * math.log(sup.V), rel=1e-6)
    assert exact(table) < optimum + 0.02, (exact(table), optimum)
    assert float(values[-50:].mean()) < float(values[:10].mean()) - 0.2


N = 8000


@pytest.mark.parametrize("sampler, num_steps", [("ancestral", 64), ("first_hitting", 3)])
def test_samplers_reproduce_the_target(sampler, num_steps):
    """(d) Driven by the exact denoiser of the user process, the samplers reproduce the target:
    first-hitting exactly (within sampling noise), ancestral within the small step error."""
    x, nfe = sup.run_sampler(USER, EXACT, sampler, num_steps, N)
    tv = TGT.total_variation(x)
    if sampler == "first_hitting":
        assert tv < sup.tv_threshold(TGT, N) and nfe == sup.L, (tv, nfe)
    else:
        assert tv < 0.05, tv
