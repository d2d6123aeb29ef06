"""Tests for cce_core.data: folders, zips, bad files, the embedded photos, batches (CPU, a few seconds)."""

import io
import os
import socket
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from cce_core.data import (
    EMBEDDED,
    PHOTOS128_TRAIN,
    ImageSet,
    describe_source,
    describe_sources,
    embedded_photos,
    load_images,
    sample_batch,
    source_names,
    to_float,
    to_uint8,
)

DATA = Path(os.environ.get("CCE_DATA") or Path(__file__).resolve().parents[1].parent / "shared/data/photos128")


def _photo(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    """A smooth random picture (JPEG-friendly) of size w x h."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC).convert(mode)


def _jpeg_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _good_folder(root: Path) -> Path:
    """Four usable files in an ImageFolder layout (one non-square, one uppercase extension) and a stray .txt."""
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    _photo(128, 128, 0).save(root / "a" / "0.jpg", quality=90)
    _photo(128, 128, 1).save(root / "a" / "1.JPG", "JPEG", quality=90)
    _photo(200, 150, 2).save(root / "b" / "2.jpeg", quality=90)
    _photo(300, 400, 3).save(root / "b" / "3.png")
    (root / "b" / "notes.txt").write_text("not an image")
    return root


def _zip_folder(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())
    return path


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """Good, odd-mode, non-square, too-small, corrupt and truncated files together."""
    d = tmp_path / "mixed"
    d.mkdir()
    for i in range(3):
        _photo(128, 128, i).save(d / f"good{i}.jpg", quality=90)
    _photo(128, 128, 10, "L").save(d / "gray.png")
    _photo(128, 128, 11, "RGBA").save(d / "rgba.png")
    _photo(128, 128, 12, "P").save(d / "palette.png")
    _photo(200, 150, 13).save(d / "wide.jpg", quality=90)
    _photo(64, 64, 14).save(d / "small.jpg", quality=90)
    (d / "corrupt.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    whole = _jpeg_bytes(_photo(128, 128, 15))
    (d / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    return d


def _load(source, **kw) -> ImageSet:
    return load_images(source, progress=False, **kw)


def test_mixed_folder_skips_bad_files(mixed: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = _load(mixed, max_bad_fraction=0.5)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert s.images.shape == (7, 3, 128, 128) and s.images.dtype == torch.uint8 and s.images.is_contiguous()
    assert len(s) == 7
    assert [Path(n).name for n in s.names] == ["good0.jpg", "good1.jpg", "good2.jpg", "gray.png", "palette.png",
                                               "rgba.png", "wide.jpg"]
    assert sorted(Path(n).name for n in s.skipped["corrupt"]) == ["corrupt.jpg", "truncated.jpg"]
    assert [Path(n).name for n in s.skipped["too_small"]] == ["small.jpg"]
    assert len(caught) == 1 and "corrupt.jpg" in str(caught[0].message) and "3 of 10" in str(caught[0].message)

    assert s.names[0] == "mixed/good0.jpg"  # folder name + relative path, no machine path
    gray = s.images[s.names.index("mixed/gray.png")]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    rgba = s.images[s.names.index("mixed/rgba.png")]
    expected = np.array(Image.open(mixed / "rgba.png").convert("RGB"))
    assert torch.equal(rgba, torch.from_numpy(expected).permute(2, 0, 1))
    # non-square: centre square 150x150 at x = 25, resized (bicubic: shrink under 2x)
    wide = Image.open(mixed / "wide.jpg").convert("RGB").crop((25, 0, 175, 150))
    expected = np.array(wide.resize((128, 128), Image.Resampling.BICUBIC))
    assert torch.equal(s.images[-1], torch.from_numpy(expected).permute(2, 0, 1))


def test_mixed_folder_too_many_bad_files_raises(mixed: Path):
    with pytest.raises(ValueError, match=r"3 of 10 .*30\.0%.*--max-bad-fraction"):
        _load(mixed)


def test_all_skipped_raises(tmp_path: Path):
    (tmp_path / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="all 1 images were skipped"):
        _load(tmp_path, max_bad_fraction=1.0)


def test_zip_matches_folder_and_zips_concatenate(tmp_path: Path):
    folder = _good_folder(tmp_path / "photos")
    from_dir = _load(folder)
    assert len(from_dir) == 4 and [Path(n).name for n in from_dir.names] == ["0.jpg", "1.JPG", "2.jpeg", "3.png"]
    z1 = _zip_folder(folder, tmp_path / "one.zip")
    from_zip = _load(z1)
    assert torch.equal(from_zip.images, from_dir.images)
    assert from_zip.names == ["one.zip:a/0.jpg", "one.zip:a/1.JPG", "one.zip:b/2.jpeg", "one.zip:b/3.png"]
    assert from_zip.description == "one.zip (4 images)"

    z2 = _zip_folder(folder, tmp_path / "two.zip")
    both = _load([z1, str(z2)])
    assert len(both) == 8 and both.names[4] == "two.zip:a/0.jpg"
    assert torch.equal(both.images, torch.cat([from_zip.images, from_zip.images]))
    assert torch.equal(_load([z1, z2], limit=5).images, both.images[:5])


def test_single_file_and_limit(tmp_path: Path):
    folder = _good_folder(tmp_path / "photos")
    one = _load(folder / "b" / "3.png")
    assert one.images.shape == (1, 3, 128, 128)
    assert torch.equal(_load(folder, limit=2).images, _load(folder).images[:2])


def test_errors(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no images \(\.jpg/\.jpeg/\.png\) found in"):
        _load(tmp_path / "empty")
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as zf:
        zf.writestr("readme.txt", "nothing here")
    with pytest.raises(ValueError, match="no images"):
        _load(tmp_path / "empty.zip")
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        _load(tmp_path / "does-not-exist")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="is not an image"):
        _load(tmp_path / "notes.txt")
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip" * 10)
    with pytest.raises(ValueError, match="broken.zip' is a corrupt zip"):
        _load(tmp_path / "broken.zip")
    with pytest.raises(ValueError, match="number of images .* at least 1"):
        _load(EMBEDDED, limit=0)


def test_describe_source_names_data_without_paths(tmp_path: Path):
    folder = _good_folder(tmp_path / "photos")
    z = _zip_folder(folder, tmp_path / "one.zip")
    import hashlib
    d = describe_source(z)
    assert d == {"name": "one.zip", "kind": "zip", "images": 4, "bytes": z.stat().st_size,
                 "sha256": hashlib.sha256(z.read_bytes()).hexdigest()}
    f = describe_source(folder)
    assert f["name"] == "photos/" and f["kind"] == "folder" and f["images"] == 4 and len(f["sha256"]) == 64
    (folder / "a" / "0.jpg").write_bytes(_jpeg_bytes(_photo(128, 128, 99)))  # a changed file changes the hash
    assert describe_source(folder)["sha256"] != f["sha256"]
    assert describe_sources([EMBEDDED], embedded_count=7)[0]["images"] == 7
    assert source_names([z, EMBEDDED, folder]) == ["one.zip", "embedded", "photos"]
    assert str(tmp_path) not in repr([d, f])
    # a zip whose directory is intact but one member's bytes are damaged: caught by the CRC check
    raw = bytearray(z.read_bytes())
    at = raw.find(b"JFIF") + 200
    raw[at:at + 50] = bytes(50)
    (tmp_path / "damaged.zip").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="damaged.zip' is a corrupt zip .*CRC"):
        describe_source(tmp_path / "damaged.zip")
    with pytest.raises(FileNotFoundError, match="nope.zip"):
        describe_source(tmp_path / "nope.zip")


def test_describe_source_matches_shared_sha256sums():
    sums = DATA / "SHA256SUMS"
    if not sums.is_file():
        pytest.skip(f"{sums} not present")
    expected = dict(line.split()[::-1] for line in sums.read_text().splitlines() if line.strip())
    d = describe_source(DATA / "kodak24.zip")
    assert d["sha256"] == expected["kodak24.zip"] and d["images"] == 24


def test_photos128_train_counts():
    """The image counts the book states for each photos128 training file (PHOTOS128_TRAIN) are the files' own."""
    if not (DATA / "train-00.zip").is_file():
        pytest.skip(f"{DATA} not present")
    counts = {name: sum(describe_source(f, verify=False)["images"] for f in sorted(DATA.glob(name)))
              for name in PHOTOS128_TRAIN}
    assert counts == PHOTOS128_TRAIN


def test_workers_give_same_result(mixed: Path, tmp_path: Path):
    z = _zip_folder(mixed, tmp_path / "mixed.zip")
    for source in (mixed, z):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = _load(source, max_bad_fraction=0.5, workers=0)
            b = _load(source, max_bad_fraction=0.5, workers=2)
        assert torch.equal(a.images, b.images) and a.names == b.names and a.skipped == b.skipped


def test_embedded_photos(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("embedded_photos tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    a = embedded_photos(count=20, seed=1)
    assert a.images.shape == (20, 3, 128, 128) and a.images.dtype == torch.uint8
    assert a.names[0] == "embedded:astronaut#0" and a.names[3] == "embedded:astronaut#3"
    assert len(set(a.names)) == 20
    assert torch.equal(a.images, embedded_photos(count=20, seed=1).images)
    assert not torch.equal(a.images, embedded_photos(count=20, seed=2).images)
    assert a.images.float().std() > 20  # real pictures, not flat

    s = _load(EMBEDDED, embedded_count=20, seed=1)
    assert torch.equal(s.images, a.images) and s.names == a.names
    assert len(_load([EMBEDDED], embedded_count=7, limit=5)) == 5


def test_sample_batch():
    images = embedded_photos(count=12, seed=0).images
    x = sample_batch(images, 16, torch.Generator().manual_seed(3))
    assert x.shape == (16, 3, 128, 128) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(x, sample_batch(images, 16, torch.Generator().manual_seed(3), device="cpu"))

    g = torch.Generator().manual_seed(5)
    index = torch.randint(len(images), (16,), generator=torch.Generator().manual_seed(5))
    assert torch.equal(sample_batch(images, 16, g, flip=False), to_float(images[index]))

    # with flips every image is either the drawn one or its mirror, and some of each occur
    plain = sample_batch(images, 64, torch.Generator().manual_seed(7), flip=False)
    flipped = sample_batch(images, 64, torch.Generator().manual_seed(7))
    same = (flipped == plain).flatten(1).all(1)
    mirrored = (flipped == plain.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()


def test_float_uint8_round_trip():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(2, 3, 16, 16)
    f = to_float(x)
    assert f.dtype == torch.float32 and f.min() == -1 and f.max() == 1
    assert torch.equal(to_uint8(f), x)
    assert torch.equal(to_uint8(torch.tensor([-3.0, 0.0, 7.0])), torch.tensor([0, 128, 255], dtype=torch.uint8))


def test_kodak24_zip():
    path = DATA / "kodak24.zip"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    s = _load(path)
    assert s.images.shape == (24, 3, 128, 128) and not any(s.skipped.values())
    assert all(n.startswith("kodak24.zip:") for n in s.names)


def test_portable_config_names_data_and_ce64_without_paths(tmp_path: Path):
    from cce_core.provenance import portable_config
    cfg = {"model": "cce128", "data": [str(tmp_path / "train-gpu.zip"), "embedded", "../../x/photos"],
           "ce64": str(tmp_path / "runs" / "ce64-central" / "checkpoint.pt"), "steps": 20}
    out = portable_config(cfg)
    assert out == {"model": "cce128", "data": ["train-gpu.zip", "embedded", "photos"],
                   "ce64": "ce64-central/checkpoint.pt", "steps": 20}
    assert cfg["data"][0].startswith(str(tmp_path))  # the input is left as it was
