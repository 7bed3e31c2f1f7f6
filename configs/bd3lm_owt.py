"""OpenWebText, block diffusion (BD3-LM) with blocks of 16 tokens: launch-sized, from owt_small.

The data path, tokenizer, network (12 layers, width 768, 170M parameters), mesh and optimizer
are those of `configs/owt_small.py` (see its docstring for preparing the shards and launching on
64 GPUs or a TPU v5p-64); what changes:

* `discrete.block_size = 16`: the loss is the block NELBO over the two-stream input
  [x_t ; x_0] (2 x 1024 tokens per sequence, so about twice the FLOPs of owt_small per step)
  with the block-diffusion attention mask; packed documents keep their segment ids on both
  halves.
* Training times t ~ U[0.3, 0.8] per block: BD3-LM's clipped ("data-driven") schedule for
  block size 16 (Arriola et al. 2025, sec. 5; their search gives [0.45, 0.95] for blocks of 4
  and [0.3, 0.8] for 8 and 16). Evaluation integrates over the whole [0, 1] (the NELBO).
* Time-free network, as in BD3-LM.
* Decoding: 64 blocks of 16 tokens with an exact KV cache, 16 steps per block (1024 in all),
  stopping each sequence at its first generated EOS (GPT-2's <|endoftext|> = 50256; set
  sample.eos_id=-1, or another id, for another tokenizer).

    python -m experiments.main --config=configs/bd3lm_owt.py --workdir=/runs/bd3lm_owt \
        --config.data.path=/data/owt_gpt2_shards --config.data.tokenizer_path=/data/tok/gpt2.json
"""

from configs import owt_small


def get_config():
    config = owt_small.get_config()
    config.model.time_conditioning = False
    config.discrete.block_size = 16
    config.discrete.t_min = 0.3
    config.discrete.t_max = 0.8
    config.sample.kv_cache = "exact"
    config.sample.num_steps = 1024  # 64 blocks x 16 steps
    config.sample.eos_id = 50256
    return config
