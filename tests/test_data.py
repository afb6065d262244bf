"""lmcore.data and the shipped corpora (sizes and checksums from assets/data/README.md)."""
import hashlib

import pytest
import torch

from lmcore.data import CORPORA, assets_dir, get_batch, load_corpus, train_val_split

EXPECTED = {
    "tiny_shakespeare.txt": (1115394, "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
    "tang300.txt": (83605, "a78f4e39b0dcc6e682e46f46be3b46f9be2cc2d5a5667eae67631efded0c28f8"),
}


@pytest.mark.parametrize("filename", sorted(EXPECTED))
def test_shipped_file_matches_its_provenance(filename):
    blob = (assets_dir() / "data" / filename).read_bytes()
    size, digest = EXPECTED[filename]
    assert len(blob) == size
    assert hashlib.sha256(blob).hexdigest() == digest
    readme = (assets_dir() / "data" / "README.md").read_text(encoding="utf-8")
    assert digest in readme and f"{size:,}" in readme


def test_corpora_load():
    assert set(CORPORA) == {"shakespeare", "tang300"}
    assert load_corpus("shakespeare").startswith("First Citizen:")
    tang = load_corpus("tang300")
    assert tang.count("作者：") == 313 and "\x1b" not in tang


def test_unknown_corpus_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown corpus name='wiki'"):
        load_corpus("wiki")


def test_split_keeps_order_and_sizes():
    data = torch.arange(100)
    train, val = train_val_split(data, 0.1)
    assert len(train) == 90 and len(val) == 10 and val[0] == 90
    with pytest.raises(ValueError, match="1-D"):
        train_val_split(data.view(10, 10))
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(data, 1.5)
    with pytest.raises(ValueError, match="too few"):
        train_val_split(torch.arange(3), 0.1)


def test_batches_are_shifted_windows():
    data = torch.arange(1000)
    g = torch.Generator().manual_seed(0)
    x, y = get_batch(data, block_size=8, batch_size=4, generator=g)
    assert x.shape == y.shape == (4, 8) and x.dtype == torch.long
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(get_batch(data, 8, 4, generator=g2)[0], x)  # seeded → same batch
    with pytest.raises(ValueError, match="block_size=2000"):
        get_batch(data, block_size=2000, batch_size=1)
