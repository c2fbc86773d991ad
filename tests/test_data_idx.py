"""IDX reading, md5 checks, search order and download of spiking.data.idx."""

import gzip
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from spiking.data import idx, load_fashion_mnist, load_mnist

REPO_MNIST = idx.REPO_DATA_DIR / "mnist"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not FASHION_DIR.is_dir(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
MNIST_FILES = idx.MNIST.filenames
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def idx_bytes(arr: np.ndarray) -> bytes:
    codes = {np.dtype("u1"): 0x08, np.dtype("i2"): 0x0B, np.dtype("f4"): 0x0D}
    code = codes[arr.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No $SPIKING_DATA, no repository copy, an empty user cache."""
    monkeypatch.delenv(idx.ENV_VAR, raising=False)
    monkeypatch.setattr(idx, "REPO_DATA_DIR", tmp_path / "no-repo")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def tiny_dataset(folder: Path, gz=True, n_train=6, n_test=4):
    """Write a tiny 4-file IDX dataset; return its DatasetSpec and arrays."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 3, 2), dtype=np.uint8),
        "train_labels": rng.integers(0, 3, n_train).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 3, 2), dtype=np.uint8),
        "test_labels": rng.integers(0, 3, n_test).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for role, arr in arrays.items():
        name = f"tiny-{role}"
        write_idx(folder / (name + (".gz" if gz else "")), arr, gz=gz)
        files.append((role, name, hashlib.md5(idx_bytes(arr)).hexdigest()))
    return idx.DatasetSpec(name="Tiny", subdir="tiny", files=tuple(files)), arrays


# ----------------------------------------------------------------------------- real MNIST


def test_mnist_shapes_dtypes_counts(monkeypatch):
    monkeypatch.delenv(idx.ENV_VAR, raising=False)
    train_x, train_y, test_x, test_y = load_mnist(download=False)
    assert train_x.shape == (60000, 28, 28) and train_x.dtype == torch.uint8
    assert test_x.shape == (10000, 28, 28) and test_x.dtype == torch.uint8
    assert train_y.shape == (60000,) and train_y.dtype == torch.int64
    assert test_y.shape == (10000,) and test_y.dtype == torch.int64
    assert torch.bincount(train_y).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(test_y).sum() == 10000 and test_y.max() == 9
    assert round(train_x.double().mean().item() / 255, 4) == 0.1307
    # second call served from the in-process cache: the very same tensors
    assert load_mnist(download=False)[0] is train_x


def test_repository_copy_has_licence_notice():
    readme = (REPO_MNIST / "README.md").read_text()
    assert "CC BY-SA 3.0" in readme and "LeCun" in readme


@needs_fashion
def test_fashion_mnist_system_copy(isolated):
    files = idx.locate(idx.FASHION_MNIST, download=False)
    assert all(p.parent == FASHION_DIR for p in files.values())
    train_x, train_y, test_x, test_y = load_fashion_mnist(download=False)
    assert train_x.shape == (60000, 28, 28) and train_x.dtype == torch.uint8
    assert test_x.shape == (10000, 28, 28) and test_y.dtype == torch.int64
    assert torch.bincount(train_y).tolist() == [6000] * 10
    assert torch.bincount(test_y).tolist() == [1000] * 10
    assert round(train_x.double().mean().item() / 255, 4) == 0.2860


# ----------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", ["u1", "i2", "f4"])
def test_read_idx_roundtrip(tmp_path, gz, dtype):
    arr = (np.arange(24).reshape(2, 3, 4) * 37 - 100).astype(dtype) if dtype != "u1" else \
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = idx.read_idx(write_idx(tmp_path / "a.idx", arr, gz=gz))
    assert out.dtype == np.dtype(dtype) and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)
    out.flat[0] = 1  # writable copy


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:2], "too short"),
        (lambda b: b"\x01" + b[1:], "magic"),
        (lambda b: b[:2] + b"\x42" + b[3:], "data type"),
        (lambda b: b[:3] + b"\x00" + b[4:], "0 dimensions"),
        (lambda b: b[:-5], "truncated"),
        (lambda b: b + b"\x00", "trailing"),
    ],
)
def test_corrupt_idx_names_file(tmp_path, mutate, message):
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(mutate(idx_bytes(np.zeros((3, 4, 4), np.uint8))))
    with pytest.raises(ValueError, match=message) as err:
        idx.read_idx(path)
    assert str(path) in str(err.value)


def test_truncated_gzip_names_file(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8).reshape(10, 100)))[:-20])
    with pytest.raises(ValueError, match="gzip") as err:
        idx.read_idx(path)
    assert str(path) in str(err.value)


def test_gz_name_without_gzip_data(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="not gzip") as err:
        idx.read_idx(path)
    assert str(path) in str(err.value)


def test_read_idx_md5(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = write_idx(tmp_path / "a.gz", arr, gz=True)
    good = hashlib.md5(idx_bytes(arr)).hexdigest()
    np.testing.assert_array_equal(idx.read_idx(path, md5=good), arr)  # md5 of decompressed bytes
    with pytest.raises(ValueError, match="md5 mismatch") as err:
        idx.read_idx(path, md5="0" * 32)
    assert str(path) in str(err.value)


# ----------------------------------------------------------------------------- MNIST files


def copy_mnist(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        shutil.copyfile(REPO_MNIST / f"{name}.gz", dest / f"{name}.gz")
    return dest


def test_wrong_md5_names_file(tmp_path):
    folder = copy_mnist(tmp_path / "m")
    target = folder / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(target.read_bytes()))
    data[-1] = (data[-1] + 1) % 10  # still a valid IDX file, one label changed
    target.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(ValueError, match="md5 mismatch") as err:
        load_mnist(path=folder)
    assert str(target) in str(err.value)


def test_truncated_mnist_file_names_it(tmp_path):
    folder = copy_mnist(tmp_path / "m")
    target = folder / "train-labels-idx1-ubyte"
    target.write_bytes(gzip.decompress((folder / "train-labels-idx1-ubyte.gz").read_bytes())[:-100])
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match="truncated") as err:
        load_mnist(path=folder)
    assert str(target) in str(err.value)


def test_missing_files_offline_says_how(isolated):
    with pytest.raises(FileNotFoundError) as err:
        load_mnist(download=False)
    msg = str(err.value)
    for needle in ("SPIKING_DATA", "load_mnist(path=", "download=False", *MNIST_FILES):
        assert needle in msg


def test_explicit_path_missing_file(tmp_path):
    folder = copy_mnist(tmp_path / "m")
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte") as err:
        load_mnist(path=folder, download=False)
    assert str(folder) in str(err.value)
    with pytest.raises(FileNotFoundError, match="path"):
        load_mnist(path=tmp_path / "nowhere")
    with pytest.raises(TypeError, match="path"):
        load_mnist(path=3)
    with pytest.raises(TypeError, match="download"):
        load_mnist(download="no")


def link_mnist(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in MNIST_FILES:
        (dest / f"{name}.gz").symlink_to(REPO_MNIST / f"{name}.gz")
    return dest


def test_search_order(isolated, monkeypatch):
    tmp = isolated
    cache = link_mnist(tmp / "cache" / "spiking" / "mnist")
    assert set(idx.locate(idx.MNIST, download=False).values()) == {
        cache / f"{n}.gz" for n in MNIST_FILES}
    repo = link_mnist(tmp / "repo" / "mnist")
    monkeypatch.setattr(idx, "REPO_DATA_DIR", tmp / "repo")
    assert all(p.parent == repo for p in idx.locate(idx.MNIST, download=False).values())
    env_flat = link_mnist(tmp / "env")  # files directly in $SPIKING_DATA
    monkeypatch.setenv(idx.ENV_VAR, str(env_flat))
    assert all(p.parent == env_flat for p in idx.locate(idx.MNIST, download=False).values())
    env_sub = link_mnist(tmp / "env2" / "mnist")  # $SPIKING_DATA/mnist/
    monkeypatch.setenv(idx.ENV_VAR, str(tmp / "env2"))
    assert all(p.parent == env_sub for p in idx.locate(idx.MNIST, download=False).values())
    explicit = link_mnist(tmp / "explicit")
    assert all(p.parent == explicit for p in idx.locate(idx.MNIST, path=explicit).values())
    # $SPIKING_DATA without MNIST falls through to the next location
    monkeypatch.setenv(idx.ENV_VAR, str(tmp / "empty"))
    assert all(p.parent == repo for p in idx.locate(idx.MNIST, download=False).values())
    # and the located files load
    assert load_mnist(path=explicit)[1].shape == (60000,)


# ----------------------------------------------------------------------------- download


def test_download_into_cache(isolated):
    tmp = isolated
    spec, arrays = tiny_dataset(tmp / "mirror")
    spec = idx.DatasetSpec(spec.name, spec.subdir, spec.files,
                           mirrors=((tmp / "dead").as_uri() + "/", (tmp / "mirror").as_uri() + "/"))
    with pytest.raises(FileNotFoundError, match="download=False"):
        idx.load_idx_dataset(spec, download=False)
    train_x, train_y, test_x, test_y = idx.load_idx_dataset(spec, download=True)
    np.testing.assert_array_equal(train_x.numpy(), arrays["train_images"])
    np.testing.assert_array_equal(test_y.numpy(), arrays["test_labels"])
    assert test_y.dtype == torch.int64
    cached = tmp / "cache" / "spiking" / "tiny"
    assert sorted(os.listdir(cached)) == sorted(f"tiny-{r}.gz" for r in idx.ROLES)
    # now found in the cache without downloading
    assert all(p.parent == cached for p in idx.locate(spec, download=False).values())


def test_download_bad_md5_leaves_nothing(isolated):
    tmp = isolated
    spec, _ = tiny_dataset(tmp / "mirror")
    bad = tuple((role, name, "0" * 32 if role == "train_labels" else md5)
                for role, name, md5 in spec.files)
    spec = idx.DatasetSpec(spec.name, spec.subdir, bad, mirrors=((tmp / "mirror").as_uri() + "/",))
    with pytest.raises(FileNotFoundError, match="md5 mismatch") as err:
        idx.load_idx_dataset(spec, download=True)
    assert "tiny-train_labels" in str(err.value)
    cached = tmp / "cache" / "spiking" / "tiny"
    assert sorted(os.listdir(cached)) == ["tiny-train_images.gz"]  # no partial/bad files


def test_interrupted_download_leaves_no_file(isolated, monkeypatch):
    tmp = isolated
    spec, _ = tiny_dataset(tmp / "mirror")
    spec = idx.DatasetSpec(spec.name, spec.subdir, spec.files, mirrors=((tmp / "mirror").as_uri() + "/",))

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(idx.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        idx.load_idx_dataset(spec, download=True)
    assert os.listdir(tmp / "cache" / "spiking" / "tiny") == []  # no partial or temp file


def test_raw_files_accepted(tmp_path):
    spec, arrays = tiny_dataset(tmp_path / "raw", gz=False)
    out = idx.load_idx_dataset(spec, path=tmp_path / "raw")
    np.testing.assert_array_equal(out[2].numpy(), arrays["test_images"])


def test_dataset_spec_roles_validated():
    with pytest.raises(ValueError, match="files"):
        idx.DatasetSpec("x", "x", (("train_images", "a", "0" * 32),))
