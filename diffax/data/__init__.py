"""Input pipelines (grain) and data sources: text corpora, tokenizers."""

from diffax.data.pipeline import heldout_batches, train_dataset
from diffax.data.text import (
    TokenCorpus,
    builtin_text,
    load_corpus,
    read_text_file,
    unigram_entropy_bits,
)
from diffax.data.tokenizers import ByteTokenizer, CharTokenizer, Text8Tokenizer, Tokenizer, tokenizers

__all__ = [
    "ByteTokenizer",
    "CharTokenizer",
    "Text8Tokenizer",
    "TokenCorpus",
    "Tokenizer",
    "builtin_text",
    "heldout_batches",
    "load_corpus",
    "read_text_file",
    "tokenizers",
    "train_dataset",
    "unigram_entropy_bits",
]
