"""Tiny random encoders built offline, and SNLI shards built from the real excerpt."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import shared_file
from tests.tiny_models import dropout as dropout_probs
from tests.tiny_models import tiny_bert, tiny_decoder, write_vocab

WORDS = (
    "a the man woman dog cat is are on in at with plays runs sits eats sleeps red blue big small park street "
    "house car ball guitar food water outside inside two three people child children happy sad not no"
).split()


# the training tests' vocabulary: words, then WordPiece pieces for letters and digits (rare words still tokenize)
VOCAB = [
    *WORDS,
    *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"],
    *"abcdefghijklmnopqrstuvwxyz0123456789.,!?",
    *[f"##{c}" for c in "0123456789"],
]


def _vocab_file(tmp_path) -> str:
    return str(write_vocab(tmp_path / "vocab.txt", VOCAB, ["[EOS]"]))


def make_tiny_bert(path, dtype=torch.float32, dropout=0.0, seed=0) -> str:
    """A 2-layer random BERT + WordPiece tokenizer saved to `path`."""
    return tiny_bert(path, ["[EOS]", *VOCAB], dtype=dtype, seed=seed, **dropout_probs(dropout))


def make_tiny_decoder(path, seed=0) -> str:
    """A 2-layer random Qwen2 decoder with a tokenizer that has an EOS token, saved to `path`."""
    return tiny_decoder(path, VOCAB, seed=seed)


@pytest.fixture(scope="session")
def snli_shards(tmp_path_factory) -> str:
    """Shards built by our SNLI pipeline from the real 1000-line excerpt."""
    from negminer.pipelines.snli import SnliConfig, build

    src = shared_file("nli", "jack_1000_samples_snli_1.0_train.jsonl")
    out = tmp_path_factory.mktemp("snli_shards")
    build(SnliConfig(inputs=(str(src),), output=str(out)), [])
    return str(out)


@pytest.fixture(scope="session")
def toy_shards(tmp_path_factory) -> str:
    """40 rows of tiny-vocabulary text with 2 hard negatives each and teacher scores."""
    from negminer.pipelines import io
    from negminer.pipelines.schema import TupleRow

    rng = __import__("random").Random(0)
    rows = []
    for i in range(40):
        q = " ".join(rng.choices(WORDS, k=5)) + f" {i}"
        rows.append(
            TupleRow(
                source="toy" if i % 2 else "toy2",
                pair_type="qa",
                query=q,
                positive=q + " yes",
                negatives=(q + " no", q + " not"),
                positive_score=0.9,
                negative_scores=(0.5, 0.2),
            ).to_dict()
        )
    out = tmp_path_factory.mktemp("toy_shards")
    io.write_shards(rows, str(out), num_shards=2)
    return str(out)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Our tiny models gain nothing from intra-op threads, and on a shared 2-core runner they thrash; restore after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
