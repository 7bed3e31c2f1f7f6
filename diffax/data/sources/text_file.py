"""Source "text_file": a local UTF-8 text file (`data.path`)."""

from __future__ import annotations

from diffax.data.sources.base import SOURCES
from diffax.data.sources.corpus import CorpusSource


@SOURCES.register("text_file")
class TextFileSource(CorpusSource):
    """Windows of the UTF-8 file at `data.path`, tokenised by `data.tokenizer`.

    Config keys: data.{path, tokenizer, heldout_fraction, seq_len, num_workers}.
    """
