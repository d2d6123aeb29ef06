"""Small results (issue 17, defect 8): the executed notebooks and figures of a run are compacted, so the book's
committed results stay small in git and in the upload to the GPU box, and the book still shows every figure."""

import base64
import io
import json
import shutil
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pytest
from PIL import Image

from cce_core.plots import compact_image, save_figure
from cce_core.reproduce import compact_generated, compact_notebook

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def photo_figure(dpi: int = 80) -> bytes:
    """A figure of 'photographs' (smooth random colour fields, many colours) as PNG bytes."""
    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(1, 3, figsize=(6, 2))
    for ax in axes:
        small = rng.random((8, 8, 3))
        ax.imshow(np.kron(small, np.ones((16, 16, 1))) * 0.7 + rng.random((128, 128, 3)) * 0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def plot_figure(dpi: int = 80, slope: float = 1.0) -> bytes:
    fig, ax = plt.subplots(figsize=(5, 2.5))
    ax.plot(np.arange(50), slope * np.sin(np.arange(50) / 5))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def image_output(png: bytes) -> dict:
    return nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(png).decode(),
                                                        "text/plain": "<Figure size 500x250 with 1 Axes>"})


def test_compact_image_photo_as_jpeg_plot_as_palette_png():
    photo, plot = photo_figure(), plot_figure()
    mime, data = compact_image(photo)
    assert mime == "image/jpeg" and len(data) < len(photo) and Image.open(io.BytesIO(data)).format == "JPEG"
    mime, data = compact_image(plot)
    assert mime == "image/png" and len(data) < len(plot) and Image.open(io.BytesIO(data)).mode == "P"
    assert compact_image(data) == ("image/png", data)  # idempotent


def test_save_figure_by_suffix(tmp_path: Path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    assert save_figure(fig, tmp_path / "a.jpg") is None  # a cell ending with it shows nothing
    save_figure(fig, tmp_path / "b.png")
    assert Image.open(tmp_path / "a.jpg").format == "JPEG" and Image.open(tmp_path / "b.png").mode == "P"
    with pytest.raises(ValueError, match="not 'c.svg'"):
        save_figure(fig, tmp_path / "c.svg")
    plt.close(fig)


def notebook(path: Path, outputs: list[dict], sources: list[str] | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src, outputs=[o]) for o, src in zip(outputs, sources or ["x"] * len(outputs))]
    nbformat.write(nb, path)
    return path


def test_compact_notebook_points_to_saved_figures_and_shrinks_the_rest(tmp_path: Path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "photos_a.jpg").write_bytes(compact_image(photo_figure(dpi=110))[1])  # saved at 110 dpi
    (tmp_path / "figures" / "curve.png").write_bytes(plot_figure(dpi=110, slope=-1))
    stream = nbformat.v4.new_output("stream", text="hello\n")
    outputs = [image_output(photo_figure(dpi=80)), image_output(plot_figure()), image_output(plot_figure()), stream]
    sources = ['save(fig, f"photos_{k}.jpg")', 'save(fig, "curve.png")', "plt.show()", "print('hello')"]
    path = notebook(tmp_path / "nb.ipynb", outputs, sources)
    before = path.stat().st_size
    assert compact_notebook(path) > 0 and path.stat().st_size < before / 3
    outs = [c.outputs[0] for c in nbformat.read(path, as_version=4).cells]
    assert outs[0].data["text/markdown"] == "![photos_a](figures/photos_a.jpg)" and "image/png" not in outs[0].data
    for out in outs[1:3]:  # 1: its cell saved curve.png, a different plot (the curve slopes down); 2: saved nothing
        assert set(out.data) == {"image/png", "text/plain"}
        assert Image.open(io.BytesIO(base64.b64decode(out.data["image/png"]))).mode == "P"
    assert outs[3] == stream
    digest = path.read_bytes()
    compact_notebook(path)
    assert path.read_bytes() == digest  # idempotent


def test_compact_notebook_without_images_keeps_text_and_tables(tmp_path: Path):
    table = nbformat.v4.new_output("execute_result", data={"text/html": "<table/>", "text/plain": "t"},
                                   execution_count=1)
    path = notebook(tmp_path / "nb.ipynb", [image_output(plot_figure()), table])
    compact_notebook(path, images=False)
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].outputs == [] and cells[1].outputs[0].data == {"text/html": "<table/>", "text/plain": "t"}


def test_compact_generated_converts_photo_pngs_and_strips_the_other_seeds(tmp_path: Path):
    gen = tmp_path / "generated"
    for folder in (gen, gen / "seed1"):
        (folder / "figures").mkdir(parents=True)
        (folder / "figures" / "photos.png").write_bytes(photo_figure(dpi=110))
        notebook(folder / "train.ipynb", [image_output(photo_figure())], ['save(fig, "photos.jpg")'])
    with pytest.raises(FileNotFoundError, match="no run.json"):
        compact_generated(gen)
    (gen / "run.json").write_text(json.dumps({"seed_folders": {"seed1": "seed1/"}}))
    compact_generated(gen)
    assert not (gen / "figures" / "photos.png").exists()
    assert Image.open(gen / "figures" / "photos.jpg").format == "JPEG"
    first = nbformat.read(gen / "train.ipynb", as_version=4).cells[0].outputs[0]
    assert first.data["text/markdown"] == "![photos](figures/photos.jpg)"
    assert nbformat.read(gen / "seed1" / "train.ipynb", as_version=4).cells[0].outputs == []


def test_committed_results_are_compact(tmp_path: Path):
    """The book's results were compacted when adopted (make adopt): compacting a copy changes nothing."""
    copy = shutil.copytree(REPO / "book" / "generated", tmp_path / "generated")
    assert compact_generated(copy) == 0
    changed = [p.relative_to(copy).as_posix() for p in sorted(copy.rglob("*")) if p.is_file()
               and p.read_bytes() != (REPO / "book" / "generated" / p.relative_to(copy)).read_bytes()]
    assert not changed, f"book/generated is not compacted (python -m cce_core compact book/generated): {changed}"


def test_saved_and_compacted_figures_keep_their_font_stamp(tmp_path):
    """The book's legibility check reads each figure's stamp: saving (JPEG or palette PNG) and compacting a shown
    PNG keep it."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from cce_core.plots import DPI_KEY, FONT_KEY, compact_image, font_metadata, read_stamp, save_figure

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.imshow(np.random.default_rng(0).random((64, 64, 3)))  # a photograph-like figure
    ax.set_title("title", fontsize=13)
    ax.tick_params(labelsize=11)
    for name in ("a.jpg", "b.png"):
        save_figure(fig, tmp_path / name, dpi=90)
        assert read_stamp(Image.open(tmp_path / name)) == {FONT_KEY: "11", DPI_KEY: "90"}, name
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata=font_metadata(fig, 100))
    mime, data = compact_image(buf.getvalue())
    assert read_stamp(Image.open(io.BytesIO(data))) == {FONT_KEY: "11", DPI_KEY: "100"}, mime
    plt.close(fig)


def test_compact_notebook_hides_papermill_injected_parameters(tmp_path: Path):
    """Issue 30, fault 11: the executed pages do not show papermill's parameters cell (the machine's paths)."""
    path = tmp_path / "nb.ipynb"
    injected = nbformat.v4.new_code_cell('# Parameters\ndata = ["../../../shared/data/photos128/train-gpu.zip"]\n',
                                         metadata={"tags": ["injected-parameters"]})
    own = nbformat.v4.new_code_cell("x = 1\n", metadata={"tags": ["hide-input"]})
    nbformat.write(nbformat.v4.new_notebook(cells=[injected, own]), path)
    compact_notebook(path)
    compact_notebook(path)  # idempotent
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].metadata["tags"] == ["injected-parameters", "remove-cell"]
    assert cells[1].metadata["tags"] == ["hide-input"]
