# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Region masks on real photographs
#
# Section 4.3 of the paper {cite}`zielinski2018cascade` drops regions from the input image in two ways. The
# first is a **central region**, the central square of the image. The second is **random blocks**, several
# smaller, possibly overlapping rectangles "covering up to 1/4 of the image". Pathak et al.
# {cite}`pathak2016context` also train with **random regions**, thresholded smooth noise. This page draws all
# three with `cce_core.masks` on real photographs.
#
# A mask is a tensor of shape $(B, 1, S, S)$ with **1 on the missing pixels** (the paper's $M$) and 0 on the
# known ones. `fill_hole` builds the context encoder's input: known pixels are kept and missing ones are
# set to Pathak's per-channel constants (the mean colour of ImageNet).

# %% tags=["parameters", "remove-cell"]
data = "embedded"    # for load_images: "embedded", a directory, a .zip, or a list of them
n_photos = 6         # photographs shown
n_coverage = 2000    # masks drawn for the coverage histograms
pattern_size = 2000  # side of random_region's noise pattern (Pathak: 10000), for speed
seed = 0

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F

from cce_core.cascade import downscale, downscale_mask
from cce_core.data import load_images, to_float
from cce_core.glue import glue
from cce_core.masks import (
    PATHAK_FILL,
    center_box,
    central_mask,
    coverage,
    default_overlap,
    fill_hole,
    random_blocks,
    random_region,
)
from cce_core.plots import FIG_WIDTH_IN, draw_box, mask_to_image, show_grid, use_book_style

sns.set_theme(style="whitegrid")
use_book_style()  # after seaborn's theme: the book's font sizes win

# %% [markdown]
# The photographs come from `cce_core.data.load_images`. With the default `data = "embedded"`, they are
# random 128×128 crops of the colour photographs that ship with scikit-image, one per photograph, so this page
# needs no download. To draw the masks on other images, set `data` to a directory or a `.zip` of images (for
# example one of the `photos128` shards).

# %%
photos = load_images(data, limit=n_photos, embedded_count=n_photos, seed=seed,
                     progress=False)
images = to_float(photos.images)  # (N, 3, 128, 128) in [-1, 1]
labels = [name.split(":")[-1].split("#")[0].replace("_", " ") for name in photos.names]  # "astronaut#0": "astronaut"
print(photos.description)
print("images:", tuple(images.shape), images.dtype)
print("names:", ", ".join(photos.names))

# %% [markdown]
# ## Central region
#
# A context encoder for central masks predicts the central 64×64 block $[32, 96)^2$ of a 128×128 image. As in
# Pathak's code, the hole is smaller than that block by an *overlap* ring of 4 pixels, so the hole is
# $[36, 92)^2$. The network also predicts the ring, where the true pixels are known, and Pathak's code weights
# the reconstruction loss there ×10, which makes the prediction blend into the border.

# %%
m128 = central_mask(1, 128)
rows, cols = m128[0, 0].nonzero(as_tuple=True)
print("predicted block (center_box):", center_box(128), " overlap:", default_overlap(128))
print(f"hole: rows [{int(rows.min())}, {int(rows.max()) + 1}),",
      f"columns [{int(cols.min())}, {int(cols.max()) + 1})")
print(f"coverage: {float(coverage(m128)):.4f}  (= 56^2 / 128^2)")

# %% mystnb={"image": {"alt": "Three photographs above, each below with its central 56 by 56 pixel hole filled grey, the predicted 64 by 64 block outlined in yellow and the hole in red"}, "figure": {"caption": "The central mask: the network predicts the yellow block and sees the grey hole; the 4-pixel ring between the two outlines is known to the network but predicted too, and weighted 10x in the loss."}}
masked = fill_hole(images, central_mask(len(images), 128))
fig, grid = plt.subplots(2, 3, figsize=(FIG_WIDTH_IN, 0.72 * FIG_WIDTH_IN), layout="constrained")
axes = show_grid(torch.cat([images[:3], masked[:3]]), axes=grid, titles=labels[:3] + ["its CE input"] * 3)
for ax in axes[3:]:
    draw_box(ax, *center_box(128), color="yellow", linestyle="--",
             label="predicted block [32, 96)")
    draw_box(ax, 36, 92, color="red", label="hole [36, 92)")
fig.legend(*axes[3].get_legend_handles_labels(), loc="outside lower center", ncols=2, framealpha=0.9)
plt.show()

# %% [markdown]
# The grey fill is `PATHAK_FILL`, Pathak's constants $2 \cdot (117, 104, 123)/255 - 1$:

# %%
print("PATHAK_FILL:", tuple(round(v, 4) for v in PATHAK_FILL))

# %% [markdown]
# ## Random blocks
#
# The paper gives only "smaller possibly overlapping masks, covering up to 1/4 of the image". `random_blocks`
# makes this concrete, as documented in its docstring. It draws a target coverage between 10% and 25%, then
# adds rectangles with sides of 16 to 32 pixels at even positions until the target is reached. It never lets
# the union of the rectangles exceed 1/4 of the image.

# %% mystnb={"image": {"alt": "Six photographs, each with several grey rectangles of random size and position, titled with the fraction of the image they cover"}, "figure": {"caption": "Random blocks: rectangles of 16 to 32 pixels until a coverage between 10% and 25% is reached; no mask hides more than a quarter of the image."}}
g = torch.Generator().manual_seed(seed)
blocks = random_blocks(len(images), generator=g)
show_grid(fill_hole(images, blocks), ncols=3, size=FIG_WIDTH_IN / 3,
          titles=[f"coverage {c:.1%}" for c in coverage(blocks).tolist()])
plt.show()

# %% [markdown]
# ## Random regions (Pathak)
#
# Pathak's `train_random.lua` builds one large pattern: uniform noise at resolution `res` = 0.06 (one noise
# cell every $1/0.06 \approx 17$ pixels), upsampled bicubically and thresholded at `density` = 0.25. Each mask
# is a 128×128 crop of this pattern whose coverage lies strictly between 20% and 30%. Pathak's pattern is
# 10000×10000 pixels. Here it is `pattern_size` = 2000 pixels on a side, because building the large one takes
# time and memory. The blob scale stays the same, but there are fewer distinct crops. In training, Pathak uses
# one mask for the whole batch (`per_batch=True`). Here each photograph gets its own mask (`per_batch=False`).

# %% mystnb={"image": {"alt": "Six photographs, each with grey irregular blobs cut from a thresholded noise pattern, titled with their coverage"}, "figure": {"caption": "Pathak's random regions: crops of one smooth noise pattern thresholded at 0.25, each keeping a coverage strictly between 20% and 30%."}}
regions = random_region(len(images), generator=g, per_batch=False,
                        pattern_size=pattern_size)
show_grid(fill_hole(images, regions), ncols=3, size=FIG_WIDTH_IN / 3,
          titles=[f"coverage {c:.1%}" for c in coverage(regions).tolist()])
plt.show()

# %% [markdown]
# ## Coverage distributions
#
# How much of the image is missing? We draw `n_coverage` masks of each random strategy. The central mask
# always covers $56^2/128^2 \approx 19.1\%$.

# %%
g = torch.Generator().manual_seed(seed)
cov = pd.DataFrame({
    "random_blocks": coverage(random_blocks(n_coverage, generator=g)).numpy(),
    "random_region": coverage(random_region(n_coverage, generator=g, per_batch=False,
                                            pattern_size=pattern_size)).numpy(),
})
summary = cov.describe(percentiles=[0.5]).T[["min", "mean", "50%", "max"]]
summary["share above 1/4"] = (cov > 0.25).mean()
assert cov["random_blocks"].max() <= 0.25                   # the paper's "up to 1/4"
assert cov["random_region"].between(0.20, 0.30, inclusive="neither").all()
summary.round(4)

# %% mystnb={"image": {"alt": "Two histograms of mask coverage, random blocks on the left and random regions on the right, with a dashed line at one quarter and a dotted line at the central mask's coverage"}, "figure": {"caption": "Coverage of many masks of each strategy: the random blocks never pass the dashed quarter line (the paper's limit); the random regions sit between 20% and 30%."}}
fig, axes = plt.subplots(1, 2, figsize=(FIG_WIDTH_IN, 3.4), sharey=True)
for ax, kind, color in zip(axes, cov.columns, ("tab:blue", "tab:green")):
    sns.histplot(cov[kind], bins=40, binrange=(0.08, 0.32), ax=ax, color=color)
    ax.axvline(0.25, color="red", lw=2, ls="--", label="1/4 of the image")
    ax.axvline(float(coverage(m128)), color="black", lw=1, ls=":", label="central mask")
    ax.set(title=kind.replace("_", " "), xlabel="coverage (fraction missing)")
axes[0].legend()
fig.suptitle(f"{n_coverage} masks of each strategy")
plt.show()

# %% [markdown]
# `random_blocks` never goes above 1/4, as the paper requires. Pathak's random regions do: their coverage
# lies between 20% and 30%, and a sizeable share of them is above 1/4. The paper's "up to 1/4" therefore
# describes its own random blocks, not Pathak's region masks.

# %% [markdown]
# ## The cascade's 2× downscale of a mask
#
# The cascade (section 4.2) hands a half-size copy of the masked image to the 64×64 context encoder:
# $\searrow \bar M \odot \searrow P$ in eq. (1). The downscaled mask must not *leak*. A 64-pixel that covers
# even one missing 128-pixel has to be missing too, or the 64 CE would see a value that mixes in hidden
# content. `cce_core.cascade.downscale_mask` max-pools the mask. `downscale` average-pools the image
# *after* the hole has been zeroed, so no hidden pixel reaches the 64 CE at all.
#
# For comparison we also take the naive nearest-neighbour downscale, which keeps one of every four pixels. On
# a random-region mask, whose edges do not fall on even pixels, it misses part of the hole:

# %%
m = regions[:1]            # one random-region mask, shape (1, 1, 128, 128)
safe = downscale_mask(m)   # max-pool: missing if any of its 4 pixels is missing
naive = F.interpolate(m, scale_factor=0.5, mode="nearest")  # top-left pixel of each 2x2 cell
covers = F.interpolate(safe, scale_factor=2, mode="nearest") >= m
leaks = int((safe - naive).sum())
assert bool(covers.all())
print(f"128 mask: {int(m.sum())} missing pixels;",
      f"64 mask (max-pool): {int(safe.sum())} missing pixels")
print(f"the max-pooled mask covers every missing 128-pixel: {bool(covers.all())}")
print(f"cells a nearest-neighbour downscale would wrongly show as known: {leaks}")

# %% mystnb={"image": {"alt": "Five panels: a random-block mask at 128 pixels, the same mask max-pooled to 64 pixels, a map of the cells a nearest-neighbour downscale would leak in red, the 128 input and the 64 CE's input"}, "figure": {"caption": "Why the cascade downscales the mask by max-pooling: every cell holding a missing pixel stays missing at 64 pixels, while a nearest-neighbour downscale would show some hidden pixels to the 64 CE (red cells)."}}
small_input = fill_hole(downscale(images[:1] * (1 - m)), safe)  # what the 64 CE sees
# RGB: white where both downscales hide the cell, red where only the max-pool does (a leak)
leak_map = torch.stack([safe[0, 0], naive[0, 0], naive[0, 0]]) * 2 - 1
show_grid([mask_to_image(m[0]), mask_to_image(safe[0]), leak_map,
           fill_hole(images[:1], m)[0], small_input[0]],
          titles=["mask at 128", "max-pooled to 64", "nearest: leaks\nin red",
                  "128 input", "64 CE input"],
          ncols=3, size=FIG_WIDTH_IN / 3)
plt.show()

# %% [markdown]
# Central masks and `random_blocks` sit on even pixels (`align=2`), so for them the two downscales agree. The
# 128 central hole $[36, 92)^2$ becomes exactly the 64 central hole $[18, 46)^2$:

# %%
central_ok = torch.equal(downscale_mask(central_mask(1, 128)), central_mask(1, 64))
blocks_ok = torch.equal(downscale_mask(blocks),
                        F.interpolate(blocks, scale_factor=0.5, mode="nearest"))
assert central_ok and blocks_ok
print("downscale_mask(central 128) == central 64:", central_ok)
print("random_blocks: max-pool == nearest:", blocks_ok)

# %% tags=["remove-cell", "nbval-ignore-output"]
glue("masks_central_coverage", float(coverage(m128)), display=False)
glue("masks_blocks_max_coverage", float(cov["random_blocks"].max()), display=False)
glue("masks_blocks_mean_coverage", float(cov["random_blocks"].mean()), display=False)
glue("masks_region_mean_coverage", float(cov["random_region"].mean()), display=False)
glue("masks_region_share_above_quarter", float((cov["random_region"] > 0.25).mean()),
     display=False)
glue("masks_naive_leaks", leaks, display=False)
