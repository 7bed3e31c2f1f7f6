"""The launch configs `configs/owt_small.py` and `configs/owt_1b.py`: what they declare, and
owt_small with tiny overrides training 20 steps on CPU from prepared shards.

The data path is the real one: a byte-level BPE (Hugging Face `tokenizers`) trained offline on
the built-in corpus, documents tokenised into shards by `python -m experiments.prepare_text`, the
run through `diffax.training.train` (source "shards", segment ids from EOS).
"""

import json
import math
import os
import subprocess
import sys

import pytest

from configs import owt_1b, owt_small
from diffax.training import train
from diffax.training.mesh import resolve_mesh_shape
from tests.data.conftest import train_bpe

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_owt_small_is_the_mdlm_small_model():
    c = owt_small.get_config()
    assert (c.model.dim, c.model.depth, c.model.num_heads, c.data.seq_len) == (768, 12, 12, 1024)
    assert (c.data.source, c.model.cond_dim, c.model.dtype) == ("shards", 128, "bfloat16")
    assert c.train.loss == "masked_elbo" and c.train.loss_vocab_chunk > 0
    assert c.is_locked


def test_owt_1b_is_1b_class_with_remat():
    c = owt_1b.get_config()
    assert (c.model.dim, c.model.depth, c.model.num_heads) == (2048, 24, 16)
    assert c.model.remat != "none" and c.model.scan_layers
    # Blocks alone: 12 dim^2 per layer (qkv, projection, 4x MLP) = 1.2B parameters.
    assert 1.0e9 < 12 * c.model.dim**2 * c.model.depth < 1.5e9


@pytest.mark.parametrize("module", [owt_small, owt_1b])
@pytest.mark.parametrize("devices", [64, 32])  # 64 GPUs; a v5p-64 slice has 32 chips
def test_meshes_fit_the_launch_targets(module, devices):
    c = module.get_config()
    data, fsdp, model = resolve_mesh_shape(dict(c.mesh), devices)
    assert data * fsdp * model == devices
    assert c.train.batch_size % (data * fsdp) == 0


def _prepare_shards(tmp_path) -> tuple[str, str]:
    from diffax.data import builtin_documents

    tokenizer = train_bpe(tmp_path / "bpe300.json")
    corpus = tmp_path / "docs.txt"
    docs = [" ".join(d.split()) for d in builtin_documents()]
    corpus.write_text("\n".join(d for d in docs if d) + "\n", encoding="utf-8")
    out = tmp_path / "shards"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.prepare_text",
            f"--input={corpus}",
            "--document_format=lines",
            f"--tokenizer_path={tokenizer}",
            f"--output_dir={out}",
            "--num_shards=2",
            "--heldout_fraction=0.05",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    return tokenizer, str(out)


@pytest.mark.slow
def test_owt_small_with_tiny_overrides_trains_20_steps(tmp_path):
    tokenizer, shards = _prepare_shards(tmp_path)
    c = owt_small.get_config()
    c.data.path, c.data.tokenizer_path = shards, tokenizer
    c.data.seq_len, c.data.num_workers = 32, 0
    c.model.dim, c.model.depth, c.model.num_heads = 32, 2, 2
    c.optimizer.lr, c.optimizer.warmup_steps = 3e-3, 2
    c.train.num_steps, c.train.batch_size, c.train.log_every = 20, 16, 10
    c.train.progress_bar = False
    c.checkpoint.every_steps = 20
    c.eval.batch_size, c.eval.max_batches = 16, 1
    c.sample.num_steps, c.sample.num_samples = 4, 8
    workdir = tmp_path / "run"
    result = train(c, str(workdir))
    bits = [v for k, v in result.items() if k.startswith("elbo_bits_per_")]
    assert bits and math.isfinite(bits[0])
    # A subword model: ~log2(300) = 8.2 bits per token before training, less after 20 steps.
    assert bits[0] < math.log2(300)
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl") if line.strip()]
    steps = [r["step"] for r in rows if r.get("split") == "train"]
    assert max(steps) == 20
    assert os.path.isdir(workdir / "checkpoints" / "20")
