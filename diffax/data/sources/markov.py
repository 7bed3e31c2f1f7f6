"""Source "markov": sequences of a random Markov chain, whose exact entropy is known."""

from __future__ import annotations

import numpy as np

from diffax.data.pipeline import indexed_dataset
from diffax.data.sources.base import SOURCES
from diffax.data.sources.sample_files import write_text_samples
from diffax.data.synthetic import MarkovChainSource, entropy_bits
from diffax.data.tokenizers import CharTokenizer

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
# Held-out sequences use indices from 2^41 on; training indices stay below 2^40.
_HELDOUT_START = 2**41
_DEFAULT_EVAL_BATCHES = 16


@SOURCES.register("markov")
class MarkovSource:
    """Length-L sequences of a `MarkovChainSource`, shown as the letters a, b, c, ...

    The evaluation reports the chain's exact entropy per token (`true_entropy`), the floor of
    any ELBO, next to the entropy of its stationary law (`unigram_entropy`).

    Args:
      vocab_size: symbols V (2 <= V <= 36).
      seq_len: sequence length L.
      seed: seed of the chain and of the example stream.
      concentration: Dirichlet concentration of the transition rows.
      num_workers: grain worker processes building training batches.
    """

    kind = "tokens"
    eos_id = None  # fixed-length sequences, no document boundaries

    def __init__(
        self,
        vocab_size: int,
        seq_len: int,
        seed: int,
        concentration: float = 0.5,
        num_workers: int = 0,
    ):
        if vocab_size > len(_ALPHABET):
            raise ValueError(
                f"data.markov_vocab_size={vocab_size} is not allowed; allowed values: 2 .. "
                f"{len(_ALPHABET)}"
            )
        self.chain = MarkovChainSource(vocab_size, seq_len, seed, concentration)
        self.tokenizer = CharTokenizer(_ALPHABET[:vocab_size])
        self.example_shape = (seq_len,)
        self.num_workers = num_workers

    @classmethod
    def from_config(cls, data, seed: int) -> MarkovSource:
        """Reads `data.{markov_vocab_size, seq_len, markov_concentration, num_workers}`."""
        return cls(
            data.markov_vocab_size,
            data.seq_len,
            seed,
            data.markov_concentration,
            data.num_workers,
        )

    def train_dataset(self, batch_per_process: int, shard_index: int, shard_count: int):
        """Infinite `[batch_per_process, L]` int32 sequences (a function of the global index)."""
        return indexed_dataset(
            self.chain,
            batch_per_process,
            shard_index=shard_index,
            shard_count=shard_count,
            num_workers=self.num_workers,
        )

    def eval_batches(self, batch_size: int, max_batches: int) -> list[np.ndarray]:
        """`max_batches` (0: 16) batches of sequences never used in training."""
        num = batch_size * (max_batches or _DEFAULT_EVAL_BATCHES)
        seqs = np.stack([self.chain(_HELDOUT_START + i) for i in range(num)])
        return [seqs[i : i + batch_size] for i in range(0, num, batch_size)]

    def baselines(self) -> dict[str, float]:
        """Stationary (unigram) entropy and the exact entropy per token, in bits."""
        return {
            "unigram_entropy": float(entropy_bits(self.chain.stationary)),
            "true_entropy": self.chain.entropy_bits_per_token(),
        }

    def write_samples(self, samples: np.ndarray, directory: str, step: int):
        """Sequences as letters, one per line, in `samples_{step}.txt`."""
        return write_text_samples(self.tokenizer, samples, directory, step)
