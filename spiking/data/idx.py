"""IDX files: reading, md5 checks of the decompressed content, locating and downloading datasets.

Search order for a dataset's four files (each as ``NAME`` or ``NAME.gz``):

1. the explicit ``path`` argument (no fallback if it lacks the files);
2. ``$SPIKING_DATA`` (a folder holding ``mnist/`` / ``fashion-mnist/``, or the files directly);
3. the copy kept in the repository (``<repo>/data/<subdir>``, absent in a non-editable install);
4. the user cache (``$XDG_CACHE_HOME/spiking/<subdir>`` or ``~/.cache/spiking/<subdir>``);
5. system folders (Fashion-MNIST: Debian package ``dataset-fashion-mnist``);
6. with ``download=True``, a download from the mirrors into the user cache.

Every file's decompressed content is checked against its md5 before use.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DatasetSpec",
    "MNIST",
    "FASHION_MNIST",
    "read_idx",
    "parse_idx",
    "locate",
    "load_idx_dataset",
    "load_mnist",
    "load_fashion_mnist",
]

ENV_VAR = "SPIKING_DATA"
#: Repository copy: ``<repo>/data`` relative to this file (spiking/data/idx.py).
REPO_DATA_DIR = Path(__file__).resolve().parents[2] / "data"
DOWNLOAD_TIMEOUT_S = 15.0
ROLES = ("train_images", "train_labels", "test_images", "test_labels")

# IDX type byte -> numpy dtype (big-endian on disk).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class DatasetSpec:
    """Where and how to find one IDX dataset.

    ``files`` is a tuple of ``(role, filename, md5 of the decompressed file)`` for the four
    roles in ``ROLES``; ``mirrors`` are base URLs serving ``filename + ".gz"``.
    """

    name: str
    subdir: str
    files: tuple[tuple[str, str, str], ...]
    mirrors: tuple[str, ...] = ()
    system_dirs: tuple[str, ...] = ()

    def __post_init__(self):
        roles = tuple(role for role, _, _ in self.files)
        if sorted(roles) != sorted(ROLES):
            raise ValueError(f"files: expected roles {ROLES}, got {roles}")

    @property
    def filenames(self) -> tuple[str, ...]:
        return tuple(name for _, name, _ in self.files)


MNIST = DatasetSpec(
    name="MNIST",
    subdir="mnist",
    files=(
        ("train_images", "train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb"),
        ("train_labels", "train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624"),
        ("test_images", "t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea"),
        ("test_labels", "t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637"),
    ),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
)

# md5s of the DECOMPRESSED files. The official release lists md5s of its .gz files
# (train-images 8d4fb7e6..., train-labels 25c81989..., t10k-images bef4ecab..., t10k-labels
# bb300cfd...); decompressing those gives exactly the md5s below, which are also what the
# Debian package dataset-fashion-mnist yields (its .gz were recompressed, so their own md5s differ).
FASHION_MNIST = DatasetSpec(
    name="Fashion-MNIST",
    subdir="fashion-mnist",
    files=(
        ("train_images", "train-images-idx3-ubyte", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        ("train_labels", "train-labels-idx1-ubyte", "9018921c3c673c538a1fc5bad174d6f9"),
        ("test_images", "t10k-images-idx3-ubyte", "8181f5470baa50b63fa0f6fddb340f0a"),
        ("test_labels", "t10k-labels-idx1-ubyte", "15d484375f8d13e6eb1aabb0c3f46965"),
    ),
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
)


# ----------------------------------------------------------------------------- reading


def _read_bytes(path: Path) -> bytes:
    """Return the (decompressed, if gzip) content of ``path``."""
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        if path.suffix == ".gz":
            raise ValueError(f"{path}: named .gz but is not gzip data")
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from exc


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into a native-endian numpy array; errors name ``source``."""
    if len(data) < 4:
        raise ValueError(f"{source}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"{source}: bad IDX magic {data[:4].hex()} (must start with 0000)")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{source}: unknown IDX data type 0x{type_code:02x}")
    if ndim == 0:
        raise ValueError(f"{source}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{source}: truncated IDX header ({len(data)} < {header} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"{source}: IDX file {what}: dims {dims} need {expected} bytes, found {len(data)}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))  # copy: native order, writable


def read_idx(path, md5: str | None = None) -> np.ndarray:
    """Read an IDX file (raw or gzip); if ``md5`` is given, check the decompressed content."""
    path = Path(path)
    data = _read_bytes(path)
    arr = parse_idx(data, source=str(path))
    if md5 is not None:
        _check_md5(data, md5, path)
    return arr


def _check_md5(data: bytes, md5: str, path: Path) -> None:
    got = hashlib.md5(data).hexdigest()
    if got != md5:
        raise ValueError(
            f"md5 mismatch for {path}: decompressed content has md5 {got}, expected {md5}. "
            "The file is corrupt or not the expected release; delete or replace it."
        )


# ----------------------------------------------------------------------------- locating


def _find_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _files_in(folder: Path, spec: DatasetSpec) -> tuple[dict[str, Path], list[str]]:
    """Files of ``spec`` found in ``folder`` (or ``folder/subdir``), and the missing names."""
    best: tuple[dict[str, Path], list[str]] | None = None
    for root in (folder / spec.subdir, folder):
        found, missing = {}, []
        for role, name, _ in spec.files:
            hit = _find_file(root, name)
            if hit is None:
                missing.append(name)
            else:
                found[role] = hit
        if not missing:
            return found, missing
        if best is None or len(found) > len(best[0]):
            best = (found, missing)
    return best


def cache_dir() -> Path:
    """User cache folder: ``$XDG_CACHE_HOME/spiking`` or ``~/.cache/spiking``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spiking"


def _how_to(spec: DatasetSpec, func: str) -> str:
    names = ", ".join(f"{n}.gz" for n in spec.filenames)
    return (
        f"To supply {spec.name}, put the four files ({names}; gzip or uncompressed) in a folder "
        f"and either call {func}(path=FOLDER), or set {ENV_VAR}=PARENT with the files in "
        f"PARENT/{spec.subdir}/ (or directly in PARENT), or copy them to {cache_dir() / spec.subdir}/."
    )


def locate(spec: DatasetSpec, path=None, download: bool = True, func: str = "load") -> dict[str, Path]:
    """Return ``{role: file}`` for ``spec`` following the module's search order."""
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"path: {folder} is not a folder. {_how_to(spec, func)}")
        found, missing = _files_in(folder, spec)
        if missing:
            raise FileNotFoundError(
                f"path: {folder} lacks {spec.name} files {missing}. {_how_to(spec, func)}"
            )
        return found

    searched = []
    env = os.environ.get(ENV_VAR)
    folders = []
    if env:
        folders.append((f"${ENV_VAR}", Path(env).expanduser()))
    else:
        searched.append(f"${ENV_VAR} (unset)")
    folders.append(("repository copy", REPO_DATA_DIR))
    cache = cache_dir()
    folders.append(("user cache", cache))
    folders += [("system folder", Path(d)) for d in spec.system_dirs]
    for label, folder in folders:
        if folder.is_dir():
            found, missing = _files_in(folder, spec)
            if not missing:
                return found
            searched.append(f"{label} {folder} (missing {missing})")
        else:
            searched.append(f"{label} {folder} (no such folder)")

    if not download:
        reason = "download=False"
    elif not spec.mirrors:
        reason = "no download mirrors known"
    else:
        try:
            return _download(spec, cache / spec.subdir)
        except OSError as exc:
            reason = f"download failed: {exc}"
    raise FileNotFoundError(
        f"{spec.name} not found. Searched: {'; '.join(searched)}; {reason}. {_how_to(spec, func)}"
    )


# ----------------------------------------------------------------------------- download


def _download(spec: DatasetSpec, target: Path) -> dict[str, Path]:
    """Fetch the files missing from ``target`` (md5-checked, written atomically)."""
    target.mkdir(parents=True, exist_ok=True)
    out = {}
    for role, name, md5 in spec.files:
        existing = _find_file(target, name)
        if existing is not None:
            out[role] = existing
            continue
        errors = []
        for base in spec.mirrors:
            url = base + name + ".gz"
            try:
                with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
                    blob = resp.read()
                data = gzip.decompress(blob) if blob[:2] == _GZIP_MAGIC else blob
                if hashlib.md5(data).hexdigest() != md5:
                    raise OSError(f"md5 mismatch for {url} (decompressed)")
            except (OSError, EOFError, zlib.error, ValueError) as exc:
                errors.append(f"{url}: {exc}")
                continue
            out[role] = _write_atomic(target / f"{name}.gz", blob)
            break
        else:
            raise OSError(f"could not fetch {name}.gz: " + " | ".join(errors))
    return out


def _write_atomic(dest: Path, blob: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


# ----------------------------------------------------------------------------- loading


@functools.lru_cache(maxsize=4)
def _load_cached(spec: DatasetSpec, key: tuple) -> tuple[torch.Tensor, ...]:
    paths = {role: Path(p) for role, p, _, _ in key}
    md5s = {role: md5 for role, _, md5 in spec.files}
    arrays = {role: read_idx(paths[role], md5s[role]) for role in ROLES}
    out = []
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"{spec.name} {split}: images {x.shape} ({paths[split + '_images']}) and "
                f"labels {y.shape} ({paths[split + '_labels']}) do not match"
            )
        out += [torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))]
    return tuple(out)


def load_idx_dataset(spec: DatasetSpec, path=None, download: bool = True, func: str = "load"):
    """Locate, verify and load ``spec``: ``(train_x, train_y, test_x, test_y)`` tensors.

    Results are cached in-process by resolved file path (and mtime/size); the returned tensors
    are shared between calls, so do not modify them in place.
    """
    if not isinstance(download, bool):
        raise TypeError(f"download must be a bool, got {type(download).__name__}")
    files = locate(spec, path=path, download=download, func=func)
    key = []
    for role in ROLES:
        resolved = files[role].resolve()
        st = resolved.stat()
        key.append((role, str(resolved), st.st_mtime_ns, st.st_size))
    return _load_cached(spec, tuple(key))


def load_mnist(path=None, download: bool = True):
    """MNIST as ``(train_x uint8 [60000,28,28], train_y int64, test_x uint8 [10000,28,28], test_y)``."""
    return load_idx_dataset(MNIST, path=path, download=download, func="load_mnist")


def load_fashion_mnist(path=None, download: bool = True):
    """Fashion-MNIST, same layout as :func:`load_mnist`."""
    return load_idx_dataset(FASHION_MNIST, path=path, download=download, func="load_fashion_mnist")
