"""Source "builtin": the `pydoc_data.topics` corpus that ships with Python (offline quick start)."""

from __future__ import annotations

from diffax.data.sources.base import SOURCES
from diffax.data.sources.corpus import CorpusSource


@SOURCES.register("builtin")
class BuiltinTextSource(CorpusSource):
    """Windows of the built-in corpus (`diffax.data.builtin_text`), tokenised by
    `data.tokenizer_path` when set, else by `data.tokenizer`.

    With a tokenizer that has an EOS token each pydoc topic is a document followed by EOS;
    otherwise the topics are joined by newlines.

    Config keys: data.{tokenizer, tokenizer_path, heldout_fraction, seq_len, num_workers}.
    """
