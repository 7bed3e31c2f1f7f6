"""Tokenizer files trained offline on the built-in corpus, shared by the data tests."""

import pytest

EOS = "<|endoftext|>"


def train_bpe(path, vocab_size: int = 300) -> str:
    """A byte-level BPE (Hugging Face `tokenizers`) with EOS, trained on the built-in corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from diffax.data import builtin_documents

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(builtin_documents(), trainer)
    tok.save(str(path))
    return str(path)


@pytest.fixture(scope="session")
def bpe_path(tmp_path_factory):
    """Path of a 300-token byte-level BPE `tokenizer.json` whose id 0 is `<|endoftext|>`."""
    return train_bpe(tmp_path_factory.mktemp("bpe") / "bpe300.json")
