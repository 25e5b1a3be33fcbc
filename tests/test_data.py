"""Tests of hierbench.data: the real datasets, replicas of the official formats, the decoded-tensor
cache, bad roots, the batch loader and its augmentation, and normalization."""

from __future__ import annotations

import os
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hierbench import data as D
from hierbench.data import catalog, jpeg
from hierbench.errors import ConfigError, DatasetError

# torchvision 0.29 deprecates its image IO (encode_jpeg here; decode_jpeg inside hierbench.data).
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")


def _jpeg(img: torch.Tensor, quality: int = 95) -> bytes:
    from torchvision.io import encode_jpeg

    return encode_jpeg(img.contiguous(), quality=quality).numpy().tobytes()


def _pil_rgb(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


class _NoDecode:
    """Stands in for the JPEG decoder where a test expects a cache hit."""

    calls = 0

    def __call__(self, *args, **kwargs):
        type(self).calls += 1
        raise AssertionError("decoded, but the cache should have been used")


# --------------------------------------------------------------------------------------------
# Real data (skipped, with the reason, where it is absent)


@pytest.fixture(scope="module")
def cifar_train(cifar10_root, data_cache) -> D.ImageData:
    return D.load_dataset("cifar10", "train", cifar10_root, cache_dir=data_cache)


@pytest.fixture(scope="module")
def cifar_test(cifar10_root, data_cache) -> D.ImageData:
    return D.load_dataset("cifar10", "test", cifar10_root, cache_dir=data_cache)


@pytest.fixture(scope="module")
def tiny_train(tiny_imagenet_root, data_cache) -> D.ImageData:
    return D.load_dataset("tiny-imagenet", "train", tiny_imagenet_root, cache_dir=data_cache)


@pytest.fixture(scope="module")
def tiny_val(tiny_imagenet_root, data_cache) -> D.ImageData:
    return D.load_dataset("tiny-imagenet", "val", tiny_imagenet_root, cache_dir=data_cache)


def _check_tensors(data: D.ImageData, n: int, shape: tuple[int, int, int]) -> None:
    assert len(data) == n
    assert data.images.shape == (n, *shape)
    assert data.images.dtype == torch.uint8 and data.images.is_contiguous()
    assert data.labels.shape == (n,) and data.labels.dtype == torch.int64
    assert data.image_shape == shape


def test_cifar10_real(cifar_train, cifar_test):
    for data, split, n in ((cifar_train, "train", 50_000), (cifar_test, "test", 10_000)):
        _check_tensors(data, n, (3, 32, 32))
        assert (data.name, data.split) == ("cifar10", split)
        assert data.classes == D.CIFAR10_CLASSES and data.num_classes == 10
        assert torch.bincount(data.labels).tolist() == [n // 10] * 10
        assert (data.mean, data.std) == (D.CIFAR10_MEAN, D.CIFAR10_STD)
    # Channel statistics match the published ones: the channels are RGB, in that order.
    x = cifar_train.images[::10].float() / 255
    assert torch.allclose(x.mean((0, 2, 3)), torch.tensor(D.CIFAR10_MEAN), atol=0.005)
    assert torch.allclose(x.std((0, 2, 3)), torch.tensor(D.CIFAR10_STD), atol=0.005)


def test_cifar10_real_pixels_match_pil(cifar10_root, cifar_test):
    for label, cls in enumerate(D.CIFAR10_CLASSES):
        first = int((cifar_test.labels == label).nonzero()[0])
        files = sorted((cifar10_root / "test" / cls).glob("*.jpg"))
        assert torch.equal(cifar_test.images[first], _pil_rgb(files[0]))


def test_tiny_imagenet_real(tiny_imagenet_root, tiny_train, tiny_val):
    wnids = tuple((tiny_imagenet_root / "wnids.txt").read_text().split())
    assert len(wnids) == 200
    for data, split, n, per_class in (
        (tiny_train, "train", 20_000, 100),
        (tiny_val, "val", 10_000, 50),
    ):
        _check_tensors(data, n, (3, 64, 64))
        assert (data.name, data.split) == ("tiny-imagenet", split)
        assert data.classes == wnids  # label order is wnids.txt order, not sorted order
        assert torch.bincount(data.labels, minlength=200).tolist() == [per_class] * 200
    # val labels come from val_annotations.txt; images are in val_<k> order.
    ann = {}
    for line in (tiny_imagenet_root / "val" / "val_annotations.txt").read_text().splitlines():
        file, wnid = line.split("\t")[:2]
        ann[file] = wnids.index(wnid)
    assert tiny_val.labels.tolist() == [ann[f"val_{k}.JPEG"] for k in range(10_000)]
    # Train images are in <wnid>_<k> order with k numeric; some real ones are grayscale JPEGs.
    for wnid, k in ((wnids[0], 70), (wnids[0], 2), (wnids[5], 10)):
        path = tiny_imagenet_root / "train" / wnid / "images" / f"{wnid}_{k}.JPEG"
        assert torch.equal(tiny_train.images[wnids.index(wnid) * 100 + k], _pil_rgb(path))
    assert tiny_val.images[0].equal(_pil_rgb(tiny_imagenet_root / "val" / "images" / "val_0.JPEG"))


def test_tiny_imagenet_real_grayscale_becomes_rgb(tiny_imagenet_root, tiny_train):
    wnid = tiny_train.classes[0]
    path = tiny_imagenet_root / "train" / wnid / "images" / f"{wnid}_70.JPEG"
    with Image.open(path) as im:
        if im.mode != "L":
            pytest.skip(f"{path} is not the grayscale JPEG this test expects")
    img = tiny_train.images[70]
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])


def test_cached_load_equals_fresh_decode(cifar10_root, data_cache, cifar_test, monkeypatch):
    fresh = D.load_dataset("cifar10", "test", cifar10_root, cache=False)
    monkeypatch.setattr(jpeg, "_decode_jpegs", _NoDecode())
    cached = D.load_dataset("cifar10", "test", cifar10_root, cache_dir=data_cache)
    assert torch.equal(cached.images, fresh.images) and torch.equal(cached.labels, fresh.labels)
    assert torch.equal(cifar_test.images, fresh.images)
    # The cache holds plain tensors and strings: loadable with weights_only=True; no temp files.
    files = sorted(data_cache.glob("cifar10-test-all-*.pt"))
    assert len(files) == 1
    payload = torch.load(files[0], weights_only=True)
    assert payload["classes"] == list(D.CIFAR10_CLASSES)
    assert not list(data_cache.glob(".*.tmp"))


def _copy_cifar_subset(src: Path, dst: Path, per_class: int) -> None:
    for cls in D.CIFAR10_CLASSES:
        (dst / "test" / cls).mkdir(parents=True)
        for f in sorted((src / "test" / cls).glob("*.jpg"))[:per_class]:
            shutil.copy2(f, dst / "test" / cls / f.name)


def test_cache_invalidated_by_a_changed_source(cifar10_root, tmp_path, monkeypatch):
    root, cache = tmp_path / "cifar", tmp_path / "cache"
    _copy_cifar_subset(cifar10_root, root, per_class=3)
    first = D.load_dataset("cifar10", "test", root, cache_dir=cache)
    assert len(first) == 30 and len(list(cache.glob("*.pt"))) == 1

    real_decode = jpeg._decode_jpegs
    monkeypatch.setattr(jpeg, "_decode_jpegs", _NoDecode())
    assert torch.equal(
        D.load_dataset("cifar10", "test", root, cache_dir=cache).images, first.images
    )

    # Overwrite bird/0001.jpg with another image; give it a new mtime for coarse file systems.
    target = root / "test" / "bird" / "0001.jpg"
    st = target.stat()
    target.write_bytes((root / "test" / "ship" / "0000.jpg").read_bytes())
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="cache should have been used"):
        D.load_dataset("cifar10", "test", root, cache_dir=cache)
    monkeypatch.setattr(jpeg, "_decode_jpegs", real_decode)
    second = D.load_dataset("cifar10", "test", root, cache_dir=cache)
    index = 2 * 3 + 1  # class 2 (bird), second file
    assert torch.equal(second.images[index], first.images[8 * 3])  # ship/0000.jpg
    assert not torch.equal(second.images[index], first.images[index])
    assert torch.equal(second.images, D.load_dataset("cifar10", "test", root, cache=False).images)
    assert len(list(cache.glob("*.pt"))) == 2

    # A removed file changes the key too, and limit_per_class has entries of its own.
    (root / "test" / "cat" / "0002.jpg").unlink()
    assert len(D.load_dataset("cifar10", "test", root, cache_dir=cache)) == 29
    assert len(D.load_dataset("cifar10", "test", root, cache_dir=cache, limit_per_class=1)) == 10
    assert len(list(cache.glob("*.pt"))) == 4


# --------------------------------------------------------------------------------------------
# A replica of torchvision's official CIFAR-10 format


def _write_cifar_pickles(root: Path, protocol: int, n_train: int = 6, n_test: int = 4) -> dict:
    """cifar-10-batches-py/ in the official dict format (bytes keys, uint8 (N, 3072) data)."""
    batches = root / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    rng = np.random.default_rng(protocol)
    made = {"train": ([], []), "test": ([], [])}
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    for i, name in enumerate(names):
        split = "test" if name == "test_batch" else "train"
        n = n_test if split == "test" else n_train
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(n)]
        entry = {
            b"batch_label": f"{name} of 5".encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img_{i}_{j}.png".encode() for j in range(n)],
        }
        (batches / name).write_bytes(pickle.dumps(entry, protocol=protocol))
        made[split][0].append(data)
        made[split][1].extend(labels)
    meta = {
        b"num_cases_per_batch": n_train,
        b"label_names": [c.encode() for c in D.CIFAR10_CLASSES],
        b"num_vis": 3072,
    }
    (batches / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return {k: (np.concatenate(v[0]).reshape(-1, 3, 32, 32), v[1]) for k, v in made.items()}


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_official_format_replica(tmp_path, protocol, monkeypatch):
    made = _write_cifar_pickles(tmp_path, protocol)
    monkeypatch.setattr(jpeg, "_decode_jpegs", _NoDecode())  # nothing to decode, nothing cached
    for split, n in (("train", 30), ("test", 4)):
        data = D.load_dataset("cifar10", split, tmp_path, cache_dir=tmp_path / "cache")
        _check_tensors(data, n, (3, 32, 32))
        assert data.classes == D.CIFAR10_CLASSES
        assert torch.equal(data.images, torch.from_numpy(made[split][0]))
        assert data.labels.tolist() == made[split][1]
    # The root may also be the batches folder itself; limit_per_class keeps the first ones.
    inner = D.load_dataset("cifar10", "train", tmp_path / "cifar-10-batches-py", limit_per_class=1)
    assert inner.labels.tolist() == list(range(10))
    assert torch.equal(inner.images[0], torch.from_numpy(made["train"][0][0]))
    assert not (tmp_path / "cache").exists()


def test_cifar10_pickle_branch_refuses_code(tmp_path):
    _write_cifar_pickles(tmp_path, pickle.HIGHEST_PROTOCOL)
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("still here")

    class Hostile:
        def __reduce__(self):
            return (os.remove, (str(sentinel),))

    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(Hostile()))
    with pytest.raises(DatasetError, match=r"refusing to load posix\.remove"):
        D.load_dataset("cifar10", "train", tmp_path)
    assert sentinel.exists()
    D.load_dataset("cifar10", "test", tmp_path)  # the other split does not read that file


def test_cifar10_pickle_branch_bad_files(tmp_path):
    _write_cifar_pickles(tmp_path, 2)
    batches = tmp_path / "cifar-10-batches-py"
    (batches / "data_batch_5").unlink()
    with pytest.raises(DatasetError, match="data_batch_5"):
        D.load_dataset("cifar10", "train", tmp_path)
    (batches / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8)}))
    with pytest.raises(DatasetError, match="uint8"):
        D.load_dataset("cifar10", "test", tmp_path)


# --------------------------------------------------------------------------------------------
# A replica of the official Tiny ImageNet layout

_WNIDS = ("n09999999", "n01111111", "n05555555")  # deliberately not sorted


def _color(label: int, k: int, size: int = 16) -> torch.Tensor:
    """A flat image whose colour encodes (label, k); survives JPEG to within a few levels."""
    rgb = torch.tensor([40 + 80 * label, 20 * k, 200 - 15 * k], dtype=torch.uint8)
    return rgb.view(3, 1, 1).expand(3, size, size).contiguous()


@pytest.fixture
def tiny_replica(tmp_path) -> Path:
    root = tmp_path / "tiny-imagenet-200"
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(_WNIDS) + "\n")
    for label, wnid in enumerate(_WNIDS):
        images = root / "train" / wnid / "images"
        images.mkdir(parents=True)
        boxes = []
        for k in range(12):  # k = 10, 11 sort after 9 only in natural order
            (images / f"{wnid}_{k}.JPEG").write_bytes(_jpeg(_color(label, k)))
            boxes.append(f"{wnid}_{k}.JPEG\t0\t0\t15\t15")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("\n".join(boxes) + "\n")
    gray = torch.full((1, 16, 16), 77, dtype=torch.uint8)
    (root / "train" / _WNIDS[1] / "images" / f"{_WNIDS[1]}_3.JPEG").write_bytes(_jpeg(gray))
    lines = []
    for k in range(7):
        label = (k * 2) % 3
        (root / "val" / "images" / f"val_{k}.JPEG").write_bytes(_jpeg(_color(label, k)))
        lines.append(f"val_{k}.JPEG\t{_WNIDS[label]}\t1\t2\t13\t14")
    (root / "val" / "val_annotations.txt").write_text("\n".join(reversed(lines)) + "\n")
    return root


def _close(a: torch.Tensor, b: torch.Tensor, tol: int = 6) -> bool:
    return int((a.int() - b.int()).abs().max()) <= tol


def test_tiny_imagenet_replica(tiny_replica, tmp_path, capsys):
    cache = tmp_path / "cache"
    train = D.load_dataset("tiny-imagenet", "train", tiny_replica, cache_dir=cache, progress=True)
    assert "decoding tiny-imagenet/train: 36/36" in capsys.readouterr().err
    _check_tensors(train, 36, (3, 16, 16))
    assert train.classes == _WNIDS and train.num_classes == 3
    assert train.labels.tolist() == [label for label in range(3) for _ in range(12)]
    for label in range(3):
        for k in range(12):
            img = train.images[label * 12 + k]
            if (label, k) == (1, 3):  # the grayscale JPEG: three equal channels
                assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
                assert _close(img, torch.full_like(img, 77))
            else:
                assert _close(img, _color(label, k)), (label, k)
    val = D.load_dataset("tiny-imagenet", "val", tiny_replica, cache_dir=cache)
    _check_tensors(val, 7, (3, 16, 16))
    assert val.labels.tolist() == [(k * 2) % 3 for k in range(7)]
    assert all(_close(val.images[k], _color((k * 2) % 3, k)) for k in range(7))
    few = D.load_dataset("tiny-imagenet", "val", tiny_replica, cache_dir=cache, limit_per_class=1)
    assert few.labels.tolist() == [0, 2, 1]  # val_0, val_1, val_2
    # Labels depend on wnids.txt and val_annotations.txt: changing them invalidates the cache.
    (tiny_replica / "wnids.txt").write_text("\n".join(reversed(_WNIDS)) + "\n")
    again = D.load_dataset("tiny-imagenet", "val", tiny_replica, cache_dir=cache)
    assert again.classes == tuple(reversed(_WNIDS))
    assert again.labels.tolist() == [2 - (k * 2) % 3 for k in range(7)]


# --------------------------------------------------------------------------------------------
# Bad roots and bad names


@pytest.mark.parametrize(
    ("name", "empty", "layout", "env"),
    [
        ("cifar10", "has neither", "cifar-10-batches-py", "HIERBENCH_CIFAR10_ROOT"),
        ("tiny-imagenet", "has no wnids", "wnids.txt", "HIERBENCH_TINYIMAGENET_ROOT"),
    ],
)
def test_missing_and_empty_roots(tmp_path, name, empty, layout, env):
    for root, problem in ((tmp_path / "nowhere", "does not exist"), (tmp_path, empty)):
        with pytest.raises(DatasetError, match=problem) as info:
            D.load_dataset(name, "train", root, cache_dir=tmp_path / "cache")
        message = str(info.value)
        assert layout in message and env in message
    if name == "cifar10":  # both accepted layouts are shown
        assert "train/<class>/*.jpg" in message
    else:
        assert "val/val_annotations.txt" in message


def test_wrong_layouts(tmp_path, tiny_replica):
    cache = tmp_path / "cache"
    # A Tiny ImageNet folder is not a CIFAR-10 image folder (its class folders are wnids).
    with pytest.raises(DatasetError, match="ten CIFAR-10 classes") as info:
        D.load_dataset("cifar10", "train", tiny_replica, cache_dir=cache)
    assert "cifar-10-batches-py" in str(info.value)
    with pytest.raises(DatasetError, match="no test/ folder"):
        D.load_dataset("cifar10", "test", tiny_replica, cache_dir=cache)
    # An image folder with a class that has no JPEGs.
    for cls in D.CIFAR10_CLASSES:
        (tmp_path / "cf" / "train" / cls).mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"airplane.*holds no \.jpg"):
        D.load_dataset("cifar10", "train", tmp_path / "cf", cache_dir=cache)
    # A CIFAR-like folder is not Tiny ImageNet.
    with pytest.raises(DatasetError, match=r"no wnids\.txt"):
        D.load_dataset("tiny-imagenet", "train", tmp_path / "cf", cache_dir=cache)
    # Tiny ImageNet with a class folder missing, or a bad annotation line.
    shutil.rmtree(tiny_replica / "train" / _WNIDS[2])
    with pytest.raises(DatasetError, match=f"{_WNIDS[2]}.*missing"):
        D.load_dataset("tiny-imagenet", "train", tiny_replica, cache_dir=cache)
    with (tiny_replica / "val" / "val_annotations.txt").open("a") as f:
        f.write("val_99.JPEG\tn00000000\t0\t0\t1\t1\n")
    with pytest.raises(DatasetError, match="line 8"):
        D.load_dataset("tiny-imagenet", "val", tiny_replica, cache_dir=cache)


def test_unreadable_jpeg_is_named(tiny_replica, tmp_path):
    bad = tiny_replica / "train" / _WNIDS[0] / "images" / f"{_WNIDS[0]}_5.JPEG"
    bad.write_bytes(b"\xff\xd8 this is not a JPEG")
    with pytest.raises(DatasetError, match=f"{_WNIDS[0]}_5.JPEG"):
        D.load_dataset("tiny-imagenet", "train", tiny_replica, cache=False)
    bad.write_bytes(b"")
    with pytest.raises(DatasetError, match="empty"):
        D.load_dataset("tiny-imagenet", "train", tiny_replica, cache=False)


def test_pil_fallback_decodes_the_same(tiny_replica, monkeypatch):
    native = D.load_dataset("tiny-imagenet", "train", tiny_replica, cache=False)
    monkeypatch.setitem(sys.modules, "torchvision.io", None)  # as if torchvision had no image IO
    fallback = D.load_dataset("tiny-imagenet", "train", tiny_replica, cache=False)
    assert torch.equal(native.images, fallback.images)


def test_unreadable_cache_file_is_replaced(tiny_replica, tmp_path):
    cache = tmp_path / "cache"
    first = D.load_dataset("tiny-imagenet", "val", tiny_replica, cache_dir=cache)
    (entry,) = cache.glob("*.pt")
    entry.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable cache file"):
        again = D.load_dataset("tiny-imagenet", "val", tiny_replica, cache_dir=cache)
    assert torch.equal(again.images, first.images)
    assert torch.load(entry, weights_only=True)["images"].equal(first.images)


def test_names_and_options():
    with pytest.raises(ConfigError, match="cifar10, tiny-imagenet, synthetic"):
        D.load_dataset("imagenet")
    with pytest.raises(ConfigError, match="train, test"):
        D.load_dataset("cifar10", "val")
    with pytest.raises(ConfigError, match="train, val"):
        D.load_dataset("tiny-imagenet", "test")
    with pytest.raises(ConfigError):
        D.default_root("mnist")
    with pytest.raises(ConfigError, match="download"):
        D.load_dataset("tiny-imagenet", download=True)
    with pytest.raises(ValueError, match="limit_per_class"):
        D.load_dataset("synthetic", limit_per_class=0)
    with pytest.raises(ValueError, match="image_size"):
        D.load_dataset("synthetic", image_size=0)


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("HIERBENCH_CIFAR10_ROOT", str(tmp_path / "mine"))
    assert D.default_root("cifar10") == tmp_path / "mine"
    with pytest.raises(DatasetError, match=r"mine.*does not exist"):
        D.load_dataset("cifar10", cache_dir=tmp_path)
    monkeypatch.delenv("HIERBENCH_CIFAR10_ROOT")
    monkeypatch.delenv("HIERBENCH_TINYIMAGENET_ROOT", raising=False)
    shared = Path(catalog.__file__).resolve().parents[3] / "shared" / "datasets"
    expected = shared / "tiny-imagenet-200-subset"
    assert D.default_root("tiny-imagenet") == (expected if expected.is_dir() else None)
    monkeypatch.setattr(catalog, "_repo_root", lambda: tmp_path / "repo")
    assert D.default_root("cifar10") is None and D.default_root("synthetic") is None
    with pytest.raises(DatasetError, match=r"(?s)no dataset root given.*HIERBENCH_CIFAR10_ROOT"):
        D.load_dataset("cifar10", cache_dir=tmp_path)
    monkeypatch.setenv("HIERBENCH_DATA_CACHE", str(tmp_path / "c"))
    assert D.default_cache_dir() == tmp_path / "c"


# --------------------------------------------------------------------------------------------
# Synthetic data and ImageData


def test_synthetic():
    a = D.load_dataset("synthetic", num_classes=7, image_size=12, length=50, seed=3)
    _check_tensors(a, 50, (3, 12, 12))
    assert a.num_classes == 7 and int(a.labels.max()) < 7
    b = D.load_dataset("synthetic", num_classes=7, image_size=12, length=50, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    c = D.load_dataset("synthetic", "val", num_classes=7, image_size=12, length=50, seed=3)
    assert not torch.equal(a.images, c.images)
    d = D.load_dataset("synthetic", num_classes=7, image_size=12, length=50, seed=4)
    assert not torch.equal(a.images, d.images)
    few = D.load_dataset("synthetic", num_classes=7, length=200, limit_per_class=2)
    assert torch.bincount(few.labels).tolist() == [2] * 7


def test_image_data_subset_and_checks():
    data = D.load_dataset("synthetic", num_classes=4, image_size=8, length=40)
    picked = data.subset([3, 1, 3])
    assert torch.equal(picked.images, data.images[[3, 1, 3]])
    assert torch.equal(picked.labels, data.labels[[3, 1, 3]])
    assert picked.classes == data.classes and picked.images.is_contiguous()
    mask = data.labels == 2
    assert torch.equal(data.subset(mask).labels, data.labels[mask])
    ten = data.subset(10)
    assert len(ten) == 10 and torch.equal(ten.images, data.subset(10).images)
    assert len(data.subset(0)) == 0
    with pytest.raises(ValueError):
        data.subset(41)
    with pytest.raises(TypeError):
        D.ImageData(
            "x", "train", data.images.float(), data.labels, data.classes, (0,) * 3, (1,) * 3
        )
    with pytest.raises(ValueError, match="labels must lie"):
        D.ImageData("x", "train", data.images, data.labels + 4, data.classes, (0,) * 3, (1,) * 3)
    with pytest.raises(ValueError, match="contiguous"):
        D.ImageData(
            "x", "train", data.images.transpose(2, 3), data.labels, data.classes, (0,) * 3, (1,) * 3
        )


# --------------------------------------------------------------------------------------------
# BatchLoader, augmentation, normalize


def _indexed(n: int, size: int = 8) -> D.ImageData:
    """Random images whose label is their index, so batches show which samples they hold."""
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    classes = tuple(str(i) for i in range(n))
    return D.ImageData(
        "synthetic", "train", images, torch.arange(n), classes, (0.5,) * 3, (0.25,) * 3
    )


def test_batch_loader_batches():
    data = _indexed(1000)
    loader = D.BatchLoader(data, 128, shuffle=True)
    assert len(loader) == 8
    batches = list(loader)
    assert [len(y) for _, y in batches] == [128] * 7 + [104]
    for x, y in batches:
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        assert x.shape == (len(y), 3, 8, 8) and x.is_contiguous()
        assert torch.equal(x, data.images[y])  # images travel with their labels
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(1000))  # every sample exactly once
    assert not torch.equal(seen, torch.arange(1000))

    dropping = D.BatchLoader(data, 128, drop_last=True)
    assert len(dropping) == 7 and [len(y) for _, y in dropping] == [128] * 7
    assert len(D.BatchLoader(data, 1000, drop_last=True)) == 1
    assert len(D.BatchLoader(_indexed(5), 8, drop_last=True)) == 0
    plain = torch.cat([y for _, y in D.BatchLoader(data, 300, shuffle=False)])
    assert torch.equal(plain, torch.arange(1000))
    with pytest.raises(ValueError):
        D.BatchLoader(data, 0)


def test_batch_loader_epochs_are_deterministic():
    data = _indexed(300)

    def order(loader):
        return torch.cat([y for _, y in loader])

    a, b = D.BatchLoader(data, 64, seed=5), D.BatchLoader(data, 64, seed=5)
    a0, a1 = order(a), order(a)  # each pass is the next epoch
    assert a.epoch == 2 and not torch.equal(a0, a1)
    assert torch.equal(order(b), a0) and torch.equal(order(b), a1)
    b.set_epoch(0)
    assert torch.equal(order(b), a0)
    b.set_epoch(1)
    assert torch.equal(order(b), a1)
    other = D.BatchLoader(data, 64, seed=6)
    assert not torch.equal(order(other), a0)


def test_batch_loader_augment():
    data = _indexed(256, size=12)
    plain = D.BatchLoader(data, 64, seed=2)
    aug = D.BatchLoader(data, 64, seed=2, augment=True, pad=3)
    xs, flips, offsets = [], 0, set()
    for (x0, y0), (x1, y1) in zip(plain, aug):
        assert torch.equal(y0, y1)  # augmentation leaves the order alone
        assert x1.dtype == torch.uint8 and x1.shape == x0.shape
        xs.append(x1)
        for orig, out in zip(x0, x1):
            (params,) = [p for p, c in _candidates(orig, 3).items() if torch.equal(c, out)]
            offsets.add(params[:2])
            flips += params[2]
    assert 0.35 < flips / 256 < 0.65
    assert len(offsets) > 40  # of the 49 crop positions
    aug.set_epoch(0)
    assert all(torch.equal(x, x1) for x, (x1, _) in zip(xs, aug))


def _reference_crop_flip(img: torch.Tensor, top: int, left: int, flip: bool, pad: int):
    """One image at a time, the textbook way."""
    c, h, w = img.shape
    padded = torch.zeros((c, h + 2 * pad, w + 2 * pad), dtype=img.dtype)
    padded[:, pad : pad + h, pad : pad + w] = img
    out = padded[:, top : top + h, left : left + w]
    return out.flip(2) if flip else out


def _candidates(img: torch.Tensor, pad: int) -> dict:
    return {
        (t, l, f): _reference_crop_flip(img, t, l, f, pad)
        for t in range(2 * pad + 1)
        for l in range(2 * pad + 1)  # noqa: E741
        for f in (False, True)
    }


@pytest.mark.parametrize(("pad", "shape"), [(4, (32, 32)), (2, (5, 9)), (0, (6, 6))])
def test_crop_flip_matches_reference(pad, shape):
    g = torch.Generator().manual_seed(7)
    x = torch.randint(0, 256, (33, 3, *shape), generator=g, dtype=torch.uint8)
    top = torch.randint(0, 2 * pad + 1, (33,), generator=g)
    left = torch.randint(0, 2 * pad + 1, (33,), generator=g)
    flip = torch.randint(0, 2, (33,), generator=g).bool()
    out = D.crop_flip(x, top, left, flip, pad)
    assert out.dtype == torch.uint8 and out.shape == x.shape and out.is_contiguous()
    for i in range(33):
        ref = _reference_crop_flip(x[i], int(top[i]), int(left[i]), bool(flip[i]), pad)
        assert torch.equal(out[i], ref), i
    same = torch.full((33,), pad)
    assert torch.equal(D.crop_flip(x, same, same, torch.zeros(33, dtype=torch.bool), pad), x)
    with pytest.raises(ValueError, match="must lie in"):
        D.crop_flip(x, same, same + pad + 1, flip, pad)
    with pytest.raises(ValueError, match="pad must be"):
        D.crop_flip(x, same, same, flip, -1)
    g.manual_seed(3)
    a = D.random_crop_flip(x, pad, g)
    g.manual_seed(3)
    assert torch.equal(a, D.random_crop_flip(x, pad, g))


def test_normalize():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 5, 6), generator=g, dtype=torch.uint8)
    mean, std = D.CIFAR10_MEAN, D.CIFAR10_STD
    out = D.normalize(x, mean, std)
    assert out.dtype == torch.float32 and out.shape == x.shape
    ref = (x.double() / 255 - torch.tensor(mean, dtype=torch.float64).view(3, 1, 1)) / torch.tensor(
        std, dtype=torch.float64
    ).view(3, 1, 1)
    assert torch.allclose(out.double(), ref, atol=1e-5)
    assert torch.allclose(D.normalize(x[0], mean, std), out[0])
    edges = D.normalize(
        torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 2).expand(3, 1, 2), mean, std
    )
    assert torch.allclose(edges[:, 0, 0], -torch.tensor(mean) / torch.tensor(std))
    assert torch.allclose(edges[:, 0, 1], (1 - torch.tensor(mean)) / torch.tensor(std))
    assert x.dtype == torch.uint8  # the input is not modified
    with pytest.raises(TypeError):
        D.normalize(x.float(), mean, std)
    with pytest.raises(ValueError):
        D.normalize(x, (0.5, 0.5), (0.2, 0.2))
