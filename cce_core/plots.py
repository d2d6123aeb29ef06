"""Small display helpers shared by the notebooks: tensors in the networks' [-1, 1] range to images, image grids,
the names the book gives models and masks, the rule that picks Fig. 4's examples, a network's layer table, and
the book's figure style (:func:`use_book_style`: text legible at page width, each PNG stamped with its smallest
font size and its dpi, which the browser test reads).

matplotlib is imported lazily (inside the functions that draw), so importing ``cce_core.plots`` costs nothing
for code that only converts images.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from .stats import PAPER_CCE, PAPER_CE

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from torch import nn

#: JPEG quality of the figures that show photographs (inpaintings): no visible loss at a third of a PNG's size.
JPEG_QUALITY = 88
#: An image with more distinct colours than this is a photograph (JPEG); fewer, a plot (a palette PNG). Plots
#: drawn by matplotlib have a few hundred to a few thousand (anti-aliasing); the figures of photos, over 10,000.
PHOTO_COLOURS = 8192

#: How the book names the paper's three networks and the mask strategies (page titles, legends).
MODEL_NAMES = {"ce64": "64 CE", "ce128": "128 CE", "cce128": "cascade 128 CE"}
MASK_NAMES = {"central": "central mask", "random_blocks": "random blocks", "random_region": "random regions"}


#: The book's figure convention (issue 19, item 5). The content column of a page is 660-676 px wide at a 1280 px
#: window (measured in Chromium: less on pages with a contents column), so a figure FIG_WIDTH_IN inches wide at
#: FIG_DPI is shown about 1:1, and text of FONT_PT points is drawn
#: FONT_PT * FIG_DPI / 72 px high: larger than the pages' footnotes (16 px in this theme).
FIG_DPI = 100
FIG_WIDTH_IN = 6.5
FONT_PT = 12.0
#: matplotlib settings of every figure in the book (:func:`use_book_style`): no text below FONT_PT.
BOOK_RC = {
    "figure.dpi": FIG_DPI, "savefig.dpi": FIG_DPI, "figure.figsize": (FIG_WIDTH_IN, 3.2),
    "font.size": FONT_PT, "axes.titlesize": FONT_PT + 1, "axes.labelsize": FONT_PT, "xtick.labelsize": FONT_PT,
    "ytick.labelsize": FONT_PT, "legend.fontsize": FONT_PT, "legend.title_fontsize": FONT_PT,
    "figure.titlesize": FONT_PT + 2, "figure.constrained_layout.use": True,
}
#: PNG text keys of the stamp (:func:`font_metadata`).
FONT_KEY, DPI_KEY = "cce:min_font_pt", "cce:dpi"


def min_font_pt(fig: Figure) -> float | None:
    """The smallest font size (points) of any visible, non-empty text of ``fig`` (titles, labels, tick labels,
    legends, annotations); None for a figure without text. Lays the figure out first: tick labels get their
    text only when the figure is drawn."""
    from matplotlib.text import Text

    fig.draw_without_rendering()

    sizes = [t.get_fontsize() for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip() and (t.axes is None or t.axes.get_visible())]
    return float(min(sizes)) if sizes else None


def font_metadata(fig: Figure, dpi: float | None = None) -> dict[str, str]:
    """PNG text chunks for ``savefig(..., metadata=...)``: the figure's smallest font size and the dpi it is
    written at, so that the size of its text on a page can be computed from the size the image is shown at."""
    size = min_font_pt(fig)
    out = {DPI_KEY: f"{dpi or fig.dpi:g}"}
    if size is not None:
        out[FONT_KEY] = f"{size:g}"
    return out


def rendered_text_px(font_pt: float, dpi: float, natural_width: float, rendered_width: float) -> float:
    """Height in CSS px of text of ``font_pt`` points in a PNG written at ``dpi``, shown ``rendered_width`` px
    wide while the image is ``natural_width`` px wide (one CSS px per image pixel at 100% zoom)."""
    return font_pt * dpi / 72 * rendered_width / natural_width


def _png_with_stamp(fig: Figure) -> bytes:
    """The inline backend's PNG of ``fig`` (tight bounding box), stamped with :func:`font_metadata`."""
    from IPython.core.pylabtools import print_figure

    return print_figure(fig, "png", bbox_inches="tight", base64=True, metadata=font_metadata(fig))


def use_book_style() -> None:
    """The book's figure style, called once at the top of every notebook that draws: :data:`BOOK_RC`, and in a
    Jupyter kernel a PNG formatter that stamps each shown figure with its smallest font size and dpi (the book's
    browser test checks that no figure's text is shown smaller than the pages' footnotes)."""
    import matplotlib as mpl
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    plt.close(plt.figure())  # loads the backend now: the inline one registers its own formatters when it loads
    mpl.rcParams.update(BOOK_RC)
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - matplotlib without IPython
        return
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["image/png"].for_type(Figure, _png_with_stamp)


def eval_images_note(data: Sequence[str], eval_data: Sequence[str]) -> str:
    """One sentence saying whether the evaluation images are held out from the training images.

    Sources are compared by name: the embedded data set (``"embedded"``) used for both gives other random crops
    of the same scikit-image photographs, which are not held out; so is any source listed in both.
    """
    shared = sorted(set(map(str, data)) & set(map(str, eval_data)))
    if not shared:
        return "held out: no evaluation source is a training source"
    if shared == ["embedded"]:
        return "not held out: other random crops of the training photographs (embedded data set)"
    return "not held out: the evaluation images come from the training source(s) " + ", ".join(
        Path(s).name for s in shared)


def pick_examples(lead: torch.Tensor, per_group: int = 2, seed: int = 0) -> list[tuple[str, int]]:
    """Fig. 4's rule for choosing which images to show, each image at most once.

    ``lead[i]`` is (cascade's hole error - CE's hole error) on image i, > 0 where the CE does better. Returns
    ``(why, index)`` pairs: the ``per_group`` images with the largest lead for the CE ("best CE"), then the
    ``per_group`` with the largest lead for the cascade ("best cascade"), then ``per_group`` random others
    (drawn with ``seed``), skipping any image already chosen; fewer when there are not enough images.
    """
    order_ce = lead.argsort(descending=True, stable=True).tolist()
    order_cce = lead.argsort(stable=True).tolist()
    order_rand = torch.randperm(len(lead), generator=torch.Generator().manual_seed(seed)).tolist()
    picks: list[tuple[str, int]] = []
    for why, order in (("best CE", order_ce), ("best cascade", order_cce), ("random", order_rand)):
        taken = [i for i in order if i not in {j for _, j in picks}][:per_group]
        picks += [(why, i) for i in taken]
    return picks


def image_grid(nrows: int, ncols: int, size: float = 2.0, title: str | None = None,
               titles: bool = True) -> tuple[Figure, np.ndarray]:
    """A figure of ``nrows`` x ``ncols`` square image axes with no blank band under the figure title.

    The figure's height is fitted to square images plus room for each row's titles (``titles``) and the
    figure title, and the layout is constrained, so rows sit right under the title.
    """
    import matplotlib.pyplot as plt

    row = size + (0.3 if titles else 0.05)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, row * nrows + (0.45 if title else 0)),
                             squeeze=False, layout="constrained")
    if title:
        fig.suptitle(title)
    return fig, axes


#: The book's table style for pandas Stylers (``.set_table_styles(TABLE_STYLES)``): cell padding that keeps
#: neighbouring numbers apart without pushing a table wider than the page.
TABLE_STYLES = [{"selector": "th, td", "props": [("padding", "0.3em 0.5em")]}]


def layer_table(model: nn.Module, input_size: int) -> list[dict]:
    """The layers of a :class:`~cce_core.models.ContextEncoder` or :class:`~cce_core.models.Discriminator`,
    one row per (transposed) convolution with the normalisation and activation that follow it ("then"; LReLU:
    LeakyReLU with its slope), as in Pathak's code: name (E/D for the generator's encoder/decoder, C for the
    discriminator), layer (conv or up-conv), channels, kernel/stride/padding, output shape (from one forward pass
    of a blank image in eval mode) and params, its parameters (conv weights plus BatchNorm affine).
    """
    from torch import nn

    prefix = {"encoder": "E", "bottleneck_conv": "E", "bottleneck_act": "E", "decoder": "D", "net": "C"}
    rows: list[dict] = []
    counts: dict[str, int] = {}
    hooks = []
    for top, child in model.named_children():
        for leaf in (child.modules() if len(list(child.children())) else [child]):
            if len(list(leaf.children())):
                continue
            if isinstance(leaf, (nn.Conv2d, nn.ConvTranspose2d)):
                letter = prefix.get(top, "?")
                counts[letter] = counts.get(letter, 0) + 1
                rows.append({"name": f"{letter}{counts[letter]}",
                             "layer": "up-conv" if isinstance(leaf, nn.ConvTranspose2d) else "conv",
                             "channels": f"{leaf.in_channels}→{leaf.out_channels}",
                             "k/s/p": f"{leaf.kernel_size[0]}/{leaf.stride[0]}/{leaf.padding[0]}",
                             "then": "–", "output": "",
                             "params": sum(p.numel() for p in leaf.parameters())})
            elif rows and isinstance(leaf, nn.BatchNorm2d):
                rows[-1]["then"] = "BN"
                rows[-1]["params"] += sum(p.numel() for p in leaf.parameters())
            elif rows:
                name = type(leaf).__name__
                act = f"LReLU {leaf.negative_slope:g}" if name == "LeakyReLU" else name
                rows[-1]["then"] = act if rows[-1]["then"] == "–" else f"{rows[-1]['then']}, {act}"
            if rows and isinstance(leaf, (nn.Conv2d, nn.ConvTranspose2d)):
                row = rows[-1]
                hooks.append(leaf.register_forward_hook(
                    lambda mod, inp, out, row=row: row.__setitem__("output", "×".join(map(str, out.shape[1:])))))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    if hasattr(model, "logits") and rows:  # the Discriminator applies its Sigmoid in forward(), not as a module
        rows[-1]["activation"] = "Sigmoid"
    return rows


def to_numpy_image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """One image as an H x W x 3 float array in [0, 1], ready for ``imshow``.

    Accepts a float tensor in [-1, 1] (the networks' range) or a uint8 tensor in [0, 255], of shape (3, H, W)
    (an image) or (1, H, W) / (H, W) (a mask or other single channel, shown in grey). A leading batch
    dimension of size 1 is dropped. Float values outside [-1, 1] are clipped.
    """
    t = torch.as_tensor(image).detach().cpu()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"expected an image of shape (3, H, W), (1, H, W) or (H, W), got {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        x = t.float() / 255
    elif t.is_floating_point():
        x = (t.float().clamp(-1, 1) + 1) / 2
    else:
        raise TypeError(f"expected a float image in [-1, 1] or a uint8 image, got dtype {t.dtype}")
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return x.permute(1, 2, 0).numpy()


def mask_to_image(mask: torch.Tensor) -> torch.Tensor:
    """A 0/1 mask (1 = missing) as a float image in [-1, 1] for :func:`show_grid`: missing white, known black."""
    return torch.as_tensor(mask).float() * 2 - 1


def show_grid(images: torch.Tensor | Sequence[torch.Tensor], titles: Sequence[str] | None = None, *,
              ncols: int | None = None, axes: Sequence[Axes] | np.ndarray | None = None,
              size: float = 2.2, fontsize: float | None = None) -> np.ndarray:
    """Show images (each as accepted by :func:`to_numpy_image`) side by side, one per axes, without ticks.

    ``images`` is a batch (B, C, H, W) or a list of single images. Either pass ``axes`` (at least one per image;
    extra ones are hidden) or let the function make a figure with ``ncols`` columns (default: all in one row),
    ``size`` inches per image; titles in ``fontsize`` points (default: the style's, legible in the book).
    Returns the axes as a flat array, so a caller can draw on top (e.g. boxes).
    """
    images = list(images)
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(titles)} titles for {len(images)} images")
    if axes is None:
        import matplotlib.pyplot as plt

        ncols = ncols or len(images)
        nrows = -(-len(images) // ncols)
        _, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3 * (titles is not None)),
                               squeeze=False, layout="constrained")
    axes = np.asarray(axes, dtype=object).ravel()
    if len(axes) < len(images):
        raise ValueError(f"got {len(axes)} axes for {len(images)} images")
    for i, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= len(images):
            ax.set_visible(False)
            continue
        ax.imshow(to_numpy_image(images[i]), interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=fontsize)
    return axes


def draw_box(ax: Axes, lo: float, hi: float, *, color: str = "yellow", linestyle: str = "-", label: str | None = None,
             linewidth: float = 1.5) -> None:
    """Outline the square [lo, hi)^2 (pixel indices) on an ``imshow`` axes: the edge lies on the pixel borders."""
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((lo - 0.5, lo - 0.5), hi - lo, hi - lo, fill=False, edgecolor=color,
                           linestyle=linestyle, linewidth=linewidth, label=label))


def forest_plot(per_seed: list[tuple[str, float, tuple[float, float]]], across: dict, paper_effect: float = -0.23,
                ax: Axes | None = None, xlabel: str = "paired NSD difference, cascade − CE") -> Axes:
    """Each seed's paired difference with its image-level 95% CI (thin line, dot), and below them the seed-level
    interval (thick line, diamond; ``across`` = :meth:`cce_core.stats.SeedInterval.as_dict`, ``ci95`` None with
    one seed), against 0 and the paper's difference (section 5: 0.56 − 0.79 = −0.23). The x axis is the data's
    own (and 0): where the paper's difference lies beyond it, an arrow at that edge names it, so that intervals a
    hundred times smaller than the paper's effect are still drawn wider than their markers.

    The picture of issue 18: image-level CIs are narrow, so seeds look "significant" in opposite directions,
    while the interval that speaks about the training procedure is the seed-level one.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 1.4 + 0.45 * (len(per_seed) + 1)), layout="constrained")
    rows = len(per_seed)
    for i, (_name, mean, (lo, hi)) in enumerate(per_seed):
        y = rows - i
        ax.plot([lo, hi], [y, y], color="tab:blue", linewidth=1.5)
        ax.plot([mean], [y], "o", color="tab:blue", markersize=6)
    ci = across.get("ci95")
    if ci is not None:
        ax.plot(list(ci), [0, 0], color="black", linewidth=4, solid_capstyle="butt")
    ax.plot([across["mean"]], [0], "D", color="black", markersize=10)
    ax.axvline(0, color="grey", linestyle="--", linewidth=1, label="no difference")
    paper = f"paper: {paper_effect:+.2f}".replace("-", "−")
    lo, hi = ax.get_xlim()  # the data's own scale (and 0): the intervals stay wider than their markers
    if lo <= paper_effect <= hi:
        ax.axvline(paper_effect, color="tab:red", linestyle=":", linewidth=1.5, label=paper)
    else:  # off scale: an arrow at the edge it lies beyond
        left = paper_effect < lo
        ax.annotate(f"{paper} (off scale)", xy=(0.0 if left else 1.0, 1.05), xycoords="axes fraction",
                    xytext=(0.12 if left else 0.88, 1.05), textcoords="axes fraction", color="tab:red",
                    ha="left" if left else "right", va="center",
                    arrowprops=dict(arrowstyle="->", color="tab:red"))
    ax.set_xlim(lo, hi)
    ax.set_yticks(range(rows, -1, -1), [name for name, _, _ in per_seed] + ["across seeds"])
    ax.set_ylim(-0.7, rows + 0.7)
    ax.set_xlabel(xlabel)
    ax.legend(loc="best")
    return ax


def nsd_against_paper(models: dict[str, dict], n: int, ax: Axes | None = None,
                      chance: dict[str, float] | None = None) -> Axes:
    """Each model's BN-normalised NSD per seed (dots) and its mean over seeds with the seed-level 95% interval
    (diamond, thick line; ``models``: label -> :meth:`cce_core.stats.SeedInterval.as_dict`), against the paper's
    values (section 5: 0.79 plain CE, 0.56 cascade) and the estimator's null value (n − 1)/n (codes that ignore
    the image), so the gap to the paper shows at a glance; ``chance`` (label -> NSD), each model's chance line
    (an untrained encoder, :func:`cce_core.gap.chance_model`), as a purple cross."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 2.4), layout="constrained")
    paper = {"CE": PAPER_CE, "cascade": PAPER_CCE}
    for y, (label, a) in enumerate(reversed(models.items())):
        ax.plot(a["per_seed"], [y] * len(a["per_seed"]), "o", color="tab:blue", alpha=0.6, markersize=6)
        if a["ci95"] is not None:
            ax.plot(list(a["ci95"]), [y, y], color="black", linewidth=4, solid_capstyle="butt")
        ax.plot([a["mean"]], [y], "D", color="black", markersize=9)
        if label in paper:
            ax.plot([paper[label]], [y], "s", color="tab:red", markersize=9, fillstyle="none", markeredgewidth=2)
        if chance and label in chance:
            ax.plot([chance[label]], [y], "X", color="tab:purple", markersize=9)
    if chance:
        ax.plot([], [], "X", color="tab:purple", label="chance line (untrained encoder)")
    ax.axvline((n - 1) / n, color="grey", linestyle="--", linewidth=1, label=f"null value (n − 1)/n, n = {n}")
    ax.plot([], [], "s", color="tab:red", fillstyle="none", markeredgewidth=2, label="paper (0.79 CE, 0.56 cascade)")
    ax.set_yticks(range(len(models)), list(reversed(models)))
    ax.set_ylim(-0.7, len(models) - 0.3)
    ax.set_xlabel("NSD, BN-normalised (per seed and mean over seeds)")
    ax.legend(loc="best")
    return ax


def ladder_lines(ax: Axes, samples: Sequence[float], per_seed: dict[int, Sequence[float]], across: Sequence[dict],
                 label: str, color: str, ticks: bool = True, style: str = "o-") -> None:
    """One model (or one difference) along a scale ladder: each seed's values as a thin line, the mean over seeds
    as a thick line with dots, and the seed-level 95% CI of the mean as a band (``across``: one
    :meth:`cce_core.stats.SeedInterval.as_dict` per point). The x axis is logarithmic in base 2 (the ladder's
    points are a factor 2 apart), ticked at the points unless ``ticks`` is False (an x axis other than samples,
    e.g. training FLOPs, that differs between the lines); ``style``: the thick line's matplotlib format."""
    for values in per_seed.values():
        ax.plot(samples, values, color=color, linewidth=0.8, alpha=0.35)
    ax.plot(samples, [a["mean"] for a in across], style, color=color, linewidth=2.2, label=label)
    if all(a["ci95"] is not None for a in across):
        ax.fill_between(samples, [a["ci95"][0] for a in across], [a["ci95"][1] for a in across], color=color,
                        alpha=0.18, linewidth=0)
    ax.set_xscale("log", base=2)
    if ticks:
        ax.set_xticks(list(samples), [f"{s:,}" for s in samples])
        ax.minorticks_off()


def log_axis(ax: Axes) -> None:
    """Turn the drawn y axis of ``ax`` into a log axis labelled in plain numbers: 1, 2, 5 times the powers of ten
    inside the data's range (1, 1.5, 2, 3, 5, 7 times them where that gives fewer than three), unlabelled minor
    ticks. Call it after plotting: no "2.8×10⁻¹" labels running into the next panel."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, StrMethodFormatter

    ax.set_yscale("log")
    lo, hi = ax.dataLim.y0, ax.dataLim.y1
    decades = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
    for subs in ((1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8)):
        ticks = [m * 10.0**e for e in decades for m in subs if lo <= m * 10.0**e <= hi]
        if len(ticks) >= 3:
            break
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_formatter(NullFormatter())


# --- figures as small files -----------------------------------------------------------------------------------

def read_stamp(im: Image.Image) -> dict[str, str]:
    """The font stamp of a figure file (:func:`font_metadata`): a PNG's text chunks, or a JPEG's comment
    ``cce:min_font_pt=12;cce:dpi=110``; empty when it has none."""
    stamp = {k: str(im.info[k]) for k in (FONT_KEY, DPI_KEY) if k in im.info}
    comment = im.info.get("comment", b"")
    comment = comment.decode("utf-8", "replace") if isinstance(comment, bytes) else str(comment)
    stamp.update(kv.split("=", 1) for kv in comment.split(";") if kv.startswith("cce:") and "=" in kv)
    return stamp


def palette_png(im: Image.Image, stamp: dict[str, str] | None = None) -> bytes:
    """A plot as a PNG of at most 256 colours (lossless when the plot has no more; else anti-aliasing shades are
    merged), compressed as much as zlib goes; keeps the font stamp (``stamp``, else the one ``im`` carries)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in (read_stamp(im) if stamp is None else stamp).items():
        info.add_text(key, value)
    buf = io.BytesIO()
    rgb = im.convert("RGB")
    colours = rgb.getcolors(256)
    pal = rgb.quantize(len(colours)) if colours else rgb.quantize(256, dither=Image.Dither.NONE)
    pal.save(buf, "PNG", optimize=True, pnginfo=info)
    return buf.getvalue()


def jpeg_bytes(im: Image.Image, stamp: dict[str, str] | None = None) -> bytes:
    """A photograph as a JPEG at :data:`JPEG_QUALITY`, the font stamp (``stamp``, else ``im``'s) in its comment."""
    comment = ";".join(f"{k}={v}" for k, v in (read_stamp(im) if stamp is None else stamp).items())
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=JPEG_QUALITY, optimize=True, comment=comment.encode())
    return buf.getvalue()


def is_photographic(im: Image.Image) -> bool:
    """Whether an image is a figure of photographs (more than :data:`PHOTO_COLOURS` colours) rather than a plot."""
    return im.convert("RGB").getcolors(PHOTO_COLOURS) is None


def compact_image(data: bytes) -> tuple[str, bytes]:
    """A PNG (or JPEG) re-encoded small: ``("image/jpeg", ...)`` for a photograph (JPEG at :data:`JPEG_QUALITY`),
    ``("image/png", ...)`` for a plot (palette PNG); the input itself when it is a JPEG or palette PNG already,
    or when the new encoding is not smaller."""
    im = Image.open(io.BytesIO(data))
    original = "image/jpeg" if im.format == "JPEG" else "image/png"
    if original == "image/jpeg" or im.mode == "P":  # already compact: JPEG or palette PNG (idempotent)
        return original, data
    mime, new = ("image/jpeg", jpeg_bytes(im)) if is_photographic(im) else ("image/png", palette_png(im))
    return (mime, new) if len(new) < len(data) else (original, data)


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> None:
    """Save ``fig`` for the book, small: ``.jpg`` as a JPEG at :data:`JPEG_QUALITY` (photographs), ``.png`` as a
    palette PNG (plots), stamped with its smallest font size and dpi (:func:`font_metadata`, read back by
    :func:`read_stamp`). Returns nothing, so a notebook cell ending with it shows no value."""
    path = Path(path)
    if path.suffix not in (".jpg", ".png"):
        raise ValueError(f"save_figure writes .jpg (photographs) or .png (plots), not {path.name!r}")
    stamp = font_metadata(fig, dpi)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    im = Image.open(buf)
    path.write_bytes(jpeg_bytes(im, stamp) if path.suffix == ".jpg" else palette_png(im, stamp))


def thumbnail(im: Image.Image, size: int = 64) -> np.ndarray:
    """A grey ``size`` x ``size`` thumbnail in [0, 1], to recognise one figure drawn at two resolutions."""
    return np.asarray(im.convert("L").resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255


def same_figure(a: Image.Image, b: Image.Image, tolerance: float = 0.5) -> float | None:
    """How far apart two renderings of a figure at different resolutions are, or None when they are not the same
    figure: aspect ratios more than 3% apart, or thumbnails whose mean absolute difference exceeds ``tolerance``
    times their mean ink (the same plot drawn at 100 and 120 dpi: at most 0.3; a plot and its mirror image: 0.7)."""
    if abs(a.width / a.height - b.width / b.height) > 0.03 * a.width / a.height:
        return None
    x, y = thumbnail(a), thumbnail(b)
    d = float(np.abs(x - y).mean() / max((2 - x - y).mean() / 2, 1e-3))
    return d if d <= tolerance else None
