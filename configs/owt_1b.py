"""OpenWebText, masked diffusion, a 1B-class model (24 layers, width 2048, 16 heads, L = 1024).

1.45B parameters: 1.21B in the blocks, 206M token embedding + output head, 39M adaLN and time
MLP (cond_dim 128). Data as in
`configs/owt_small.py` (shards from `experiments.prepare_text`, a 50k tokenizer file):

    python -m experiments.main --config=configs/owt_1b.py --workdir=/runs/owt_1b \
        --config.data.path=/data/owt_gpt2_shards --config.data.tokenizer_path=/data/tok/gpt2.json

Launch (global batch 512 x 1024 tokens):
* 64 GPUs (8 nodes x 8 H100/H200, 80/141 GB): `sbatch --nodes=8 launch/slurm.sbatch
  configs/owt_1b.py /shared/runs/owt_1b --config.data.path=...` with the mesh below: fsdp=8 (the
  GPUs of one node, over NVLink) x data=-1 (8, across nodes); 8 sequences per GPU. The train state
  (float32 parameters, EMA and two Adam moments: 23 GB) is sharded over the 8 GPUs of a node
  (2.9 GB each).
* TPU v5p-64 (32 chips, one JAX device each, 95 GB HBM): `launch/tpu_vm.sh NAME ZONE
  configs/owt_1b.py gs://bucket/runs/owt_1b --config.data.path=/mnt/owt_gpt2_shards
  --config.mesh.fsdp=-1 --config.mesh.data=1` (FSDP over the whole slice: ICI is fast enough;
  shards memory-mapped from a local copy or gcsfuse mount on each host); 16 sequences per chip.
Blocks are rematerialised (`model.remat="full"`): `experiments/benchmarks/memory.py` measures the
temp memory per device on 8 fake devices (results/memory.json); L = 8192 fits an 80 GB GPU with it.
The loss walks the vocabulary in 3 chunks of 16,768 = 50,304 / 3 classes (V padded to a multiple
of 128): no chunk is padding (8,192 would pad to 57,344 and waste 14% of the head's FLOPs).
"""

from configs import owt_small


def get_config():
    """owt_small's data, process and loss settings with the 1B-class model and its optimizer."""
    config = owt_small.get_config()
    config.model.dim = 2048
    config.model.depth = 24
    config.model.num_heads = 16
    config.model.remat = "full"
    config.optimizer.lr = 2e-4
    config.optimizer.decay = "cosine"
    config.optimizer.b2 = 0.95
    config.optimizer.weight_decay = 0.1
    config.train.num_steps = 500_000
    config.train.z_loss = 1e-4
    config.mesh.data = -1
    config.mesh.fsdp = 8
    config.mesh.model = 1
    config.checkpoint.every_steps = 2000
    config.checkpoint.keep_every = 50_000
    config.eval.every_steps = 25_000
    return config
