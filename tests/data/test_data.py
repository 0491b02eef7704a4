"""The data registry: real file formats, preprocessing, determinism, noise, augmentation, errors."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lossatlas.config import DataConfig
from lossatlas.data import (
    Dataset,
    RawData,
    augment_batch,
    available_datasets,
    load_dataset,
    register_dataset,
    unregister_dataset,
    validate_arrays,
)
from lossatlas.errors import DataError
from lossatlas.seeding import make_generator
from tests._formats import (
    IDX_STEMS,
    cifar_bin_bytes,
    flat_arrays,
    idx_bytes,
    write_bytes,
    write_cifar_folder,
    write_mnist_folder,
    write_npz,
)


def tensors(ds: Dataset) -> dict[str, torch.Tensor]:
    names = ["x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "noisy_mask"]
    return {name: getattr(ds, name) for name in names}


def assert_same(a: Dataset, b: Dataset) -> None:
    for name, value in tensors(a).items():
        assert torch.equal(value, getattr(b, name)), name


def expected_images(pixels: np.ndarray) -> np.ndarray:
    """(N, C, H, W) uint8 -> scaled to [0, 1], standardised per channel with its own stats."""
    x = pixels.astype(np.float64) / 255.0
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    std = x.std(axis=(0, 2, 3), keepdims=True)
    return (x - mean) / std


@pytest.fixture
def synthetic():
    """Register ``synthetic``: 20000 flat samples whose first feature is the sample index."""
    n, n_test = 20_000, 500
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n, 3))
    x[:, 0] = np.arange(n)
    arrays = RawData(
        x_train=x,
        y_train=rng.integers(0, 10, n),
        x_test=rng.normal(size=(n_test, 3)),
        y_test=rng.integers(0, 10, n_test),
        num_classes=10,
    )
    register_dataset("synthetic", lambda cfg: arrays)
    yield arrays
    unregister_dataset("synthetic")


# --------------------------------------------------------------------------- built-in datasets


def test_available_datasets_lists_builtins():
    assert {"mnist1d", "digits", "npz", "mnist", "fashion_mnist", "cifar10"} <= set(
        available_datasets()
    )


def test_mnist1d_shapes_and_global_rng_untouched():
    np.random.seed(123)
    random.seed(123)
    ds = load_dataset(DataConfig(name="mnist1d", val_fraction=0.1))
    after_numpy, after_python = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    assert (after_numpy, after_python) == (np.random.rand(), random.random())
    assert ds.x_train.shape == (3600, 40) and ds.x_val.shape == (400, 40)
    assert ds.x_test.shape == (1000, 40) and ds.y_test.shape == (1000,)
    assert ds.input_shape == (40,) and ds.num_classes == 10 and not ds.is_image
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert set(ds.y_train.tolist()) == set(range(10))
    # Cached per seed: a second load is identical.
    assert_same(ds, load_dataset(DataConfig(name="mnist1d", val_fraction=0.1)))


def test_digits_is_standardised_with_train_statistics():
    ds = load_dataset(DataConfig(name="digits", val_fraction=0.2))
    assert ds.input_shape == (64,) and ds.num_classes == 10
    assert len(ds.y_test) == 359 and len(ds.y_train) + len(ds.y_val) == 1797 - 359
    assert len(ds.y_val) == round(0.2 * (1797 - 359))
    mean, std = ds.x_train.double().mean(0), ds.x_train.double().std(0, correction=0)
    varying = std > 0  # a few border pixels are always blank: they stay exactly 0
    assert varying.sum() > 50
    assert torch.allclose(mean, torch.zeros(64, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(std[varying], torch.ones(int(varying.sum()), dtype=torch.float64))
    assert not torch.allclose(ds.x_test.double().mean(0), torch.zeros(64, dtype=torch.float64))


def test_same_config_gives_identical_tensors_and_seed_changes_them():
    cfg = DataConfig(name="digits", val_fraction=0.1, label_noise=0.3, n_train=500, n_test=100)
    first, second = load_dataset(cfg), load_dataset(cfg)
    assert_same(first, second)
    other = load_dataset(cfg.model_copy(update={"seed": 1}))
    assert not torch.equal(first.y_train, other.y_train)


def test_npz_flat_features(tmp_path):
    arrays = flat_arrays()
    path = write_npz(tmp_path / "flat.npz", **arrays)
    ds = load_dataset(DataConfig(name="npz", path=path, val_fraction=0.0))
    assert ds.input_shape == (5,) and not ds.is_image and ds.num_classes == 3
    expected = (arrays["x_train"] - arrays["x_train"].mean(0)) / arrays["x_train"].std(0)
    assert np.allclose(ds.x_train.numpy(), expected, atol=1e-5)
    assert torch.equal(ds.y_train, torch.from_numpy(arrays["y_train"]))
    test_expected = (arrays["x_test"] - arrays["x_train"].mean(0)) / arrays["x_train"].std(0)
    assert np.allclose(ds.x_test.numpy(), test_expected, atol=1e-5)


def test_npz_images_and_declared_num_classes(tmp_path):
    x, _ = np.random.default_rng(0).integers(0, 256, (2, 20, 3, 6, 6), dtype=np.uint8)
    path = write_npz(
        tmp_path / "img.npz",
        x_train=x,
        y_train=np.arange(20) % 4,
        x_test=x[:5],
        y_test=np.zeros(5, dtype=np.int64),
        num_classes=np.array(7),
    )
    ds = load_dataset(DataConfig(name="npz", path=path, val_fraction=0.0))
    assert ds.is_image and ds.input_shape == (3, 6, 6) and ds.num_classes == 7
    assert np.allclose(ds.x_train.numpy(), expected_images(x), atol=1e-5)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_mnist_idx_files(tmp_path, gz, layout):
    folder = tmp_path if layout == "flat" else tmp_path / "MNIST" / "raw"
    arrays = write_mnist_folder(folder, gz=gz)
    ds = load_dataset(DataConfig(name="mnist", path=tmp_path, val_fraction=0.0))
    assert ds.is_image and ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.x_train.shape == (30, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    assert np.allclose(ds.x_train.numpy(), expected_images(arrays["x_train"][:, None]), atol=1e-5)
    assert torch.equal(ds.y_train, torch.from_numpy(arrays["y_train"].astype(np.int64)))
    assert torch.equal(ds.y_test, torch.from_numpy(arrays["y_test"].astype(np.int64)))


def test_fashion_mnist_torchvision_layout(tmp_path):
    write_mnist_folder(tmp_path / "FashionMNIST" / "raw", gz=True, side=5)
    ds = load_dataset(DataConfig(name="fashion_mnist", path=tmp_path, val_fraction=0.2))
    assert ds.input_shape == (1, 5, 5) and len(ds.y_train) == 24 and len(ds.y_val) == 6


@pytest.mark.parametrize(
    ("kind", "protocol", "legacy"),
    [("bin", None, False), ("py", 2, True), ("py", 2, False), ("py", 4, False), ("py", 5, False)],
)
def test_cifar10_binary_and_python_batches(tmp_path, kind, protocol, legacy):
    arrays = write_cifar_folder(tmp_path, kind, protocol=protocol or 2, legacy=legacy)
    ds = load_dataset(DataConfig(name="cifar10", path=tmp_path, val_fraction=0.0))
    assert ds.is_image and ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert np.allclose(ds.x_train.numpy(), expected_images(arrays["x_train"]), atol=1e-5)
    assert torch.equal(ds.y_train, torch.from_numpy(arrays["y_train"].astype(np.int64)))
    means = ds.x_train.double().mean(dim=(0, 2, 3))
    assert torch.allclose(means, torch.zeros(3, dtype=torch.float64), atol=1e-5)


def test_cifar10_pickle_cannot_run_code(tmp_path):
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("still here")

    class Evil:
        def __reduce__(self):
            return (os.remove, (str(sentinel),))

    folder = tmp_path / "cifar-10-batches-py"
    for stem in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        write_bytes(folder / stem, pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(DataError, match=r"refusing to unpickle 'posix\.remove'|'os\.remove'"):
        load_dataset(DataConfig(name="cifar10", path=tmp_path))
    assert sentinel.exists()


# --------------------------------------------------------------------------- split and noise


@pytest.mark.parametrize(
    ("n_train", "val_fraction", "n_val"),
    [(None, 0.1, 2000), (None, 0.0, 0), (100, 0.1, 10), (100, 0.25, 25), (10, 0.01, 1)],
)
def test_val_split_sizes_and_disjointness(synthetic, n_train, val_fraction, n_val):
    cfg = DataConfig(name="synthetic", n_train=n_train, val_fraction=val_fraction, n_test=50)
    ds = load_dataset(cfg)
    used = n_train or 20_000
    assert len(ds.y_val) == len(ds.x_val) == n_val
    assert len(ds.y_train) == len(ds.x_train) == used - n_val
    assert len(ds.y_test) == 50 and ds.noisy_mask.shape == (used - n_val,)
    # Feature 0 is an affine image of the sample index, so rows identify samples.
    train_ids, val_ids = set(ds.x_train[:, 0].tolist()), set(ds.x_val[:, 0].tolist())
    assert len(train_ids) == len(ds.y_train) and not train_ids & val_ids


def test_label_noise_rate_and_mask(synthetic):
    clean = load_dataset(DataConfig(name="synthetic", val_fraction=0.1))
    noisy = load_dataset(DataConfig(name="synthetic", val_fraction=0.1, label_noise=0.3))
    assert torch.equal(clean.x_train, noisy.x_train)  # noise does not move the split
    assert torch.equal(clean.y_val, noisy.y_val) and torch.equal(clean.y_test, noisy.y_test)
    assert not clean.noisy_mask.any()
    mask = noisy.noisy_mask
    assert mask.dtype == torch.bool and abs(mask.float().mean().item() - 0.3) < 0.015
    changed = noisy.y_train != clean.y_train
    assert not changed[~mask].any()  # only resampled labels can change ...
    assert abs(changed.float().mean().item() - 0.3 * 0.9) < 0.015  # ... 9 in 10 of them do
    assert noisy.y_train.min() >= 0 and noisy.y_train.max() < 10
    full = load_dataset(DataConfig(name="synthetic", label_noise=1.0))
    assert full.noisy_mask.all()


def test_dataset_split_and_to():
    ds = load_dataset(DataConfig(name="digits", n_train=100, n_test=20))
    x, y = ds.split("val")
    assert x is ds.x_val and y is ds.y_val
    with pytest.raises(ValueError, match="unknown split"):
        ds.split("everything")  # type: ignore[arg-type]
    moved = ds.to("cpu", torch.float64)
    assert moved.x_train.dtype == torch.float64 and moved.x_test.dtype == torch.float64
    assert moved.y_train.dtype == torch.int64 and moved.noisy_mask.dtype == torch.bool
    assert "digits" in repr(ds) and "train=90" in repr(ds)


def test_custom_loader_must_return_rawdata():
    register_dataset("broken", lambda cfg: {"x_train": []})
    try:
        with pytest.raises(TypeError, match="expected RawData"):
            load_dataset(DataConfig(name="broken"))
        with pytest.raises(ValueError, match="already registered"):
            register_dataset("broken", lambda cfg: None)
    finally:
        unregister_dataset("broken")


def test_validate_arrays_returns_num_classes():
    arrays = flat_arrays()
    assert validate_arrays(**arrays, source="mine") == 3
    assert validate_arrays(**arrays, source="mine", num_classes=5) == 5
    floats = {**arrays, "y_train": arrays["y_train"].astype(np.float32)}
    assert validate_arrays(**floats, source="mine") == 3


# --------------------------------------------------------------------------- augmentation


def crop_flip_matches(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``(n, 162)`` bool: which crop offset (9 x 9, 4-pixel zero padding) and flip of each image
    ``x[i]`` ``(C, H, W)`` equals ``out[i]``; columns 0..80 unflipped, 81..161 flipped."""
    _, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    crops = torch.stack(
        [padded[:, :, i : i + h, j : j + w] for i in range(9) for j in range(9)], dim=1
    )
    every = torch.cat([crops, crops.flip(-1)], dim=1)  # (n, 162, C, H, W)
    return (every == out[:, None]).flatten(2).all(2)


def test_augment_batch_is_a_crop_and_flip_per_sample():
    x = torch.randn(2, 8, 3, 6, 7)  # (members, batch, C, H, W), non-square on purpose
    out = augment_batch(x, make_generator(0, "augment"))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert crop_flip_matches(x.reshape(-1, 3, 6, 7), out.reshape(-1, 3, 6, 7)).any(1).all()


def test_augment_batch_is_seeded_and_varies():
    x = torch.randn(400, 2, 5, 5, dtype=torch.float64)
    first = augment_batch(x, make_generator(3, "augment"))
    assert torch.equal(first, augment_batch(x, make_generator(3, "augment")))
    assert not torch.equal(first, augment_batch(x, make_generator(4, "augment")))
    assert first.dtype == torch.float64
    matches = crop_flip_matches(x, first)
    assert (matches.sum(1) == 1).all()  # random pixels: exactly one crop and flip fits
    choice = matches.float().argmax(1)
    flipped, offset = choice >= 81, choice % 81
    assert 0.4 < flipped.float().mean().item() < 0.6  # independent fair coin per sample
    assert set((offset // 9).tolist()) == set(range(9))  # every vertical shift occurs
    assert set((offset % 9).tolist()) == set(range(9))  # every horizontal shift occurs
    assert (first == x).flatten(1).all(1).float().mean().item() < 0.05
    with pytest.raises(ValueError, match="C, H, W"):
        augment_batch(torch.zeros(4, 5), make_generator(0))


# --------------------------------------------------------------------------- errors


def npz_case(tmp_path: Path, **changes) -> Path:
    arrays = {**flat_arrays(), **changes}
    return write_npz(tmp_path / "data.npz", **{k: v for k, v in arrays.items() if v is not None})


NPZ_ERRORS = {
    "length mismatch": ({"y_train": np.zeros(39, dtype=np.int64)}, "has 40 samples but y_train"),
    "y not 1-D": ({"y_test": np.zeros((12, 2), dtype=np.int64)}, "y_test must be 1-D"),
    "feature shapes": ({"x_test": np.zeros((12, 6))}, r"x_train samples have shape \(5,\)"),
    "nan": ({"x_train": np.full((40, 5), np.nan)}, "x_train contains NaN or inf"),
    "inf": ({"x_test": np.full((12, 5), np.inf)}, "x_test contains NaN or inf"),
    "negative label": ({"y_train": -np.ones(40, dtype=np.int64)}, "negative labels"),
    "fractional label": ({"y_train": np.full(40, 0.5)}, "non-integer labels"),
    "string x": ({"x_train": np.array([["a"] * 5] * 40)}, "x_train has dtype <U1"),
    "3-D x": ({"x_train": np.zeros((40, 5, 2))}, r"x_train must be \(N, features\)"),
    "missing array": ({"y_test": None}, "lacks array 'y_test'"),
    "label vs num_classes": ({"num_classes": np.array(2)}, "out of range for 2 classes"),
    "empty": ({"x_test": np.zeros((0, 5)), "y_test": np.zeros(0)}, "x_test is empty"),
}


@pytest.mark.parametrize("case", list(NPZ_ERRORS))
def test_npz_errors(tmp_path, case):
    changes, message = NPZ_ERRORS[case]
    path = npz_case(tmp_path, **changes)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(DataConfig(name="npz", path=path))
    assert "\n" not in str(info.value) and "data.npz" in str(info.value)


def one_line_error(cfg: DataConfig, match: str) -> str:
    with pytest.raises(DataError, match=match) as info:
        load_dataset(cfg)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_config_and_split_errors(tmp_path):
    text = one_line_error(DataConfig(name="imagenet"), "unknown dataset 'imagenet'")
    assert "mnist1d" in text and "cifar10" in text
    one_line_error(DataConfig(name="npz"), "data.path is required for data.name=npz")
    one_line_error(DataConfig(name="npz", path=tmp_path / "nope.npz"), "does not exist")
    one_line_error(DataConfig(name="npz", path=tmp_path), "is a folder")
    one_line_error(DataConfig(name="digits", path=tmp_path), "data.path is not used")
    path = npz_case(tmp_path)
    one_line_error(DataConfig(name="npz", path=path, n_train=41), "n_train=41 exceeds the 40")
    one_line_error(DataConfig(name="npz", path=path, n_test=13), "n_test=13 exceeds the 12")
    one_line_error(
        DataConfig(name="npz", path=path, n_train=1, val_fraction=0.5), "too few samples"
    )
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip archive")
    one_line_error(DataConfig(name="npz", path=tmp_path / "junk.npz"), "junk.npz: unreadable npz")


def test_idx_errors(tmp_path):
    def mnist(folder: Path) -> DataConfig:
        return DataConfig(name="mnist", path=folder)

    one_line_error(mnist(tmp_path / "absent"), "does not exist")
    (tmp_path / "empty").mkdir()
    one_line_error(mnist(tmp_path / "empty"), "no IDX files in")

    write_mnist_folder(tmp_path / "partial", side=4)
    (tmp_path / "partial" / IDX_STEMS["y_test"]).unlink()
    one_line_error(mnist(tmp_path / "partial"), "lacks t10k-labels-idx1-ubyte")

    labels = np.zeros(30, dtype=np.uint8)
    cases = {
        "magic": (b"\x08\x03" + idx_bytes(labels)[2:], "not an IDX file"),
        "truncated": (idx_bytes(labels)[:-3], "truncated or corrupt IDX file"),
        "ndim": (idx_bytes(labels.reshape(30, 1)), "expected a 1-D IDX array"),
    }
    for name, (data, message) in cases.items():
        folder = tmp_path / name
        write_mnist_folder(folder, side=4)
        write_bytes(folder / IDX_STEMS["y_train"], data)
        text = one_line_error(mnist(folder), message)
        assert "train-labels-idx1-ubyte" in text

    folder = tmp_path / "badgz"
    write_mnist_folder(folder, side=4, gz=True)
    (folder / (IDX_STEMS["x_train"] + ".gz")).write_bytes(b"\x1f\x8b\x08garbage")
    one_line_error(mnist(folder), "corrupt or truncated gzip")


def test_cifar_errors(tmp_path):
    def cifar(folder: Path) -> DataConfig:
        return DataConfig(name="cifar10", path=folder)

    one_line_error(cifar(tmp_path / "absent"), "does not exist")
    (tmp_path / "empty").mkdir()
    one_line_error(cifar(tmp_path / "empty"), "no CIFAR-10 batches")

    write_cifar_folder(tmp_path / "missing", "bin", per_batch=1)
    (tmp_path / "missing" / "cifar-10-batches-bin" / "data_batch_3.bin").unlink()
    one_line_error(cifar(tmp_path / "missing"), "lacks data_batch_3.bin")

    x = np.zeros((2, 3, 32, 32), dtype=np.uint8)
    bin_cases = {
        "truncated": (cifar_bin_bytes(x, np.zeros(2))[:-1], "not a whole number of 3073-byte"),
        "label": (cifar_bin_bytes(x, np.array([1, 12])), "label 12 of record 1"),
    }
    for name, (data, message) in bin_cases.items():
        write_cifar_folder(tmp_path / name, "bin", per_batch=1)
        write_bytes(tmp_path / name / "cifar-10-batches-bin" / "test_batch.bin", data)
        assert "test_batch.bin" in one_line_error(cifar(tmp_path / name), message)

    py_cases = {
        "corrupt": (b"\x80\x02}q\x00(X", "corrupt or truncated CIFAR-10 python batch"),
        "not a batch": (pickle.dumps([1, 2, 3]), "not a CIFAR-10 python batch"),
        "shape": (pickle.dumps({b"data": np.zeros((2, 5)), b"labels": [0, 1]}), "must be an"),
    }
    for name, (data, message) in py_cases.items():
        write_cifar_folder(tmp_path / name, "py", per_batch=1)
        write_bytes(tmp_path / name / "cifar-10-batches-py" / "data_batch_2", data)
        assert "data_batch_2" in one_line_error(cifar(tmp_path / name), message)
