"""fetch: sources in order, checksum verification, and nothing half-written on failure."""

import gzip
import shutil

import pytest

from fmnist import fetch


def _copy_full(full_data_dir, dest):
    dest.mkdir()
    for data_file in fetch.DATA_FILES:
        shutil.copy(full_data_dir / data_file.name, dest / data_file.name)
    return dest


@pytest.fixture()
def no_system_sources(monkeypatch, tmp_path):
    monkeypatch.setattr(fetch, "DEBIAN_DIR", tmp_path / "no-debian-package")


def test_fetch_from_named_directory_verifies_and_is_idempotent(full_data_dir, tmp_path, no_system_sources):
    dest = fetch.fetch(tmp_path / "raw", source_dir=full_data_dir, allow_apt=False, allow_download=False)
    assert sorted(p.name for p in dest.iterdir()) == sorted(f.name for f in fetch.DATA_FILES)
    # Second call: already there and verified, no source needed.
    assert fetch.fetch(dest, allow_apt=False, allow_download=False) == dest


def test_checksum_mismatch_names_the_file_and_writes_nothing(full_data_dir, tmp_path, no_system_sources):
    source = _copy_full(full_data_dir, tmp_path / "source")
    bad = source / "t10k-labels-idx1-ubyte.gz"
    labels = bytearray(gzip.decompress(bad.read_bytes()))
    labels[100] = (labels[100] + 1) % 10  # one label changed
    bad.write_bytes(gzip.compress(bytes(labels)))
    dest = tmp_path / "raw"
    with pytest.raises(fetch.ChecksumError, match=r"t10k-labels-idx1-ubyte\.gz: checksum mismatch"):
        fetch.fetch(dest, source_dir=source, allow_apt=False, allow_download=False)
    assert not (dest / "t10k-labels-idx1-ubyte.gz").exists()
    assert not [p for p in dest.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_debian_location_is_used_when_present(full_data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "DEBIAN_DIR", full_data_dir)
    dest = fetch.fetch(tmp_path / "raw", allow_apt=False, allow_download=False)
    fetch.verify(dest / "train-images-idx3-ubyte.gz", fetch.DATA_FILES[0])


def test_missing_source_file_is_reported(tmp_path, no_system_sources):
    (tmp_path / "source").mkdir()
    with pytest.raises(FileNotFoundError, match=r"lacks train-images-idx3-ubyte\.gz"):
        fetch.fetch(tmp_path / "raw", source_dir=tmp_path / "source", allow_apt=False, allow_download=False)


def test_no_source_at_all_says_what_to_do(tmp_path, no_system_sources):
    with pytest.raises(FileNotFoundError, match="install the Debian package dataset-fashion-mnist"):
        fetch.fetch(tmp_path / "raw", allow_apt=False, allow_download=False)


def test_download_path_verifies_what_it_downloads(full_data_dir, tmp_path, no_system_sources):
    """The official-URL path, exercised against a file:// mirror of the real files."""
    dest = fetch.fetch(tmp_path / "raw", allow_apt=False, base_url=full_data_dir.as_uri() + "/")
    fetch.verify(dest / "t10k-images-idx3-ubyte.gz", fetch.DATA_FILES[2])
