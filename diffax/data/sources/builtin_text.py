"""Source "builtin": the `pydoc_data.topics` corpus that ships with Python (offline quick start)."""

from __future__ import annotations

from diffax.data.sources.base import SOURCES
from diffax.data.sources.corpus import CorpusSource


@SOURCES.register("builtin")
class BuiltinTextSource(CorpusSource):
    """Windows of the built-in corpus (`diffax.data.builtin_text`), tokenised by `data.tokenizer`.

    Config keys: data.{tokenizer, heldout_fraction, seq_len, num_workers}.
    """
