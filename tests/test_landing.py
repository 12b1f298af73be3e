"""`fmnist land`: new labelled data becomes the next span, checked first, landed whole or not at all."""

import re
import threading

import numpy as np
import pytest

from cli import main as cli
from fmnist import dataset, features, landing


def _images_folder(root, raw, per_class=2):
    from PIL import Image

    for c, name in enumerate(features.CLASS_NAMES):
        folder = root / name.replace("/", "_")
        folder.mkdir(parents=True)
        for i in np.flatnonzero(raw.labels == c)[:per_class]:
            Image.fromarray(raw.images[i].reshape(features.IMAGE_SHAPE).astype(np.uint8)).save(folder / f"{i:05d}.png")
    return root


def test_idx_csv_and_image_folders_land_as_numbered_idx_spans(sample_dir, tmp_path):
    raw = dataset.read_split(sample_dir, "train")
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    with open(csv_dir / dataset.CSV_FILES["train"], "wb") as out:
        dataset.write_csv_split(raw, out)
    folder = _images_folder(tmp_path / "photos", raw)
    out = tmp_path / "landing"

    assert landing.land(sample_dir, out)[::2] == (1, 1000)
    assert landing.land(csv_dir, out, "csv")[::2] == (2, 1000)
    assert landing.land(folder, out, "images")[::2] == (3, 20)
    assert list(landing.spans(out)) == [1, 2, 3]
    first, second, third = (dataset.read_split(path, "train") for path in landing.spans(out).values())
    np.testing.assert_array_equal(first.images, raw.images)
    np.testing.assert_array_equal(second.labels, raw.labels)
    # PNG is lossless and these light-on-dark pictures need no inversion: each comes back as it
    # was, with the label of its folder (folders are read by name, so compare in class order).
    picked = np.concatenate([np.flatnonzero(raw.labels == c)[:2] for c in range(10)])
    order = np.argsort(third.labels, kind="stable")
    np.testing.assert_array_equal(third.labels[order], raw.labels[picked])
    np.testing.assert_array_equal(third.images[order], raw.images[picked])
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["span-1", "span-2", "span-3"]


@pytest.mark.parametrize("breakage", ["corrupt", "unknown_class", "empty", "not_an_image"])
def test_bad_spans_are_refused_and_nothing_is_landed(breakage, sample_dir, tmp_path, capsys):
    out = tmp_path / "landing"
    landing.land(sample_dir, out)
    source = tmp_path / "new"
    if breakage == "corrupt":
        source.mkdir()
        for name in dataset.IDX_FILES["train"]:
            (source / name).write_bytes((sample_dir / name).read_bytes()[:3000])
        kind, message = "idx", r"train-images-idx3-ubyte\.gz: truncated gzip stream"
    elif breakage == "unknown_class":
        _images_folder(source, dataset.read_split(sample_dir, "train"), per_class=1)
        (source / "Sock").mkdir()
        kind, message = "images", r"Sock: unknown class folder 'Sock'"
    elif breakage == "empty":
        source.mkdir()
        kind, message = "images", r"new: empty, expected one sub-folder per class"
    else:
        (source / "Bag").mkdir(parents=True)
        (source / "Bag" / "notes.txt").write_text("hi")
        kind, message = "images", r"notes\.txt: not an image file"
    assert cli.main(["land", str(source), "--landing", str(out), "--format", kind]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert re.search(message, err), err
    assert list(landing.spans(out)) == [1]
    assert [p.name for p in out.iterdir() if p.name.startswith(".span")] == []  # no staging left


def test_span_numbers_never_go_backwards(sample_dir, tmp_path):
    out = tmp_path / "landing"
    assert landing.land(sample_dir, out, span=5)[0] == 5
    with pytest.raises(dataset.DatasetError, match="span 3 is not newer than the latest landed span 5"):
        landing.land(sample_dir, out, span=3)
    assert landing.land(sample_dir, out)[0] == 6


def test_two_lands_at_once_do_not_interleave(sample_dir, tmp_path):
    out = tmp_path / "landing"
    results, errors = [], []

    def land():
        try:
            results.append(landing.land(sample_dir, out)[0])
        except dataset.DatasetError as err:
            errors.append(str(err))

    threads = [threading.Thread(target=land) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Each land either took the next number or was told another one was running.
    assert sorted(results) == list(range(1, len(results) + 1))
    assert all("another `fmnist land`" in e for e in errors)
    assert list(landing.spans(out)) == sorted(results)


def test_cli_prints_what_it_landed(sample_dir, tmp_path, capsys):
    assert cli.main(["land", str(sample_dir), "--landing", str(tmp_path / "l")]) == 0
    assert capsys.readouterr().out.strip() == f"landed span 1: 1,000 examples in {tmp_path / 'l' / 'span-1'}"
