"""Source "text_file": a local UTF-8 text file (`data.path`), one document.

Every process reads and tokenises the whole file (once, when training or evaluation first needs
it), so this source suits files up to a few hundred MB. A large corpus is tokenised once by
`python -m experiments.prepare_text --input=... --tokenizer_path=... --output_dir=D` and read
with `data.source="shards"`, `data.path=D`: each process then reads only its shards, memory-mapped.
"""

from __future__ import annotations

from diffax.data.sources.base import SOURCES
from diffax.data.sources.corpus import CorpusSource


@SOURCES.register("text_file")
class TextFileSource(CorpusSource):
    """Windows of the UTF-8 file at `data.path`, tokenised by `data.tokenizer_path` when set,
    else by `data.tokenizer`.

    The file is one document: with an EOS token the stream ends with it, nothing else.

    Config keys: data.{path, tokenizer, tokenizer_path, heldout_fraction, seq_len, num_workers}.
    """
