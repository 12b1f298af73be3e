"""What `fmnist predict` accepts, converted the way Fashion-MNIST images were made."""

import numpy as np
import pytest
from PIL import Image

from fmnist.dataset import read_split
from serving.client.inputs import load_inputs


def test_photo_on_a_light_background_becomes_light_on_dark_28x28(tmp_path):
    photo = np.full((120, 60), 240, np.uint8)  # a tall white page...
    photo[20:100, 15:45] = 30  # ...with a dark garment on it
    Image.fromarray(photo).save(tmp_path / "coat.png")
    Image.fromarray(photo).convert("RGB").save(tmp_path / "coat.jpg", quality=95)

    for item in load_inputs([str(tmp_path / "coat.png"), str(tmp_path / "coat.jpg")], tmp_path):
        assert item.image.shape == (28, 28) and item.image.dtype == np.float32
        assert item.image.min() >= 0 and item.image.max() <= 255
        assert item.image[14, 14] > 180  # the garment is now light
        assert item.image[14, 0] == 0 and item.image[0, 14] < 60  # padding and background dark
        assert item.label is None


def test_npy_arrays_of_every_accepted_shape(tmp_path):
    np.save(tmp_path / "one.npy", np.full((28, 28), 7.0))
    np.save(tmp_path / "many.npy", np.zeros((3, 28, 28), np.uint8))
    np.save(tmp_path / "flat.npy", np.zeros((2, 784)))
    names = [i.name for i in load_inputs([str(tmp_path / f) for f in ("one.npy", "many.npy", "flat.npy")], tmp_path)]
    assert names == ["one.npy", "many.npy[0]", "many.npy[1]", "many.npy[2]", "flat.npy[0]", "flat.npy[1]"]


def test_test_split_indices_carry_their_true_labels(sample_dir):
    items = load_inputs(["test:3-5", "test:0"], sample_dir)
    test = read_split(sample_dir, "test")
    assert [i.name for i in items] == ["test:3", "test:4", "test:5", "test:0"]
    assert [i.label for i in items] == [int(test.labels[i]) for i in (3, 4, 5, 0)]
    np.testing.assert_array_equal(items[0].image.reshape(-1), test.images[3])


@pytest.mark.parametrize(("make", "spec", "message"), [
    (lambda d: np.save(d / "bad.npy", np.zeros((5, 5))), "bad.npy", r"expected \[28, 28\]"),
    (lambda d: np.save(d / "hot.npy", np.full((28, 28), 300.0)), "hot.npy", r"within \[0, 255\]"),
    (lambda d: (d / "fake.png").write_bytes(b"not a png"), "fake.png", "not a readable image"),
    (lambda d: (d / "notes.txt").write_text("x"), "notes.txt", "unsupported file type .txt"),
    (lambda d: None, "missing.png", "no such file"),
    (lambda d: None, "test:99999", "the test split has indices 0..299"),
])
def test_bad_inputs_say_what_is_wrong(tmp_path, sample_dir, make, spec, message):
    make(tmp_path)
    target = spec if spec.startswith("test:") else str(tmp_path / spec)
    with pytest.raises(ValueError, match=message):
        load_inputs([target], sample_dir)
