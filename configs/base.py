"""The base config: every key any diffax experiment may set, with defaults.

Experiment files start from `get_config()` here and override values; the config is locked, so a key
that is not defined here is an error (in a config file and on the command line alike).

Every key has one meaning. Sections read by one task only: `discrete` and the `process.schedule*`
keys (task "text_diffusion"); `continuous`, `process.{beta_min, beta_max, sigma_min, sigma_max}`,
`model.{arch, time_features, channel_mults, num_res_blocks, attention_levels, num_groups}` and
`eval.likelihood` (task "continuous_diffusion").

Sampler options: `sample.options` holds the sampler-specific keywords as comma-separated
`keyword=literal` pairs, exactly as they would be passed to `sample(...)`:

    config.sample.sampler = "remdm"
    config.sample.options = "eta=0.02, strategy='cap'"

or on the command line `--config.sample.options="eta=0.02"`. They are checked against the
sampler's keywords (`diffax.discrete.sampler_options(name)` / `diffax.continuous.
sampler_options(name)`) before a run writes anything. `sample.temperature` and `sample.top_p`
are passed the same way when they differ from 1.0 (setting one of them in both places is an
error).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.task = "text_diffusion"
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    # The data source (diffax.data.SOURCES). Text (task text_diffusion): builtin (Python's docs
    # corpus) | text_file (data.path) | tfds (TFDS text, data.dataset, e.g. lm1b) | markov
    # (synthetic, exact entropy). Vectors (task continuous_diffusion): toy (data.dataset, a 2-D
    # toy distribution) | tfds_images (data.dataset, e.g. mnist).
    config.data.source = "builtin"
    config.data.path = ""  # UTF-8 file for source=text_file
    config.data.tokenizer = "text8"  # text8 (a-z + space) | char | byte
    config.data.seq_len = 64
    config.data.heldout_fraction = 0.1
    config.data.num_workers = 0  # grain worker processes building batches (0: in the main process)
    config.data.text_key = "text"  # text feature of a TFDS text dataset (source=tfds)
    config.data.markov_vocab_size = 8  # source=markov: symbols of the synthetic Markov chain
    config.data.markov_concentration = 0.5  # source=markov: Dirichlet concentration of its rows
    # A subword tokenizer read from a local file (never downloaded): a Hugging Face `tokenizers`
    # JSON (*.json) or a sentencepiece model (*.model). When set it replaces data.tokenizer.
    config.data.tokenizer_path = ""

    config.process = ml_collections.ConfigDict()
    config.process.name = "masked"
    config.process.schedule = "linear"  # linear | cosine | loglinear | geometric | polynomial
    config.process.schedule_eps = 1e-3  # loglinear schedule
    config.process.schedule_power = 1.0  # polynomial schedule
    # geometric schedule: total noise sigma_min^(1-t) sigma_max^t (SEDD). Not the VE/EDM noise
    # levels process.sigma_min/sigma_max of the continuous task.
    config.process.schedule_sigma_min = 1e-4
    config.process.schedule_sigma_max = 20.0

    config.discrete = ml_collections.ConfigDict()
    config.discrete.prediction = "denoiser"  # denoiser | concrete_score
    # Block diffusion (BD3-LM, task text_diffusion, process masked): blocks of this many tokens
    # (dividing data.seq_len); the network is trained on the two-stream input [x_t ; x_0] with
    # the block-diffusion attention mask and decodes block by block with a KV cache. 0: off.
    config.discrete.block_size = 0
    # Training times t ~ U[t_min, t_max] for block diffusion (BD3-LM's clipped "data-driven"
    # schedule, e.g. 0.3 / 0.8); evaluation always uses the whole [0, 1] (the NELBO).
    config.discrete.t_min = 0.0
    config.discrete.t_max = 1.0
    # Prefix conditioning (classifier-free guidance for text): the first cond_prefix tokens of
    # each sequence are the condition, never noised and not in the loss; with probability
    # cond_dropout the condition is dropped (masked) so the same network is also unconditional.
    config.discrete.cond_prefix = 0
    config.discrete.cond_dropout = 0.0

    config.model = ml_collections.ConfigDict()
    config.model.dim = 128
    config.model.depth = 3
    config.model.num_heads = 4
    config.model.mlp_ratio = 4.0
    config.model.time_conditioning = True
    config.model.dtype = "float32"  # float32 | bfloat16 (compute; parameters stay float32)
    config.model.cond_dim = 128  # width of the time condition feeding adaLN (MDLM/SEDD: 128)
    # Attention backend: auto (cudnn on GPU, splash on TPU, xla elsewhere) | xla | cudnn | splash
    config.model.attention = "auto"
    config.model.scan_layers = True  # blocks under nnx.scan with stacked parameters
    # Rematerialisation of each block in the backward pass: none | full | dots_saveable |
    # dots_with_no_batch_dims_saveable | offload_dots (GPU/TPU) ...
    config.model.remat = "none"
    config.model.vocab_multiple = 128  # output classes padded to a multiple of this (1: none)

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.lr = 2e-3
    config.optimizer.warmup_steps = 200
    config.optimizer.decay = "cosine"  # cosine | constant
    config.optimizer.weight_decay = 0.0
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.grad_clip = 1.0
    config.optimizer.moment_dtype = "float32"  # float32 | bfloat16 (Adam first/second moments)

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 1500
    config.train.batch_size = 64  # global batch (all processes, all accumulation steps)
    config.train.accum_steps = 1
    config.train.loss = "masked_elbo"  # masked_elbo | score_entropy | ctmc_elbo | flow_matching_ce
    # masked_elbo: logits and cross-entropy in vocab chunks of this many classes, with a custom
    # gradient, never materialising [B, L, V] logits (0: full logits).
    config.train.loss_vocab_chunk = 8192
    config.train.z_loss = 0.0  # weight of the z-loss (log Z)^2 on the denoiser logits (PaLM)
    config.train.ema_decay = 0.99
    config.train.log_every = 100
    config.train.progress_bar = True
    # Dead-run detection: stop (exit 1, no new checkpoint) when more than max_skipped_fraction of
    # the last dead_run_window steps were skipped by the NaN/inf guard (shorter runs: of all
    # steps), or when an evaluation is not finite.
    config.train.dead_run_window = 100
    config.train.max_skipped_fraction = 0.5

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1  # -1: all devices not used by the other axes
    config.mesh.fsdp = 1
    config.mesh.model = 1
    # logical parameter axis -> mesh axis (None: replicated)
    config.mesh.rules = (
        ("embed", "fsdp"),
        ("mlp", "model"),
        ("heads", "model"),
        ("vocab", "model"),
    )

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 500
    config.checkpoint.keep = 3
    config.checkpoint.keep_every = 0  # also keep every N-th step (0: off)

    config.eval = ml_collections.ConfigDict()
    config.eval.every_steps = 0  # 0: only at the end of training
    config.eval.batch_size = 128
    config.eval.num_time_samples = 4  # Monte-Carlo time samples per held-out example (ELBO)
    config.eval.max_batches = 0  # 0: the whole held-out split
    config.eval.use_ema = True

    config.sample = ml_collections.ConfigDict()
    config.sample.sampler = "ancestral"
    config.sample.num_steps = 64
    config.sample.temperature = 1.0
    config.sample.top_p = 1.0  # nucleus sampling of the denoiser (1.0: off)
    # Sampler-specific keywords, "key=value, ..." (e.g. "eta=0.02" for remdm, "block_length=16"
    # for confidence, "s_churn=1.0" for edm_heun); see the module docstring.
    config.sample.options = ""
    config.sample.num_samples = 16  # sequences / examples generated
    # Classifier-free guidance weight w for a prefix-conditioned model (discrete.cond_prefix):
    # 1.0 the conditional model, 0.0 the unconditional one, > 1 stronger guidance.
    config.sample.guidance_scale = 1.0
    # Block decoding. Block diffusion models (discrete.block_size > 0) always decode block by
    # block; kv_cache: exact (cache the clean prefix) | none. Full-attention masked models decode
    # semi-autoregressively when sample.block_size > 0; kv_cache: none | prefix | dual
    # (Fast-dLLM's approximate caches, refreshed every sample.refresh_every steps; 0: at block
    # starts only).
    config.sample.block_size = 0
    config.sample.kv_cache = "none"
    config.sample.refresh_every = 0
    # Any-length generation: stop a sequence at its first eos_id (-1: no EOS stop), at most
    # max_length tokens (0: data.seq_len).
    config.sample.eos_id = -1
    config.sample.max_length = 0
    config.sample.num_print = 4
    config.sample.every_steps = 0

    # ---- continuous diffusion (task="continuous_diffusion"; configs/toy2d.py, checkerboard.py,
    # mnist.py, cifar10.py). It also reads the shared keys above: process.name (vp | subvp | ve |
    # edm | rectified_flow | cosine), process.schedule (vp only: linear | cosine), train.loss
    # ("dsm"), model.{dim, depth, mlp_ratio, num_heads, dtype}, eval.num_time_samples,
    # sample.{sampler, num_steps, num_samples, options} (a diffax.continuous sampler).
    # data.dataset: a toy distribution (gaussian_ring | gaussian_grid | checkerboard | two_moons |
    # swiss_roll; data.source="toy") or a TFDS dataset (TFDS images: mnist | fashion_mnist |
    # cifar10 | cifar100 | ... with data.source="tfds_images"; TFDS text: lm1b, source "tfds").
    config.data.dataset = "gaussian_ring"
    config.data.data_dir = ""  # TFDS data_dir holding the prepared (array_record) image dataset
    config.data.train_split = "train"  # TFDS split spec for training
    config.data.eval_split = "test"  # TFDS split spec for evaluation
    config.data.num_heldout = 4096  # toy data: number of held-out examples for evaluation
    config.process.beta_min = 0.1  # vp (schedule linear), subvp
    config.process.beta_max = 20.0  # vp (schedule linear), subvp
    config.process.sigma_min = 0.01  # ve, edm (EDM paper: 0.002)
    config.process.sigma_max = 50.0  # ve, edm (EDM paper: 80)
    # model.arch: mlp (TimeMLP: width model.dim, model.depth blocks, hidden mlp_ratio * dim; for
    # vector data) | unet (UNet with model.dim base channels; for images).
    config.model.arch = "mlp"
    config.model.time_features = 64  # mlp: sinusoidal time features
    config.model.channel_mults = (1, 2, 2)  # unet: width multiplier per resolution level
    config.model.num_res_blocks = 2  # unet: residual blocks per level
    config.model.attention_levels = (1,)  # unet: levels (0 = full resolution) with attention
    config.model.num_groups = 32  # unet: GroupNorm groups
    config.continuous = ml_collections.ConfigDict()
    config.continuous.prediction = "eps"  # eps | x0 | v | score | velocity
    config.continuous.preconditioning = "none"  # none | edm (needs prediction=x0)
    config.continuous.sigma_data = 0.5  # edm preconditioning and the edm weighting
    # Loss weighting: eps | simple | likelihood | snr | x0 | v | edm | flow_matching.
    config.continuous.weighting = "eps"
    # Training-time sampler: uniform | stratified | antithetic | importance | lognormal.
    config.continuous.time_sampler = "uniform"
    config.continuous.t_min = 1e-5  # smallest training time; also the ELBO's t_min
    config.continuous.t_max = 1.0  # largest training time
    config.eval.likelihood = "elbo"  # continuous task: elbo | pf_ode (probability-flow ODE NLL)
    # Continuous samplers' time grid: default (the sampler's own) | uniform | logsnr | karras |
    # quadratic.
    config.sample.grid = "default"

    config.lock()
    return config
