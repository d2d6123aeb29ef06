"""Image sources for training and evaluating the context encoders: every image comes out RGB, 128x128.

A source is one of

* ``"embedded"`` (:data:`EMBEDDED`): random 128x128 crops of the colour photographs that scikit-image ships
  inside its wheel (:func:`embedded_photos`). Needs no download, so it is the default data set.
* a directory, searched recursively (ImageFolder-style or flat) for ``.jpg``/``.jpeg``/``.png`` files;
* a ``.zip`` file, read in place (never extracted), e.g. the ``photos128`` shards in ``../shared/data/photos128``;
* a single image file;
* or a list of these, concatenated in order.

Files are decoded with PIL and converted to RGB. A 128x128 image is kept as it is; a larger one is centre-cropped
to its largest square and resized to 128x128 (Lanczos when shrinking 2x or more, else bicubic), which is how the
``photos128`` set was made; one whose short side is under 128 is skipped. Corrupt or truncated files are skipped
with a warning, and :func:`load_images` raises if too many files were unusable.

Images are held as one uint8 tensor of shape (N, 3, 128, 128); :func:`sample_batch` draws float batches in
[-1, 1] from it the way Pathak's loader does (uniform with replacement, random horizontal flips).
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .seeding import derive_seed

#: The special source name for the built-in data set (:func:`embedded_photos`).
EMBEDDED = "embedded"
#: The streams (:func:`cce_core.seeding.derive_seed` purposes) of a run's embedded training and evaluation crops.
TRAIN_CROPS, EVAL_CROPS = "training crops", "evaluation crops"

SIZE = 128
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
#: Distinct images of the ``photos128`` training files (their README), for pages that say what each reaches without
#: the data at hand; ``train-0*.zip`` is the four shards together. tests/test_data.py counts them where present.
PHOTOS128_TRAIN = {"train-mini.zip": 1024, "train-gpu.zip": 9600, "train-0*.zip": 29569}

#: The colour photographs of everyday scenes inside ``skimage/data/`` (read straight from disk, no download).
#: Left out: the synthetic ``color.png``/``phantom.png``/``chessboard_RGB.png``, the microscopy ``ihc.png``,
#: the astronomy ``hubble_deep_field.jpg``, the fundus ``retina.jpg`` and the grayscale/RGBA pictures.
EMBEDDED_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
                   "motorcycle_left.png", "motorcycle_right.png")


@dataclass
class ImageSet:
    """A stack of 128x128 RGB images with their names and the files that could not be used."""

    images: torch.Tensor  # uint8, (N, 3, 128, 128), contiguous, CPU
    names: list[str]  # one per image, no machine path: "train-mini.zip:train/000123.jpg", "photos/a/1.jpg",
    #                   "embedded:astronaut#3"
    skipped: dict[str, list[str]] = field(default_factory=lambda: {"corrupt": [], "too_small": []})
    description: str = ""  # short provenance, e.g. "train-mini.zip (1024 images)"

    def __len__(self) -> int:
        return self.images.shape[0]


# ----------------------------------------------------------------------------------------------------------------
# decoding one image


def _square_128(im: Image.Image) -> Image.Image:
    """Centre-crop the largest square and resize it to 128x128 (Lanczos when shrinking >= 2x, else bicubic)."""
    w, h = im.size
    if (w, h) == (SIZE, SIZE):
        return im
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    im = im.crop((left, top, left + s, top + s))
    if s == SIZE:
        return im
    return im.resize((SIZE, SIZE), Image.Resampling.LANCZOS if s >= 2 * SIZE else Image.Resampling.BICUBIC)


def _decode(payload: str | os.PathLike | bytes | np.ndarray) -> np.ndarray | str:
    """Decode one image file (a path or its bytes) to a (3, 128, 128) uint8 array, or return why it was skipped
    ("corrupt" or "too_small"). An already decoded array passes through."""
    if isinstance(payload, np.ndarray):
        return payload
    try:
        with Image.open(BytesIO(payload) if isinstance(payload, bytes) else payload) as im:
            if min(im.size) < SIZE:
                return "too_small"
            im.load()  # raises on truncated data (ImageFile.LOAD_TRUNCATED_IMAGES stays False)
            rgb = _square_128(im.convert("RGB"))
            array = np.asarray(rgb)
    except Exception:  # PIL raises OSError, SyntaxError, ValueError, EOFError, zlib.error, ... on bad files
        return "corrupt"
    return array.transpose(2, 0, 1)


def _map_in_order(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """``map(fn, items)``, run on ``workers`` threads when > 0, results in input order. At most 4 items per
    worker are in flight, so large sources are not read into memory at once."""
    if workers <= 0:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# ----------------------------------------------------------------------------------------------------------------
# listing the images of a source


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _is_hidden(parts: Sequence[str]) -> bool:
    """macOS metadata (``__MACOSX/``, ``._x.jpg``) and other hidden files, which are not images."""
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _list_source(src: str | os.PathLike, zips: ExitStack,
                 embedded: Callable[[], ImageSet]) -> list[tuple[str, object]]:
    """The (name, item) pairs of one source, in load order. An item is a path, a (ZipFile, member) pair to read
    in the main thread, or an already decoded array (embedded photos)."""
    if isinstance(src, str) and src == EMBEDDED:
        photos = embedded()
        return list(zip(photos.names, photos.images.numpy()))
    path = Path(src)
    if not path.exists():
        raise FileNotFoundError(f"image source not found: {str(src)!r}")
    if path.is_dir():
        files = sorted((p for p in path.rglob("*") if _is_image_name(p.name) and p.is_file()
                        and not _is_hidden(p.relative_to(path).parts)),
                       key=lambda p: p.relative_to(path).as_posix())
        if not files:
            raise ValueError(f"no images (.jpg/.jpeg/.png) found in directory {str(src)!r}")
        return [(f"{path.resolve().name}/{p.relative_to(path).as_posix()}", p) for p in files]
    if _is_image_name(path.name):
        return [(path.name, path)]
    if zipfile.is_zipfile(path):
        try:
            zf = zips.enter_context(zipfile.ZipFile(path))
        except (zipfile.BadZipFile, OSError) as e:
            raise ValueError(f"{str(src)!r} is a corrupt zip ({e})") from None
        members = sorted(i.filename for i in zf.infolist() if not i.is_dir() and _is_image_name(i.filename)
                         and not _is_hidden(i.filename.split("/")))
        if not members:
            raise ValueError(f"no images (.jpg/.jpeg/.png) found in zip file {str(src)!r}")
        return [(f"{path.name}:{m}", (zf, m)) for m in members]
    if path.suffix.lower() == ".zip":
        raise ValueError(f"{str(src)!r} is a corrupt zip (no zip directory found in it)")
    raise ValueError(f"{str(src)!r} is not an image (.jpg/.jpeg/.png), a .zip file, a directory or {EMBEDDED!r}")


def _read(item: object) -> object:
    """What :func:`_decode` needs for one item: zip members are read here, in the calling thread, because a
    ZipFile is not thread-safe; paths and arrays pass through."""
    if isinstance(item, tuple):
        zf, member = item
        return zf.read(member)
    return item


def _describe(sources: Sequence[str | os.PathLike], n: int, n_skipped: int) -> str:
    """E.g. "train-00.zip + train-01.zip (14784 images)"."""
    names = [("embedded scikit-image photos" if s == EMBEDDED else Path(s).name + "/" * Path(s).is_dir())
             for s in sources]
    shown = " + ".join(names[:3]) + (f" + {len(names) - 3} more" if len(names) > 3 else "")
    return f"{shown} ({n} images" + (f", {n_skipped} skipped)" if n_skipped else ")")


# ----------------------------------------------------------------------------------------------------------------
# public API


def load_images(sources: str | os.PathLike | Sequence[str | os.PathLike], *, limit: int | None = None,
                max_bad_fraction: float = 0.05, workers: int = 0, progress: bool = True,
                embedded_count: int = 512, seed: int = 0, purpose: str | None = None) -> ImageSet:
    """Load every image of ``sources`` (see the module docstring) as a uint8 (N, 3, 128, 128) :class:`ImageSet`.

    ``limit`` keeps only the first ``limit`` images (in load order), and only those are decoded. Files that cannot
    be used (corrupt, or short side under 128) are skipped and listed in ``skipped`` with one warning; if they are
    more than ``max_bad_fraction`` of the files, ValueError. ``workers > 0`` decodes on that many threads, with the
    same result. ``embedded_count``, ``seed`` and ``purpose`` are passed to :func:`embedded_photos` for the
    ``"embedded"`` source.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    sources = list(sources)
    if not sources:
        raise ValueError("no image sources given")
    if limit is not None and limit < 1:
        raise ValueError(f"the number of images (limit) must be at least 1, got {limit!r}")

    with ExitStack() as zips:
        entries = []
        for src in sources:
            entries += _list_source(src, zips, lambda: embedded_photos(embedded_count, seed, purpose=purpose))
        entries = entries[:limit]

        out = np.empty((len(entries), 3, SIZE, SIZE), dtype=np.uint8)  # numpy: per-image torch copies are slow
        names: list[str] = []
        skipped: dict[str, list[str]] = {"corrupt": [], "too_small": []}
        payloads = (_read(item) for _, item in entries)
        bar = tqdm(_map_in_order(_decode, payloads, workers), total=len(entries), desc="loading images",
                   unit="img", disable=not progress)
        for (name, _), result in zip(entries, bar):
            if isinstance(result, str):
                skipped[result].append(name)
            else:
                out[len(names)] = result
                names.append(name)

    bad = [n for reason in skipped.values() for n in reason]
    n_files = sum(not isinstance(item, np.ndarray) for _, item in entries)
    summary = f"corrupt: {len(skipped['corrupt'])}, short side under {SIZE} px: {len(skipped['too_small'])}"
    if not names:
        raise ValueError(f"all {len(entries)} images were skipped ({summary}), e.g. {bad[:3]}")
    if bad:
        fraction = len(bad) / n_files
        if fraction > max_bad_fraction:
            raise ValueError(f"{len(bad)} of {n_files} image files ({fraction:.1%}) could not be used ({summary}), "
                             f"more than the {max_bad_fraction:.1%} tolerated; e.g. {bad[:3]}. To skip them, "
                             "raise --max-bad-fraction (max_bad_fraction in Python).")
        warnings.warn(f"skipped {len(bad)} of {n_files} image files ({summary}); first: {bad[0]!r}", stacklevel=2)

    images = out if len(names) == len(entries) else out[:len(names)].copy()
    return ImageSet(torch.from_numpy(images), names, skipped, _describe(sources, len(names), len(bad)))


def embedded_photos(count: int = 512, seed: int = 0, load_size: int = 350, purpose: str | None = None) -> ImageSet:
    """``count`` random 128x128 crops of the scikit-image photographs (:data:`EMBEDDED_PHOTOS`), Pathak's way.

    Each photo is resized so its short side is ``load_size`` (bicubic, aspect kept), then cropped at random
    positions drawn from ``torch.Generator().manual_seed(seed)``, or, for a run's stream (``purpose``, e.g.
    "training crops", "evaluation crops"), from the seed ``cce_core.seeding.derive_seed(seed, purpose)``, so a run's
    training and evaluation crops never share a stream: ``count // n_photos`` crops per photo, the remainder going
    to the first photos. The files are read from ``skimage.data.data_dir``; nothing is downloaded.
    """
    if count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    if load_size < SIZE:
        raise ValueError(f"load_size must be at least {SIZE}, got {load_size!r}")
    import skimage.data  # only here: the rest of the module does not need scikit-image

    generator = torch.Generator().manual_seed(seed if purpose is None else derive_seed(seed, purpose))
    images = np.empty((count, 3, SIZE, SIZE), dtype=np.uint8)
    names: list[str] = []
    n_photos = len(EMBEDDED_PHOTOS)
    for i, filename in enumerate(EMBEDDED_PHOTOS):
        n = count // n_photos + (i < count % n_photos)
        if n == 0:
            continue
        path = Path(skimage.data.data_dir) / filename
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the embedded data set needs scikit-image's sample photos")
        with Image.open(path) as im:
            im = im.convert("RGB")
        w, h = im.size
        scale = load_size / min(w, h)
        im = im.resize((round(w * scale), round(h * scale)), Image.Resampling.BICUBIC)
        photo = np.asarray(im).transpose(2, 0, 1)
        tops = torch.randint(photo.shape[1] - SIZE + 1, (n,), generator=generator)
        lefts = torch.randint(photo.shape[2] - SIZE + 1, (n,), generator=generator)
        for j, (top, left) in enumerate(zip(tops.tolist(), lefts.tolist())):
            images[len(names)] = photo[:, top:top + SIZE, left:left + SIZE]
            names.append(f"embedded:{Path(filename).stem}#{j}")
    stream = f", {purpose}" if purpose else ""
    description = f"embedded scikit-image photos ({count} crops of {min(count, n_photos)} photos, seed {seed}{stream})"
    return ImageSet(torch.from_numpy(images), names, {"corrupt": [], "too_small": []}, description)


def _sha256(path: Path, h=None):
    import hashlib
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h


def describe_source(src: str | os.PathLike, embedded_count: int = 512, verify: bool = True) -> dict:
    """A source named the portable way, for run records: its file name, kind, image count and SHA-256, never
    the path on this machine.

    * a zip: ``{"name": "train-gpu.zip", "kind": "zip", "images": 9600, "bytes": ..., "sha256": ...}``; the
      hash is of the file, as in ``photos128/SHA256SUMS``; ``verify`` also checks every member's CRC, so a
      damaged zip fails here ("corrupt zip") before any work starts;
    * a folder: its name, the image count and the SHA-256 over the sorted relative paths and file contents;
    * one image file: its name and SHA-256; ``"embedded"``: the name and ``embedded_count`` crops.

    Raises FileNotFoundError or ValueError (one line, naming the source) for a missing or unusable source.
    """
    if isinstance(src, str) and src == EMBEDDED:
        return {"name": EMBEDDED, "kind": "embedded", "images": embedded_count,
                "what": f"random crops of the scikit-image photos {', '.join(EMBEDDED_PHOTOS)}"}
    path = Path(src)
    if not path.exists():
        raise FileNotFoundError(f"image source not found: {str(src)!r}")
    if path.is_dir():
        with ExitStack() as zips:
            files = [item for _, item in _list_source(path, zips, embedded_photos)]
        import hashlib
        h = hashlib.sha256()
        for f in files:
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
            _sha256(f, h)
        return {"name": path.resolve().name + "/", "kind": "folder", "images": len(files), "sha256": h.hexdigest()}
    if _is_image_name(path.name):
        return {"name": path.name, "kind": "image", "images": 1, "bytes": path.stat().st_size,
                "sha256": _sha256(path).hexdigest()}
    with ExitStack() as zips:
        entries = _list_source(path, zips, embedded_photos)  # ValueError: not a zip, corrupt, or no images
        if verify:
            try:
                bad = entries[0][1][0].testzip()
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
                raise ValueError(f"{str(src)!r} is a corrupt zip ({e})") from None
            if bad is not None:
                raise ValueError(f"{str(src)!r} is a corrupt zip (member {bad!r} fails its CRC check)")
    return {"name": path.name, "kind": "zip", "images": len(entries), "bytes": path.stat().st_size,
            "sha256": _sha256(path).hexdigest()}


def describe_sources(sources: str | os.PathLike | Sequence[str | os.PathLike], embedded_count: int = 512,
                     verify: bool = True) -> list[dict]:
    """:func:`describe_source` of each source (a single source is a list of one)."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    return [describe_source(s, embedded_count, verify) for s in sources]


def source_names(sources: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The file names of sources (``"embedded"`` as is): how a stored configuration names its data."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    return [str(s) if str(s) == EMBEDDED else Path(s).resolve().name for s in sources]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] -> float32 in [-1, 1] (x / 255 * 2 - 1), the range the networks work in."""
    if images.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 images, got {images.dtype}")
    return images.float() / 255 * 2 - 1


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float images in [-1, 1] -> uint8 in [0, 255] (clamped, rounded): the inverse of :func:`to_float`."""
    return ((images.float().clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8)


def sample_batch(images: torch.Tensor, batch: int, generator: torch.Generator, flip: bool = True,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """A float batch (batch, 3, 128, 128) in [-1, 1], drawn as Pathak's loader does: indices uniform with
    replacement, then (if ``flip``) each image flipped horizontally with probability 1/2. Both draws come from
    ``generator`` and are made on its device, so its state fixes the batch; with a generator on the device of
    ``images`` (e.g. both on the GPU) nothing is copied between host and device. The result is on ``device``
    (default: the device of ``images``)."""
    index = torch.randint(images.shape[0], (batch,), generator=generator, device=generator.device)
    x = images[index.to(images.device)]  # a no-op when the generator lives with the images
    x = to_float(x if device is None else x.to(device))
    if flip:
        flips = torch.rand(batch, generator=generator, device=generator.device) < 0.5
        x = torch.where(flips.to(x.device)[:, None, None, None], x.flip(-1), x)
    return x
