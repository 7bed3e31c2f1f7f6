"""Data sources behind one interface (`Source`), resolved by name through `SOURCES`.

Registered sources (`config.data.source`): "builtin" (the Python docs corpus), "text_file" (a
local UTF-8 file), "markov" (a synthetic Markov chain with exact entropy), "tfds" (a TFDS text
dataset such as LM1B), "shards" (token shards prepared by `experiments/prepare_text.py`),
"tfds_images" (a TFDS image dataset) and "toy" (a 2-D toy distribution).
Each module registers one source; importing this package registers them all.
"""

from diffax.data.sources.base import (
    SOURCES,
    Source,
    SourceFactory,
    TokenSource,
    VectorSource,
    build_source,
)
from diffax.data.sources.builtin_text import BuiltinTextSource
from diffax.data.sources.corpus import CorpusSource
from diffax.data.sources.markov import MarkovSource
from diffax.data.sources.shards import ShardsSource
from diffax.data.sources.text_file import TextFileSource
from diffax.data.sources.tfds_images import TfdsImageSource
from diffax.data.sources.tfds_text import TfdsTextSource
from diffax.data.sources.toy_2d import ToySource

__all__ = [
    "SOURCES",
    "BuiltinTextSource",
    "CorpusSource",
    "MarkovSource",
    "Source",
    "ShardsSource",
    "SourceFactory",
    "TextFileSource",
    "TfdsImageSource",
    "TfdsTextSource",
    "TokenSource",
    "ToySource",
    "VectorSource",
    "build_source",
]
