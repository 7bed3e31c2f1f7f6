"""Prepared token shards: a corpus tokenised once, stored as memory-mappable numpy arrays.

`write_token_shards` (driven by `experiments/prepare_text.py`) writes a directory D holding

* `train-{s:05d}-of-{S:05d}.npy`, s = 0 .. S-1: 1-D arrays of token ids (dtype `uint16` when the
  vocabulary fits, else `uint32`); every document is followed by the EOS id and every shard
  holds whole documents, so shard s + 1 starts where shard s ends;
* `heldout-00000-of-00001.npy`: the held-out documents, in the same form;
* a copy of the tokenizer file under its own name;
* `metadata.json` (written last; its presence marks a complete directory)::

    {"format": "diffax.token_shards", "version": 1, "vocab_size": 50257, "eos_id": 50256,
     "dtype": "uint16", "tokenizer_file": "gpt2.json", "tokenizer_sha256": "...",
     "heldout_fraction": 0.01, "shuffle_seed": null, "num_documents": 8013769,
     "splits": {"train": [{"file": "train-00000-of-00064.npy", "tokens": ..., "documents": ...},
                          ...],
                "heldout": [{"file": "heldout-00000-of-00001.npy", ...}]}}

Document d (counting from 0 in input order) is held out when floor((d + 1) f) > floor(d f) for
f = heldout_fraction, i.e. an evenly spread fraction f of the documents; the others are the
training documents, in input order (or shuffled with `shuffle_seed`). Shards are cut at the
document boundaries nearest to equal token counts. `TokenStream` reads shards back through
`np.load(mmap_mode="r")`, never the whole array into memory.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from array import array
from collections.abc import Iterable

import numpy as np

from diffax.data.tokenizers import Tokenizer, file_sha256

FORMAT = "diffax.token_shards"
VERSION = 1
METADATA_FILE = "metadata.json"
_DTYPES = ("auto", "uint16", "uint32", "int32")


def shard_file(split: str, index: int, count: int) -> str:
    """`{split}-{index:05d}-of-{count:05d}.npy`."""
    return f"{split}-{index:05d}-of-{count:05d}.npy"


def ids_dtype(dtype: str, vocab_size: int) -> np.dtype:
    """The storage dtype: `dtype`, or for "auto" uint16 when vocab_size <= 2^16, else uint32.

    Raises:
      ValueError: an unknown dtype, or one too small for the vocabulary.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} is not allowed; allowed values: {', '.join(_DTYPES)}")
    if dtype == "auto":
        dtype = "uint16" if vocab_size <= 2**16 else "uint32"
    out = np.dtype(dtype)
    if vocab_size - 1 > np.iinfo(out).max:
        raise ValueError(f"dtype={dtype!r} cannot hold ids up to vocab_size - 1 = {vocab_size - 1}")
    return out


def is_heldout(index: int, fraction: float) -> bool:
    """Whether document `index` is held out: floor((index + 1) f) > floor(index f)."""
    return math.floor((index + 1) * fraction) > math.floor(index * fraction)


def _encode_batches(documents: Iterable[str], tokenizer: Tokenizer, batch: int):
    """Yields the token ids of every document, encoding `batch` documents at a time."""
    encode_batch = getattr(tokenizer, "encode_batch", None)
    pending: list[str] = []

    def flush():
        out = encode_batch(pending) if encode_batch else [tokenizer.encode(d) for d in pending]
        pending.clear()
        return out

    for doc in documents:
        pending.append(doc)
        if len(pending) == batch:
            yield from flush()
    if pending:
        yield from flush()


def _shard_bounds(lengths: np.ndarray, num_shards: int, split: str) -> np.ndarray:
    """Document index bounds `[S + 1]` of S shards with nearly equal token counts."""
    total = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    shard_of = np.minimum(starts * num_shards // max(total, 1), num_shards - 1)
    bounds = np.searchsorted(shard_of, np.arange(num_shards + 1), side="left")
    if np.any(np.diff(bounds) == 0):
        raise ValueError(
            f"num_shards={num_shards}: the {split} split has {len(lengths)} documents "
            f"({total} tokens), too few to give every shard a document; lower num_shards"
        )
    return bounds


def _write_split(directory, split, tmp_path, lengths, num_shards, dtype, order) -> list[dict]:
    """Copies the documents of the raw file `tmp_path` into the `.npy` shards of `split`."""
    source = np.memmap(tmp_path, dtype=dtype, mode="r") if lengths.size else None
    offsets = np.cumsum(lengths) - lengths
    if order is not None:
        lengths, offsets = lengths[order], offsets[order]
    bounds = _shard_bounds(lengths, num_shards, split)
    shards = []
    for s in range(num_shards):
        lo, hi = bounds[s], bounds[s + 1]
        n = int(lengths[lo:hi].sum())
        name = shard_file(split, s, num_shards)
        out = np.lib.format.open_memmap(
            os.path.join(directory, name), mode="w+", dtype=dtype, shape=(n,)
        )
        if order is None:  # documents are contiguous in the raw file
            out[:] = source[offsets[lo] : offsets[lo] + n]
        else:
            pos = 0
            for off, length in zip(offsets[lo:hi], lengths[lo:hi], strict=True):
                out[pos : pos + length] = source[off : off + length]
                pos += length
        out.flush()
        del out
        shards.append({"file": name, "tokens": n, "documents": int(hi - lo)})
    return shards


def write_token_shards(
    documents: Iterable[str],
    tokenizer: Tokenizer,
    tokenizer_file: str,
    output_dir: str,
    *,
    num_shards: int = 1,
    heldout_fraction: float = 0.01,
    dtype: str = "auto",
    shuffle_seed: int | None = None,
    batch_documents: int = 1024,
) -> dict:
    """Tokenises `documents` once into prepared shards under `output_dir` (format: module doc).

    Args:
      documents: the texts, in order (streamed; never all held in memory).
      tokenizer: the tokenizer read from `tokenizer_file`; must have an EOS token.
      tokenizer_file: its file, copied into `output_dir` and recorded with its SHA-256.
      output_dir: the directory to write (created; must not already hold a metadata.json).
      num_shards: training shards S (a multiple of the number of reading processes keeps their
        shares equal; each process needs at least one).
      heldout_fraction: fraction f of the documents held out, in [0, 1).
      dtype: storage dtype: "auto" (uint16 when the vocabulary fits, else uint32), "uint16",
        "uint32" or "int32".
      shuffle_seed: None keeps the training documents in input order; an int shuffles them.
      batch_documents: documents encoded per `encode_batch` call.

    Returns:
      The metadata dict (also written to `output_dir/metadata.json`).

    Raises:
      ValueError: bad arguments, a tokenizer without EOS, too few documents for `num_shards`.
    """
    if tokenizer.eos_id is None:
        raise ValueError(
            f"tokenizer_path={tokenizer_file!r} has no end-of-document token (none of the "
            "special tokens <|endoftext|>, </s>, <eos>, [EOS], ...); documents could not be "
            "separated"
        )
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must lie in [0, 1), got {heldout_fraction}")
    store = ids_dtype(dtype, tokenizer.vocab_size)
    if os.path.exists(os.path.join(output_dir, METADATA_FILE)):
        raise ValueError(
            f"output_dir={output_dir!r} already holds prepared shards; choose another directory"
        )
    os.makedirs(output_dir, exist_ok=True)
    eos = np.array([tokenizer.eos_id], store)
    tmp = {split: os.path.join(output_dir, f"{split}.tmp") for split in ("train", "heldout")}
    lengths = {"train": array("q"), "heldout": array("q")}
    files = {split: open(path, "wb") for split, path in tmp.items()}
    try:
        for index, ids in enumerate(_encode_batches(documents, tokenizer, batch_documents)):
            split = "heldout" if is_heldout(index, heldout_fraction) else "train"
            ids = np.asarray(ids)
            if ids.size and (ids.min() < 0 or ids.max() >= tokenizer.vocab_size):
                raise ValueError(f"document {index} has ids outside [0, {tokenizer.vocab_size})")
            files[split].write(ids.astype(store).tobytes())
            files[split].write(eos.tobytes())
            lengths[split].append(ids.size + 1)
    finally:
        for f in files.values():
            f.close()
    try:
        train = np.frombuffer(lengths["train"], np.int64)
        held = np.frombuffer(lengths["heldout"], np.int64)
        order = None
        if shuffle_seed is not None:
            order = np.random.default_rng(shuffle_seed).permutation(len(train))
        splits = {
            "train": _write_split(
                output_dir, "train", tmp["train"], train, num_shards, store, order
            )
        }
        if held.size:
            splits["heldout"] = _write_split(
                output_dir, "heldout", tmp["heldout"], held, 1, store, None
            )
    finally:
        for path in tmp.values():
            os.remove(path)
    name = os.path.basename(tokenizer_file)
    if os.path.abspath(tokenizer_file) != os.path.abspath(os.path.join(output_dir, name)):
        shutil.copyfile(tokenizer_file, os.path.join(output_dir, name))
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "vocab_size": int(tokenizer.vocab_size),
        "eos_id": int(tokenizer.eos_id),
        "dtype": store.name,
        "tokenizer_file": name,
        "tokenizer_sha256": file_sha256(tokenizer_file),
        "heldout_fraction": heldout_fraction,
        "shuffle_seed": shuffle_seed,
        "num_documents": len(train) + len(held),
        "splits": splits,
    }
    partial = os.path.join(output_dir, METADATA_FILE + ".partial")
    with open(partial, "w") as f:
        json.dump(metadata, f, indent=1)
    os.replace(partial, os.path.join(output_dir, METADATA_FILE))
    return metadata


def read_metadata(directory: str, *, name: str = "data.path") -> dict:
    """The metadata of a prepared-shards directory, checked against the shard files' headers.

    Args:
      directory: the directory written by `write_token_shards`.
      name: how errors name the setting.

    Raises:
      FileNotFoundError: no such directory or no metadata.json in it.
      ValueError: another format or version, or shard files missing or unlike the metadata.
    """
    path = os.path.join(directory, METADATA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{name}={directory!r} holds no {METADATA_FILE}: prepare it with `python -m "
            "experiments.prepare_text --input=... --tokenizer_path=... --output_dir=DIR`"
        )
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(
            f"{name}={directory!r}: {METADATA_FILE} is not {FORMAT} version {VERSION} "
            f"(format {meta.get('format')!r}, version {meta.get('version')!r})"
        )
    for split, shards in meta["splits"].items():
        for shard in shards:
            file = os.path.join(directory, shard["file"])
            if not os.path.isfile(file):
                raise ValueError(f"{name}={directory!r}: shard {shard['file']} is missing")
            arr = np.load(file, mmap_mode="r")
            if arr.ndim != 1 or arr.dtype != np.dtype(meta["dtype"]) or len(arr) != shard["tokens"]:
                raise ValueError(
                    f"{name}={directory!r}: {split} shard {shard['file']} is {arr.dtype} "
                    f"{arr.shape}, the metadata says {meta['dtype']} ({shard['tokens']},)"
                )
    return meta


class TokenStream:
    """The concatenation of 1-D `.npy` shards, memory-mapped and read by position.

    Positions wrap around: position `i` is token `i mod len(self)`, so a stream read in windows
    forever repeats its epochs in order. Pickles as its paths (grain workers reopen the files).

    Args:
      paths: the shard files, in stream order.
    """

    def __init__(self, paths: list[str]):
        if not paths:
            raise ValueError("a token stream needs at least one shard")
        self.paths = list(paths)
        self._arrays = None
        sizes = [len(a) for a in self.arrays]
        self.ends = np.cumsum(sizes)
        self.starts = self.ends - np.asarray(sizes)

    @property
    def arrays(self) -> list[np.ndarray]:
        """The memory-mapped shards (opened on first use in each process)."""
        if self._arrays is None:
            self._arrays = [np.load(p, mmap_mode="r") for p in self.paths]
        return self._arrays

    def __getstate__(self):
        return {"paths": self.paths, "ends": self.ends, "starts": self.starts}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._arrays = None

    def __len__(self) -> int:
        return int(self.ends[-1])

    def read(self, start: int, length: int) -> np.ndarray:
        """int32 ids at positions `start .. start + length - 1` (modulo the stream length)."""
        total, pieces, pos = len(self), [], int(start) % len(self)
        while length > 0:
            s = int(np.searchsorted(self.ends, pos, side="right"))
            local = pos - int(self.starts[s])
            take = min(length, int(self.ends[s]) - pos)
            pieces.append(np.asarray(self.arrays[s][local : local + take], np.int32))
            length -= take
            pos = (pos + take) % total
        return np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
