"""Concatenate-and-chunk packing: a stream of variable-length documents cut into fixed windows.

Documents (1-D id arrays that already end with their EOS or separator) are concatenated in order
and cut into consecutive length-L windows: no padding, no token dropped except the tail of a
finite stream that does not fill a window. The iterator state is the state of the document
iterator before the current document plus the offset into it, so a restored iterator continues
at the exact next token.
"""

from __future__ import annotations

import grain
import numpy as np


class _ChunkIterator(grain.DatasetIterator):
    """Windows of `seq_len` consecutive ids of the concatenated documents of `parent`."""

    def __init__(self, parent: grain.DatasetIterator, seq_len: int):
        super().__init__(parent)
        self._seq_len = seq_len
        self._doc = np.zeros(0, np.int32)
        self._doc_state = parent.get_state()  # parent state before `_doc` was read
        self._offset = 0

    def _read_document(self) -> None:
        self._doc_state = self._parent.get_state()
        self._doc = np.asarray(next(self._parent), np.int32).ravel()
        self._offset = 0

    def __next__(self) -> np.ndarray:
        pieces, need = [], self._seq_len
        while need:
            if self._offset == len(self._doc):
                self._read_document()  # StopIteration ends the stream; a partial window is dropped
                continue
            take = min(need, len(self._doc) - self._offset)
            pieces.append(self._doc[self._offset : self._offset + take])
            self._offset += take
            need -= take
        return np.concatenate(pieces)

    def get_state(self) -> dict:
        return {"parent": self._doc_state, "offset": self._offset}

    def set_state(self, state: dict) -> None:
        self._parent.set_state(state["parent"])
        self._doc, self._doc_state, self._offset = np.zeros(0, np.int32), state["parent"], 0
        if state["offset"] > 0:
            self._read_document()
            self._offset = int(state["offset"])


class ConcatChunkIterDataset(grain.IterDataset):
    """`[seq_len]` int32 windows of the concatenation of the 1-D documents of `parent`.

    Args:
      parent: a `grain.IterDataset` of 1-D integer arrays (documents, each already followed by
        its EOS or separator).
      seq_len: window length L.
    """

    def __init__(self, parent: grain.IterDataset, seq_len: int):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        super().__init__(parent)
        self._seq_len = seq_len

    def __iter__(self) -> _ChunkIterator:
        return _ChunkIterator(self._parent.__iter__(), self._seq_len)

    def __str__(self) -> str:
        return f"ConcatChunkIterDataset(seq_len={self._seq_len})"


def concat_and_chunk(documents: grain.IterDataset, seq_len: int) -> grain.IterDataset:
    """Length-`seq_len` windows of the concatenated `documents` (see `ConcatChunkIterDataset`).

    Args:
      documents: a `grain.IterDataset` of 1-D id arrays, each ending with its EOS/separator.
      seq_len: window length L.

    Returns:
      A `grain.IterDataset` of `[seq_len]` int32 arrays, checkpointable to the exact token.
    """
    return ConcatChunkIterDataset(documents, seq_len)
