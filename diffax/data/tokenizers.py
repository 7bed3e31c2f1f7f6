"""Tokenizers: text <-> int32 ids. A tokenizer has `vocab_size`, `eos_id`, `encode`, `decode`.

The character and byte tokenizers need no extra dependency and have no end-of-document token
(`eos_id = None`). Subword tokenizers are read from a local file by `load_tokenizer` (config:
`data.tokenizer_path`): a Hugging Face `tokenizers` JSON (`*.json`) or a sentencepiece model
(`*.model`); nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import os
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

    @property
    def eos_id(self) -> int | None:
        """The id that ends a document in a token stream, or None if there is none."""


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
    eos_id = None

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

    eos_id = None

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

    eos_id = None

    @property
    def vocab_size(self) -> int:
        return 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        return bytes(int(i) % 256 for i in ids).decode("utf-8", errors="replace")


#: Token strings recognised as the end-of-document token, in order of preference.
EOS_TOKENS = ("<|endoftext|>", "</s>", "<eos>", "[EOS]", "<|end_of_text|>", "<|eos|>")


class _FileTokenizer:
    """What the file-backed tokenizers share: they pickle as their path (grain worker processes
    re-open the file) and expose `eos_id`."""

    path: str
    _eos_id: int | None

    def __init__(self, path: str):
        raise NotImplementedError

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    @property
    def eos_id(self) -> int | None:
        """Id of the end-of-document token, or None."""
        return self._eos_id


class HuggingFaceTokenizer(_FileTokenizer):
    """A Hugging Face `tokenizers` tokenizer read from its JSON file (e.g. GPT-2's 50,257 BPE).

    `encode` adds no special tokens (documents get their EOS from the data pipeline). `eos_id` is
    the first of `EOS_TOKENS` found among the special tokens, then in the vocabulary; None if
    none is.

    Args:
      path: the `tokenizer.json` file.
    """

    def __init__(self, path: str):
        from tokenizers import Tokenizer as _HFTokenizer

        self.path = path
        self._tok = _HFTokenizer.from_file(path)
        vocab = self._tok.get_vocab(with_added_tokens=True)
        self._vocab_size = max(vocab.values()) + 1 if vocab else 0
        special = {t.content for t in self._tok.get_added_tokens_decoder().values() if t.special}
        found = [t for t in EOS_TOKENS if t in special] or [t for t in EOS_TOKENS if t in vocab]
        self._eos_id = vocab[found[0]] if found else None

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, np.int32)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """`encode` of each text, run in parallel by the Rust library."""
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, np.int32) for e in encodings]

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)


class SentencePieceTokenizer(_FileTokenizer):
    """A sentencepiece model read from its `*.model` file; `eos_id` is the model's EOS piece.

    Args:
      path: the `*.model` file.
    """

    def __init__(self, path: str):
        import sentencepiece

        self.path = path
        self._sp = sentencepiece.SentencePieceProcessor(model_file=path)
        eos = int(self._sp.eos_id())
        self._eos_id = eos if eos >= 0 else None

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._sp.encode(text, out_type=int), np.int32)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """`encode` of each text."""
        return [np.asarray(ids, np.int32) for ids in self._sp.encode(list(texts), out_type=int)]

    def decode(self, ids) -> str:
        n = self.vocab_size
        return self._sp.decode([int(i) for i in ids if 0 <= int(i) < n])


_TOKENIZER_FILES = {".json": HuggingFaceTokenizer, ".model": SentencePieceTokenizer}


def load_tokenizer(path: str, *, name: str = "data.tokenizer_path") -> Tokenizer:
    """The tokenizer stored in the local file `path` (never downloads).

    Args:
      path: a Hugging Face `tokenizers` JSON (`*.json`) or a sentencepiece model (`*.model`).
      name: how errors name the setting (a config key or a flag).

    Returns:
      A `HuggingFaceTokenizer` or a `SentencePieceTokenizer`.

    Raises:
      FileNotFoundError: `path` is not a file.
      ValueError: an empty path, an unknown extension, or a file the library cannot read.
    """
    if not path:
        raise ValueError(f"{name} is empty: set it to a *.json or *.model tokenizer file")
    ext = os.path.splitext(path)[1].lower()
    if ext not in _TOKENIZER_FILES:
        raise ValueError(
            f"{name}={path!r} has an unknown extension {ext!r}; allowed values: '.json' (a Hugging "
            "Face tokenizers file), '.model' (a sentencepiece model)"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name}={path!r}: no such file (tokenizers are never downloaded)")
    try:
        return _TOKENIZER_FILES[ext](path)
    except ImportError as e:
        raise ValueError(
            f"{name}={path!r} needs the {e.name!r} package: pip install 'diffax[sentencepiece]'"
        ) from None
    except Exception as e:  # the Rust/C++ libraries raise their own exception types
        raise ValueError(
            f"{name}={path!r} could not be read as a {ext} tokenizer ({type(e).__name__}: {e})"
        ) from None


def file_sha256(path: str) -> str:
    """Hex SHA-256 of the file at `path` (identifies a tokenizer file in shard metadata)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
