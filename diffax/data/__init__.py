"""Input pipelines (grain) and data sources: text corpora, tokenizers, toy 2-D data, TFDS images."""

from diffax.data.pipeline import heldout_batches, train_dataset
from diffax.data.text import (
    TokenCorpus,
    builtin_text,
    load_corpus,
    read_text_file,
    unigram_entropy_bits,
)
from diffax.data.tfds_source import (
    KNOWN_IMAGE_DATASETS,
    image_dataset,
    image_source,
    is_tfds_dataset,
    scale_images,
    unscale_images,
)
from diffax.data.tokenizers import (
    ByteTokenizer,
    CharTokenizer,
    Text8Tokenizer,
    Tokenizer,
    tokenizers,
)
from diffax.data.toy import (
    TOY_DISTRIBUTIONS,
    Checkerboard,
    GaussianGrid,
    GaussianRing,
    SwissRoll,
    ToyDistribution,
    TwoMoons,
    hashed_uniforms,
    toy_dataset,
    toy_distribution,
    toy_heldout,
)

__all__ = [
    "KNOWN_IMAGE_DATASETS",
    "TOY_DISTRIBUTIONS",
    "ByteTokenizer",
    "CharTokenizer",
    "Checkerboard",
    "GaussianGrid",
    "GaussianRing",
    "SwissRoll",
    "ToyDistribution",
    "TwoMoons",
    "Text8Tokenizer",
    "TokenCorpus",
    "Tokenizer",
    "builtin_text",
    "hashed_uniforms",
    "heldout_batches",
    "image_dataset",
    "image_source",
    "is_tfds_dataset",
    "load_corpus",
    "read_text_file",
    "scale_images",
    "tokenizers",
    "toy_dataset",
    "toy_distribution",
    "toy_heldout",
    "train_dataset",
    "unigram_entropy_bits",
    "unscale_images",
]
