"""Text corpora: a built-in corpus that ships with Python, and local UTF-8 files.

The built-in corpus is the text of `pydoc_data.topics` (the Python language reference topics that
`help()` shows; part of every CPython install), so the quick start runs offline.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from diffax.data.tokenizers import (
    TOKENIZERS,
    CharTokenizer,
    Tokenizer,
    load_tokenizer,
)


@dataclasses.dataclass(frozen=True)
class TokenCorpus:
    """A tokenised corpus split deterministically into train and held-out streams.

    Attributes:
      train: 1-D int32 ids (the first `1 - heldout_fraction` of the stream).
      heldout: 1-D int32 ids (the rest).
      tokenizer: the tokenizer that produced them.
      eos_id: the id that ends every document of the stream, or None when the stream has no
        document boundaries.
    """

    train: np.ndarray
    heldout: np.ndarray
    tokenizer: Tokenizer
    eos_id: int | None = None


def builtin_documents() -> list[str]:
    """The built-in corpus as documents: the `pydoc_data.topics` entries in sorted-key order."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def builtin_text() -> str:
    """The built-in corpus as one text: `builtin_documents()` joined by newlines (~465k chars)."""
    return "\n".join(builtin_documents())


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


def make_tokenizer(name: str, text: str = "", path: str = "") -> Tokenizer:
    """The tokenizer of a config: the file `path` when set, else the registered `name`.

    Args:
      name: a registered tokenizer ("text8", "char", "byte"); "char" is fitted to `text`.
      text: the corpus, for "char".
      path: a tokenizer file (`data.tokenizer_path`, see `load_tokenizer`); replaces `name`.
    """
    if path:
        return load_tokenizer(path)
    cls = TOKENIZERS.get(name, "data.tokenizer")
    return CharTokenizer.fit(text) if cls is CharTokenizer else cls()


def encode_documents(tokenizer: Tokenizer, documents: list[str]) -> np.ndarray:
    """The documents tokenised and concatenated, each followed by `tokenizer.eos_id`.

    Raises:
      ValueError: the tokenizer has no EOS token.
    """
    eos = tokenizer.eos_id
    if eos is None:
        raise ValueError("the tokenizer has no end-of-document token (eos_id is None)")
    batch = getattr(tokenizer, "encode_batch", None)
    pieces = batch(documents) if batch else [tokenizer.encode(d) for d in documents]
    end = np.array([eos], np.int32)
    return np.concatenate([p for ids in pieces for p in (np.asarray(ids, np.int32), end)])


def corpus_documents(source: str, path: str = "") -> list[str]:
    """The documents of a text source: "builtin" (one per pydoc topic) or "text_file" (one)."""
    if source == "builtin":
        return builtin_documents()
    if source == "text_file":
        return [read_text_file(path)]
    raise ValueError(
        f"data.source={source!r} is not a text source; allowed values: 'builtin', 'text_file'"
    )


def tokenize_corpus(
    documents: list[str], tokenizer: Tokenizer, heldout_fraction: float
) -> TokenCorpus:
    """Tokenises documents into one stream and splits it (the last `heldout_fraction` held out).

    With an EOS token the documents are concatenated, each followed by EOS; without one they are
    joined by newlines and encoded as one text.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"data.heldout_fraction must be in (0, 1), got {heldout_fraction}")
    eos = tokenizer.eos_id
    if eos is None:
        ids = np.asarray(tokenizer.encode("\n".join(documents)), np.int32)
    else:
        ids = encode_documents(tokenizer, documents)
    split = int(round(len(ids) * (1.0 - heldout_fraction)))
    return TokenCorpus(train=ids[:split], heldout=ids[split:], tokenizer=tokenizer, eos_id=eos)


def load_corpus(
    source: str,
    *,
    path: str = "",
    tokenizer: str = "text8",
    heldout_fraction: float = 0.1,
    tokenizer_path: str = "",
) -> TokenCorpus:
    """Loads, tokenises and splits a corpus.

    Args:
      source: "builtin" (pydoc topics) or "text_file" (the UTF-8 file at `path`).
      path: file path for "text_file".
      tokenizer: a registered tokenizer name ("text8", "char", "byte").
      heldout_fraction: fraction of the token stream (at its end) kept for evaluation.
      tokenizer_path: a tokenizer file (`load_tokenizer`); replaces `tokenizer` when set. With an
        EOS token, the builtin topics are separated by EOS (`TokenCorpus.eos_id`).

    Returns:
      A `TokenCorpus`.
    """
    documents = corpus_documents(source, path)
    tok = make_tokenizer(tokenizer, "\n".join(documents), tokenizer_path)
    return tokenize_corpus(documents, tok, heldout_fraction)


#: How `read_documents` splits a file into documents.
DOCUMENT_FORMATS = ("lines", "blank_lines", "jsonl")


def read_documents(path: str, document_format: str = "lines", text_key: str = "text"):
    """Yields the documents of a UTF-8 file, streaming (the file is never read whole).

    Args:
      path: the file.
      document_format: "lines" (every non-blank line is a document, without its newline),
        "blank_lines" (documents are separated by one or more blank lines; a document's lines
        are joined by newlines) or "jsonl" (every non-blank line is a JSON object whose
        `text_key` field is the document).
      text_key: the field of a "jsonl" object.

    Yields:
      Each document as a str, in file order.
    """
    if document_format not in DOCUMENT_FORMATS:
        raise ValueError(
            f"document_format={document_format!r} is not allowed; allowed values: "
            f"{', '.join(DOCUMENT_FORMATS)}"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"input {path!r}: no such file")
    paragraph: list[str] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            blank = not line.strip()
            if document_format == "blank_lines":
                if blank and paragraph:
                    yield "\n".join(paragraph)
                    paragraph = []
                elif not blank:
                    paragraph.append(line)
            elif blank:
                continue
            elif document_format == "lines":
                yield line
            else:
                try:
                    yield str(json.loads(line)[text_key])
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(
                        f"{path}:{number}: not a JSON object with a {text_key!r} field ({e})"
                    ) from None
    if paragraph:
        yield "\n".join(paragraph)


def unigram_entropy_bits(ids: np.ndarray, vocab_size: int) -> float:
    """Entropy in bits of the empirical unigram distribution of `ids` (a context-free baseline)."""
    p = np.bincount(ids, minlength=vocab_size) / len(ids)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())
