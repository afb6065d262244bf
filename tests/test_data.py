"""lmcore.data and the shipped corpora (sizes and checksums from assets/data/README.md)."""
import hashlib
import re

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


def test_recorded_checksums_match_the_provenance():
    assert {f: (size, digest) for f, size, digest in CORPORA.values()} == EXPECTED


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


def _copy_assets(tmp_path):
    for f in ("tiny_shakespeare.txt", "tang300.txt"):
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / f).write_bytes((assets_dir() / "data" / f).read_bytes())
    return tmp_path


def test_lmcore_assets_copy_is_used_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("LMCORE_ASSETS", str(_copy_assets(tmp_path)))
    assert assets_dir() == tmp_path
    assert load_corpus("tang300").count("作者：") == 313
    path = tmp_path / "data" / "tang300.txt"
    blob = path.read_bytes()
    path.write_bytes(blob.replace("床".encode(), "牀".encode(), 1))  # same size, one character
    with pytest.raises(ValueError, match=r"tang300.txt does not match its recorded checksum"):
        load_corpus("tang300")
    path.write_bytes(blob + b"\n")
    with pytest.raises(ValueError, match=r"83,606 bytes .* expected 83,605 bytes"):
        load_corpus("tang300")


def test_lmcore_assets_that_does_not_exist_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("LMCORE_ASSETS", "/nonexistent")
    with pytest.raises(FileNotFoundError, match=r"LMCORE_ASSETS='/nonexistent' is not"):
        assets_dir()
    with pytest.raises(FileNotFoundError, match=r"LMCORE_ASSETS"):
        load_corpus("shakespeare")
    monkeypatch.setenv("LMCORE_ASSETS", str(tmp_path))  # exists, but no data/ inside
    with pytest.raises(FileNotFoundError, match=r"no data/ subfolder"):
        assets_dir()


def test_batches_refuse_float_and_bool_data():
    with pytest.raises(TypeError, match=r"integer token ids, got dtype torch.float32"):
        get_batch(torch.tensor([0.5, 1.7, 2.2, 3.9]), block_size=2, batch_size=1)
    with pytest.raises(TypeError, match=r"dtype torch.bool"):
        get_batch(torch.ones(10, dtype=torch.bool), block_size=2, batch_size=1)
    with pytest.raises(TypeError, match=r"dtype torch.float64"):
        train_val_split(torch.arange(100.0, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"block_size must be an int >= 1, got 2.5"):
        get_batch(torch.arange(10), block_size=2.5, batch_size=1)
    with pytest.raises(ValueError, match=r"batch_size must be an int >= 1, got '4'"):
        get_batch(torch.arange(10), block_size=2, batch_size="4")
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\), got 0.1"):
        train_val_split(torch.arange(100), "0.1")
    # int32 ids are fine and come back as int64
    x, y = get_batch(torch.arange(10, dtype=torch.int32), 3, 2,
                     generator=torch.Generator().manual_seed(0))
    assert x.dtype == y.dtype == torch.long


def _readme_rows():
    """(file, bytes, sha256) for every row of the tables in assets/data/README.md."""
    readme = (assets_dir() / "data" / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([^`]+)` \| ([\d,]+) \| `([0-9a-f]{64})` \|", readme, re.MULTILINE)
    return [(name, int(size.replace(",", "")), digest) for name, size, digest in rows]


def test_every_shipped_data_file_is_recorded_and_matches():
    rows = _readme_rows()
    recorded = {name for name, _, _ in rows}
    shipped = {p.name for p in (assets_dir() / "data").iterdir() if p.name != "README.md"}
    assert shipped == recorded, f"unrecorded: {shipped - recorded}; missing: {recorded - shipped}"
    for name, size, digest in rows:
        blob = (assets_dir() / "data" / name).read_bytes()
        assert (len(blob), hashlib.sha256(blob).hexdigest()) == (size, digest), name
