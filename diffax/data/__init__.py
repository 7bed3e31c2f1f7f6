"""Input pipelines (grain) and data sources: text corpora, tokenizers, toy 2-D data, TFDS images.

`SOURCES` resolves `config.data.source` to a `Source` (see `diffax.data.sources`).
"""

from diffax.data.pipeline import heldout_batches, train_dataset, with_workers
from diffax.data.sources import SOURCES, Source, TokenSource, VectorSource, build_source
from diffax.data.text import (
    TokenCorpus,
    builtin_text,
    load_corpus,
    read_text_file,
    unigram_entropy_bits,
)
from diffax.data.tfds_source import (
    KNOWN_IMAGE_DATASETS,
    encode_fixed_length,
    image_dataset,
    image_source,
    is_tfds_dataset,
    ordered_dataset,
    scale_images,
    text_dataset,
    text_source,
    tfds_source,
    unscale_images,
)
from diffax.data.tokenizers import (
    TOKENIZERS,
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
    "SOURCES",
    "TOKENIZERS",
    "Source",
    "TokenSource",
    "VectorSource",
    "build_source",
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
    "encode_fixed_length",
    "hashed_uniforms",
    "heldout_batches",
    "image_dataset",
    "image_source",
    "is_tfds_dataset",
    "load_corpus",
    "ordered_dataset",
    "read_text_file",
    "scale_images",
    "text_dataset",
    "text_source",
    "tfds_source",
    "tokenizers",
    "toy_dataset",
    "toy_distribution",
    "toy_heldout",
    "train_dataset",
    "unigram_entropy_bits",
    "unscale_images",
    "with_workers",
]
