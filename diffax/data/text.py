"""Text corpora: a built-in corpus that ships with Python, and local UTF-8 files.

The built-in corpus is the text of `pydoc_data.topics` (the Python language reference topics that
`help()` shows; part of every CPython install), so the quick start runs offline.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from diffax.data.tokenizers import TOKENIZERS, CharTokenizer, Tokenizer, text8_normalize


@dataclasses.dataclass(frozen=True)
class TokenCorpus:
    """A tokenised corpus split deterministically into train and held-out streams.

    Attributes:
      train: 1-D int32 ids (the first `1 - heldout_fraction` of the text).
      heldout: 1-D int32 ids (the rest).
      tokenizer: the tokenizer that produced them.
    """

    train: np.ndarray
    heldout: np.ndarray
    tokenizer: Tokenizer


def builtin_text() -> str:
    """The built-in corpus: all `pydoc_data.topics` entries in sorted-key order (~465k chars)."""
    from pydoc_data.topics import topics

    return "\n".join(topics[k] for k in sorted(topics))


def read_text_file(path: str) -> str:
    """Reads a UTF-8 text file, with a clear error when it is missing, unreadable or empty."""
    if not path:
        raise ValueError("data.path is empty: set it to a UTF-8 text file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data.path={path!r}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"data.path={path!r} is not UTF-8 text ({e})") from None
    if not text.strip():
        raise ValueError(f"data.path={path!r} is empty")
    return text


def make_tokenizer(name: str, text: str) -> Tokenizer:
    """A registered tokenizer by name; "char" is fitted to `text`."""
    cls = TOKENIZERS.get(name, "data.tokenizer")
    return CharTokenizer.fit(text) if cls is CharTokenizer else cls()


def load_corpus(
    source: str, *, path: str = "", tokenizer: str = "text8", heldout_fraction: float = 0.1
) -> TokenCorpus:
    """Loads, tokenises and splits a corpus.

    Args:
      source: "builtin" (pydoc topics) or "text_file" (the UTF-8 file at `path`).
      path: file path for "text_file".
      tokenizer: a registered tokenizer name ("text8", "char", "byte").
      heldout_fraction: fraction of the token stream (at its end) kept for evaluation.

    Returns:
      A `TokenCorpus`.
    """
    if source == "builtin":
        text = builtin_text()
    elif source == "text_file":
        text = read_text_file(path)
    else:
        raise ValueError(
            f"data.source={source!r} is not a text source; allowed values: 'builtin', 'text_file'"
        )
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"data.heldout_fraction must be in (0, 1), got {heldout_fraction}")
    if tokenizer == "text8":
        text = text8_normalize(text)
    tok = make_tokenizer(tokenizer, text)
    ids = tok.encode(text)
    split = int(round(len(ids) * (1.0 - heldout_fraction)))
    return TokenCorpus(train=ids[:split], heldout=ids[split:], tokenizer=tok)


def unigram_entropy_bits(ids: np.ndarray, vocab_size: int) -> float:
    """Entropy in bits of the empirical unigram distribution of `ids` (a context-free baseline)."""
    p = np.bincount(ids, minlength=vocab_size) / len(ids)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())
