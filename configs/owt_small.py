"""OpenWebText, masked diffusion, MDLM/SEDD "small" (12 layers, width 768, 12 heads, L = 1024).

A 50k subword tokenizer read from a local file (GPT-2's `tokenizer.json`, 50,257 ids, EOS
"<|endoftext|>"); the corpus tokenized once into shards with EOS after every document, read with
concatenate-and-chunk (no padding; attention and loss respect the document boundaries):

    python -m experiments.prepare_text --input=/data/owt/train.txt \
        --tokenizer_path=/data/tok/gpt2.json --output_dir=/data/owt_gpt2_shards --num_shards=64
    python -m experiments.main --config=configs/owt_small.py --workdir=/runs/owt_small \
        --config.data.path=/data/owt_gpt2_shards --config.data.tokenizer_path=/data/tok/gpt2.json

Launch (global batch 512 x 1024 tokens, MDLM's setting):
* 64 GPUs (8 nodes x 8 H100/H200): `sbatch --nodes=8 launch/slurm.sbatch configs/owt_small.py
  /shared/runs/owt_small --config.data.path=...` with the mesh below: data=-1 (64), fsdp=1,
  model=1; 8 sequences per GPU. The 170M-parameter state (parameters, EMA, two Adam moments:
  2.7 GB) fits on every GPU, so plain data parallelism (one gradient all-reduce) is the cheapest.
* TPU v5p-64 (32 chips, one JAX device each): `launch/tpu_vm.sh NAME ZONE configs/owt_small.py
  gs://bucket/runs/owt_small --config.data.path=/mnt/owt_gpt2_shards` (the shards are memory-mapped:
  a local copy or a gcsfuse mount on each of the 8 hosts) with the same mesh (data=32); 16
  sequences per chip.
Blocks keep the outputs of their weight matmuls for the backward pass and recompute the rest
(`model.remat="dots_with_no_batch_dims_saveable"`: about 6% more matmul FLOPs than no remat,
2.7x less activation memory; `experiments/benchmarks/memory.py`, results/memory.json). On an
80 GB GPU `--config.model.remat=none` also fits at 8 x 1024 per GPU and is a little faster;
"full" is the smallest (L = 4096 and beyond). 170M parameters: 85M in the blocks, 77M token
embedding + output head, 7.4M adaLN and time MLP (cond_dim 128). The loss walks the vocabulary
in 3 chunks of 16,768 = 50,304 / 3 classes (V padded to a multiple of 128), none of them padding.
"""

from configs import base


def get_config():
    config = base.get_config()
    config.data.source = "shards"
    config.data.path = ""  # the --output_dir of experiments.prepare_text (required)
    config.data.tokenizer_path = ""  # the same tokenizer file (required; decodes samples)
    config.data.seq_len = 1024
    config.data.num_workers = 4
    config.process.name = "masked"
    config.process.schedule = "loglinear"
    config.model.dim = 768
    config.model.depth = 12
    config.model.num_heads = 12
    config.model.mlp_ratio = 4.0
    config.model.cond_dim = 128
    config.model.dtype = "bfloat16"
    config.model.attention = "auto"  # cudnn on GPU, splash on TPU
    config.model.scan_layers = True
    config.model.remat = "dots_with_no_batch_dims_saveable"
    config.model.vocab_multiple = 128
    config.optimizer.lr = 3e-4
    config.optimizer.warmup_steps = 2500
    config.optimizer.decay = "constant"
    config.optimizer.b2 = 0.999
    config.optimizer.weight_decay = 0.0
    config.train.num_steps = 1_000_000
    config.train.batch_size = 512
    config.train.loss = "masked_elbo"
    config.train.loss_vocab_chunk = 16_768
    config.train.ema_decay = 0.9999
    config.train.log_every = 500
    config.mesh.data = -1
    config.mesh.fsdp = 1
    config.mesh.model = 1
    config.checkpoint.every_steps = 5000
    config.checkpoint.keep_every = 100_000
    config.eval.every_steps = 50_000
    config.eval.batch_size = 512
    config.eval.max_batches = 16
    config.eval.num_time_samples = 1
    config.sample.num_steps = 1000
    config.sample.num_samples = 64
    return config
