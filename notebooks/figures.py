# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The paper's figures, regenerated
#
# Every figure of the paper drawn again from our trained models and real photographs (whether they are held
# out from the training images is printed below, from this run's parameters):
#
# * **Fig. 1**: the cascade pipeline (section 4.2, steps (i) to (iv)) with the real image at every stage;
# * **Fig. 2**: made real: the latent codes $E(P, M_i)$ of a few images under many masks, projected to 2-D, for
#   the CE beside the cascade (the paper's figure is a hypothetical sketch);
# * **Fig. 3**: one image under several masks, each with its distance $\lVert E(P, M_i) - \bar Z\rVert^2/D$ to the
#   image's mean code, in the headline's reading (codes BN-normalised, as on the NSD page);
# * **Fig. 4**: original, input, CE and cascade, for the central mask and for random blocks: the images on which
#   each model does best relative to the other (largest lead in squared error over the hole, our rule: the paper
#   does not say how it picked them), and random picks.

# %% tags=["parameters", "remove-cell"]
preset = "smoke"
data = ["embedded"]
eval_data = ["embedded"]
k = 16  # images to pick Fig. 4's examples from
n = 24  # masks for Fig. 2 and 3
seed = 0
device = "auto"
runs_dir = "../_build/nbval/runs"
fig_dir = "../_build/nbval/figures"

# %% tags=["hide-input"]
import json
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from cce_core.checkpoint import load_model
from cce_core.data import EVAL_CROPS, load_images, to_float
from cce_core.evaluate import cascade_stages, code_scale, codes, eval_masks, hole_mse, inpaint, project_2d
from cce_core.glue import glue
from cce_core.masks import central_mask, fill_hole
from cce_core.plots import (
    FIG_WIDTH_IN,
    eval_images_note,
    image_grid,
    pick_examples,
    save_figure,
    show_grid,
    use_book_style,
)
from cce_core.provenance import provenance, resolve_device
from cce_core.runs import ensure_run

use_book_style()
Path(fig_dir).mkdir(parents=True, exist_ok=True)
dev = resolve_device(device)


def save(fig, name):
    """Save a figure for the book's numbered figures (photographs as .jpg, plots as .png), stamped with its
    smallest font size (the book's convention)."""
    save_figure(fig, Path(fig_dir) / name)


# %% tags=["nbval-ignore-output"]
models = {(m, mk): load_model(ensure_run(runs_dir, m, mk, preset, data, seed=seed, device=device), dev)
          for mk in ("random_blocks", "central") for m in ("ce128", "cce128")}
images = load_images(eval_data, limit=k, embedded_count=k, seed=seed, purpose=EVAL_CROPS, progress=False).images
masks = eval_masks("random_blocks", max(n, len(images)), seed=seed)
note = eval_images_note(data, eval_data)
glue("figures_eval_note", note, display=False)
print(f"{len(images)} evaluation images ({note}), {len(masks)} random-block masks")

# %% [markdown]
# ## Fig. 1: the cascade, stage by stage
#
# Steps (i) to (iv) of section 4.2 for the central mask (top two rows) and for random blocks (bottom two rows).

# %% mystnb={"image": {"alt": "Fig. 1: two rows of six panels, one per mask strategy, showing a photograph passing through the trained cascade stage by stage"}, "figure": {"caption": "Fig. 1 redrawn with the trained cascade: the masked input, the 64 CE's coarse fill at half resolution, the fill upscaled into the hole, and the 128 CE's final inpainting."}}
fig, axes = image_grid(4, 3, size=FIG_WIDTH_IN / 3, title="Fig. 1: the cascade, stage by stage")
for row, mk in enumerate(("central", "random_blocks")):
    mask = central_mask(1)[0] if mk == "central" else masks[0]
    stages = cascade_stages(models[("cce128", mk)], images[0], mask)
    show_grid(list(stages.values()), [textwrap.fill(t, 18) for t in stages], axes=axes[2 * row:2 * row + 2].ravel())
save(fig, "fig1_pipeline.jpg")

# %% [markdown]
# ## Fig. 2: latent codes of the same image under different masks
#
# For four images, the codes under $n$ random-block masks, projected on the first two principal components of
# these codes. Each dimension is first divided by its spread over the codes drawn here (the scaling of the NSD
# page's *eval-standardised* reading, on these four images), so that a few wide dimensions do not take both axes;
# the headline's BN-normalised reading divides by BatchNorm's running variance instead, a scale fitted in
# training. The tighter each image's cloud relative to the spread between images, the smaller the NSD.

# %% mystnb={"image": {"alt": "Fig. 2: two scatter plots, CE and cascade, of four images' codes under many masks projected on two principal components, one colour per image"}, "figure": {"caption": "Fig. 2 redrawn: each colour is one image under many masks. The tighter each cloud compared with the distance between clouds, the lower the NSD."}}
picked = images[:4]
fig, axes = plt.subplots(1, 2, figsize=(FIG_WIDTH_IN, 4.0))
for ax, (m, title) in zip(axes, [("ce128", "CE"), ("cce128", "cascade CE")]):
    z = torch.cat([codes(models[(m, "random_blocks")], img, masks[:n]) for img in picked])
    xy = project_2d(z).view(len(picked), n, 2)
    for j in range(len(picked)):
        ax.scatter(xy[j, :, 0], xy[j, :, 1], s=12, label=f"image {j}")
    ax.set(title=title, xlabel="PC 1", ylabel="PC 2")
axes[0].legend()
fig.suptitle(f"Fig. 2: $E(P, M_i)$ of {len(picked)} images, each under {n} masks")
save(fig, "fig2_latent.png")

# %% [markdown]
# ## Fig. 3: one image, several masks, and each mask's distance to the mean code
#
# In the headline's reading: each code divided by the bottleneck BatchNorm's $\sqrt{\sigma^2_{\mathrm{run}} + \epsilon}$
# (BN-normalised, as on the NSD page), so the mean of these distances over the $n$ masks is this image's NSD on
# the same scale as the paper's 0.79 and 0.56. $\bar Z$ is the image's mean code over all $n$ masks; the first four
# masks are shown.

# %% mystnb={"image": {"alt": "Fig. 3: rows of masked versions of one image, each titled with the distance of its code from the image's mean code, for the CE and the cascade"}, "figure": {"caption": "Fig. 3 redrawn: the same image under different masks, each with the distance of its code from the mean code; small, similar distances mean a code that ignores the mask."}}
shown_masks = 4
fig, axes = image_grid(2, shown_masks, size=FIG_WIDTH_IN / shown_masks,
                       title="Fig. 3: $\\|E(P, M_i) - \\bar{Z}\\|^2/D$, BN-normalised")
img = images[1]
image_nsd = {}
for row, (m, title) in enumerate([("ce128", "CE"), ("cce128", "cascade")]):
    z = codes(models[(m, "random_blocks")], img, masks[:n]).double() / code_scale(models[(m, "random_blocks")])
    dist = ((z - z.mean(0)) ** 2).sum(1) / z.shape[1]
    image_nsd[title] = float(dist.mean())
    shown = fill_hole(to_float(img[None]).expand(shown_masks, -1, -1, -1), masks[:shown_masks])
    show_grid(list(shown), [f"{title}: {float(d):.3f}" for d in dist[:shown_masks]], axes=axes[row])
save(fig, "fig3_distances.jpg")
print(f"this image's NSD (mean over the {n} masks, BN-normalised): "
      + ", ".join(f"{t} {v:.3f}" for t, v in image_nsd.items()))

# %% [markdown]
# ## Fig. 4: inpaintings of the CE and of the cascade
#
# For each mask strategy, among the `k` evaluation images: the two where the CE's hole error is lowest relative
# to the cascade's, the two where the cascade leads most, and two random ones. Columns: original, input, CE,
# cascade; the hole MSE (in the [-1, 1] scale) in brackets.

# %% mystnb={"image": {"alt": "Fig. 4: grids of example images with the original, the masked input, the CE's inpainting and the cascade's inpainting side by side"}, "figure": {"caption": "Fig. 4 redrawn: original, input, the CE's and the cascade's inpaintings of the same images and masks, to compare the fills by eye."}}
for mk in ("central", "random_blocks"):
    m = central_mask(len(images)) if mk == "central" else masks[: len(images)]
    out = {name: inpaint(models[(name, mk)], images, m) for name in ("ce128", "cce128")}
    err = {name: hole_mse(out[name], images, m) for name in out}
    lead = err["cce128"] - err["ce128"]  # > 0 where the CE does better
    picks = pick_examples(lead, per_group=2, seed=seed)  # each image at most once
    assert len({i for _, i in picks}) == len(picks)
    fig, axes = image_grid(len(picks), 4, size=FIG_WIDTH_IN / 4, title=f"Fig. 4 ({mk}): hole MSE in brackets")
    for row, (why, i) in enumerate(picks):
        x = to_float(images[i:i + 1])
        show_grid([x[0], fill_hole(x, m[i:i + 1])[0], out["ce128"][i], out["cce128"][i]],
                  ["original", "input", f"CE ({err['ce128'][i]:.3f})", f"cascade ({err['cce128'][i]:.3f})"],
                  axes=axes[row])
        axes[row, 0].set_ylabel(why)
    save(fig, f"fig4_{mk}.jpg")
    print(f"{mk}: mean hole MSE CE {err['ce128'].mean():.4f}, cascade {err['cce128'].mean():.4f} over {len(images)} "
          f"images; the cascade is lower on {int((lead < 0).sum())} of them")

# %% [markdown]
# ## Provenance

# %% tags=["nbval-ignore-output"] mystnb={"markdown_format": "myst"}
from IPython.display import Markdown, display

from cce_core.provenance import dirty_warning

prov = provenance(dev)
if dirty_warning(prov):  # made from uncommitted code: said on the page
    display(Markdown(dirty_warning(prov)))
print(json.dumps({"preset": preset, "seed": seed, "eval_data": [Path(d).name for d in eval_data], "k": len(images), **prov}, indent=1))
