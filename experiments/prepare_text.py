"""Tokenises a text corpus once into prepared token shards (source "shards").

  python -m experiments.prepare_text --input=owt/*.txt --document_format=blank_lines \
      --tokenizer_path=gpt2.json --output_dir=/data/owt_gpt2 --num_shards=64

then train with `--config.data.source=shards --config.data.path=/data/owt_gpt2`.

Documents come from `--input` (comma-separated files or glob patterns, UTF-8, read as a stream;
`--document_format`: `lines` = one document per non-blank line, `blank_lines` = documents
separated by blank lines, `jsonl` = one JSON object per line with the text under `--text_key`)
or from a prepared TFDS dataset (`--tfds_dataset`, `--tfds_data_dir`, `--tfds_split`). Every
document is tokenised once with the local tokenizer file `--tokenizer_path` (a Hugging Face
`tokenizers` JSON or a sentencepiece model; it must have an EOS token) and followed by EOS. The
output directory holds `--num_shards` training shards, one held-out shard (an evenly spread
`--heldout_fraction` of the documents), a copy of the tokenizer and `metadata.json`; the format
is described in `diffax.data.token_shards`. Use a `--num_shards` that is a multiple of the
number of training processes: process p reads shards p, p + P, ...
"""

from __future__ import annotations

import glob
import itertools
import json

from absl import app, flags, logging

_INPUT = flags.DEFINE_string("input", "", "Comma-separated UTF-8 text files or glob patterns.")
_FORMAT = flags.DEFINE_enum(
    "document_format",
    "lines",
    ["lines", "blank_lines", "jsonl"],
    "lines: one document per non-blank line; blank_lines: documents separated by blank lines; "
    "jsonl: one JSON object per line, the text under --text_key.",
)
_TEXT_KEY = flags.DEFINE_string("text_key", "text", "Text field (jsonl objects, TFDS features).")
_TFDS_DATASET = flags.DEFINE_string("tfds_dataset", "", "A TFDS text dataset instead of --input.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", "", "Where the TFDS dataset is prepared.")
_TFDS_SPLIT = flags.DEFINE_string("tfds_split", "train", "TFDS split spec.")
_TOKENIZER = flags.DEFINE_string(
    "tokenizer_path", None, "Tokenizer file: *.json (Hugging Face tokenizers) or *.model."
)
_OUTPUT = flags.DEFINE_string("output_dir", None, "Directory to write (must not hold shards).")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "Training shards (a multiple of processes).")
_HELDOUT = flags.DEFINE_float("heldout_fraction", 0.01, "Fraction of documents held out.")
_DTYPE = flags.DEFINE_enum(
    "dtype",
    "auto",
    ["auto", "uint16", "uint32", "int32"],
    "Storage dtype (auto: uint16 when the vocabulary fits, else uint32).",
)
_SHUFFLE = flags.DEFINE_bool("shuffle", False, "Shuffle the training documents (with --seed).")
_SEED = flags.DEFINE_integer("seed", 0, "Shuffle seed.")
_MAX_DOCUMENTS = flags.DEFINE_integer("max_documents", 0, "Stop after this many (0: all).")
_BATCH = flags.DEFINE_integer("batch_documents", 1024, "Documents per encode_batch call.")


def input_files(spec: str) -> list[str]:
    """The files named by comma-separated paths or glob patterns, in order.

    Raises:
      ValueError: a pattern matches no file.
    """
    files = []
    for pattern in filter(None, (p.strip() for p in spec.split(","))):
        matches = sorted(glob.glob(pattern))
        if not matches:
            raise ValueError(f"--input={pattern!r} matches no file")
        files.extend(matches)
    return files


def tfds_documents(name: str, data_dir: str, split: str, text_key: str):
    """Yields the `text_key` feature of every example of a prepared TFDS split, decoded."""
    from diffax.data import tfds_source

    source = tfds_source.text_source(name, split=split, data_dir=data_dir, text_key=text_key)
    for i in range(len(source)):
        text = source[i][text_key]
        yield text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)


def documents_from_flags():
    """The document stream chosen by the flags (--input or --tfds_dataset)."""
    from diffax.data import read_documents

    if bool(_INPUT.value) == bool(_TFDS_DATASET.value):
        raise app.UsageError("set exactly one of --input and --tfds_dataset")
    if _TFDS_DATASET.value:
        docs = tfds_documents(
            _TFDS_DATASET.value, _TFDS_DATA_DIR.value, _TFDS_SPLIT.value, _TEXT_KEY.value
        )
    else:
        docs = itertools.chain.from_iterable(
            read_documents(path, _FORMAT.value, _TEXT_KEY.value)
            for path in input_files(_INPUT.value)
        )
    if _MAX_DOCUMENTS.value > 0:
        docs = itertools.islice(docs, _MAX_DOCUMENTS.value)
    return docs


def _logged(documents, every: int = 100_000):
    for i, doc in enumerate(documents, 1):
        if i % every == 0:
            logging.info("tokenised %d documents", i)
        yield doc


def main(argv):
    del argv
    from diffax.data import load_tokenizer, write_token_shards

    tokenizer = load_tokenizer(_TOKENIZER.value, name="--tokenizer_path")
    logging.info(
        "tokenizer %s: vocab_size %d, eos_id %s",
        _TOKENIZER.value,
        tokenizer.vocab_size,
        tokenizer.eos_id,
    )
    metadata = write_token_shards(
        _logged(documents_from_flags()),
        tokenizer,
        _TOKENIZER.value,
        _OUTPUT.value,
        num_shards=_NUM_SHARDS.value,
        heldout_fraction=_HELDOUT.value,
        dtype=_DTYPE.value,
        shuffle_seed=_SEED.value if _SHUFFLE.value else None,
        batch_documents=_BATCH.value,
    )
    summary = {
        split: {
            "shards": len(shards),
            "documents": sum(s["documents"] for s in shards),
            "tokens": sum(s["tokens"] for s in shards),
        }
        for split, shards in metadata["splits"].items()
    }
    print(json.dumps({"output_dir": _OUTPUT.value, "dtype": metadata["dtype"], **summary}))


if __name__ == "__main__":
    flags.mark_flags_as_required(["tokenizer_path", "output_dir"])
    app.run(main)
