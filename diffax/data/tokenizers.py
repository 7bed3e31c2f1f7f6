"""Tokenizers: text <-> int32 ids. A tokenizer is anything with `vocab_size`, `encode`, `decode`.

Subword tokenizers (SentencePiece, tiktoken, Hugging Face) plug in by implementing the same three
members; the character and byte tokenizers here need no extra dependency.
"""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

import numpy as np

from diffax.core import Registry


@runtime_checkable
class Tokenizer(Protocol):
    """The interface the data pipeline needs."""

    @property
    def vocab_size(self) -> int:
        """Number of token ids; ids lie in [0, vocab_size)."""

    def encode(self, text: str) -> np.ndarray:
        """Text to a 1-D int32 array of ids."""

    def decode(self, ids) -> str:
        """A 1-D sequence of ids back to text."""


TOKENIZERS: Registry = Registry("tokenizer")
tokenizers = TOKENIZERS  # the older lower-case name

_TEXT8_ALPHABET = "abcdefghijklmnopqrstuvwxyz "


def text8_normalize(text: str) -> str:
    """Lower-cases `text` and maps every run of non-letters to one space (text8 style)."""
    return re.sub(r"[^a-z]+", " ", text.lower())


@TOKENIZERS.register("text8")
class Text8Tokenizer:
    """27 symbols: a-z (ids 0..25) and space (id 26). `encode` normalises text8-style first."""

    alphabet = _TEXT8_ALPHABET

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet)

    def encode(self, text: str) -> np.ndarray:
        raw = np.frombuffer(text8_normalize(text).encode("ascii"), np.uint8).astype(np.int32)
        return np.where(raw == ord(" "), 26, raw - ord("a")).astype(np.int32)

    def decode(self, ids) -> str:
        return "".join(self.alphabet[int(i)] if 0 <= int(i) < 27 else "_" for i in ids)


@TOKENIZERS.register("char")
class CharTokenizer:
    """One id per distinct character of a reference text (sorted), e.g. 65 for tinyshakespeare.

    Args:
      alphabet: the characters, in id order. Build it from a corpus with `CharTokenizer.fit`.
    """

    def __init__(self, alphabet: str):
        if not alphabet or len(set(alphabet)) != len(alphabet):
            raise ValueError("alphabet must be a non-empty string of distinct characters")
        self.alphabet = alphabet
        self._index = {c: i for i, c in enumerate(alphabet)}

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        """The tokenizer whose alphabet is the sorted set of characters in `text`."""
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet)

    def encode(self, text: str) -> np.ndarray:
        try:
            return np.fromiter((self._index[c] for c in text), np.int32, count=len(text))
        except KeyError as e:
            raise ValueError(
                f"character {e.args[0]!r} is not in the tokenizer's alphabet"
            ) from None

    def decode(self, ids) -> str:
        return "".join(self.alphabet[int(i)] if 0 <= int(i) < self.vocab_size else "_" for i in ids)


@TOKENIZERS.register("byte")
class ByteTokenizer:
    """UTF-8 bytes: 256 ids."""

    @property
    def vocab_size(self) -> int:
        return 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        return bytes(int(i) % 256 for i in ids).decode("utf-8", errors="replace")
