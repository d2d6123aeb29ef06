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
# # Training
#
# The paper's three networks (section 4), each trained with Pathak et al.'s recipe for the central mask (Fig. 4)
# and for random blocks (the NSD comparison):
#
# * the 64 CE: the 64×64 context encoder, trained "in a standard way" on the 128×128 photographs downscaled ×½;
# * the 128 CE: the plain 128×128 context encoder, the paper's baseline "CE";
# * the cascade 128 CE: the 128×128 context encoder of the cascade, whose input hole is filled by the frozen,
#   upscaled 64 CE (eq. (1) and (2)).
#
# The reproduction trains the six runs first and then executes this page, which reads them: their
# configuration (`config.json`) and their loss log (`log.jsonl`) beside each checkpoint. Opened on its own, the
# page trains what is missing (a few seconds each with the default `smoke` preset). With several training seeds,
# this page shows the book's first seed only (its number is printed below); every seed's NSD and quality are
# compared on the report page, and the CPU study follows all of them along training.

# %% tags=["parameters", "remove-cell"]
preset = "smoke"  # smoke, cpu or paper: see cce_core.config.PRESETS
data = ["embedded"]  # training images: "embedded", folders, or zips
eval_data = ["embedded"]  # images for the sample inpaintings
runs_dir = "../_build/nbval/runs"  # where the training runs live
seed = 0
device = "auto"

# %% tags=["hide-input"]
import json
import math

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display

from cce_core.checkpoint import load_model, read_log, run_summary
from cce_core.data import load_images, to_float
from cce_core.evaluate import inpaint
from cce_core.glue import glue
from cce_core.masks import central_mask, fill_hole, random_blocks
from cce_core.models import count_parameters
from cce_core.plots import FIG_WIDTH_IN, MASK_NAMES, MODEL_NAMES, eval_images_note, log_axis, show_grid, use_book_style
from cce_core.runs import ensure_run

use_book_style()
MODELS, MASKS = ("ce64", "ce128", "cce128"), ("central", "random_blocks")
runs = {(model, mask): ensure_run(runs_dir, model, mask, preset, data, seed=seed, device=device).parent
        for mask in MASKS for model in MODELS}

# %% [markdown]
# ## The runs
#
# Image samples seen (steps × batch; a run cut by the time limit of a reproduction saw fewer than planned), the
# bottleneck D and the base width of the networks, the training images, and the time of the training loop with
# its throughput (from the log's images/s).

# %% tags=["hide-input", "nbval-ignore-output"] mystnb={"markdown_format": "myst"}
from cce_core.provenance import dirty_warning

rows = pd.DataFrame([run_summary(run) for run in runs.values()])
rows["model"] = rows["model"].map(MODEL_NAMES)
rows["mask"] = rows["mask"].map(MASK_NAMES)
seen = rows["samples"].copy()  # image samples per run, before they are formatted for the table
rows["samples"] = [f"{a:,}" if a == b else f"{a:,} of {b:,}" for a, b in zip(rows["samples"], rows["planned samples"])]
table = rows[["model", "mask", "seed", "samples", "batch", "D", "width", "train seconds", "images/s"]].rename(
    columns={"train seconds": "wall time (s)"})  # few columns: the table fits the page
glue("training_runs", table.style.format({"wall time (s)": "{:.0f}", "images/s": "{:.0f}"}).hide(axis="index"))
print("training data:", "; ".join(rows["data"].astype(str).unique()))
glue("training_samples", f"{int(seen.min()):,}" + ("" if seen.nunique() == 1 else f"–{int(seen.max()):,}"),
     display=False)
g128 = load_model(runs[("ce128", "random_blocks")] / "checkpoint.pt", "cpu")  # this run's 128 CE (its generator)
glue("run_params_g128", count_parameters(g128), display=False)  # against Pathak's 71,124,544 (section 4)
print(f"the 128 CE's generator: {count_parameters(g128):,} parameters")
dirty = [w for run in runs.values() if (w := dirty_warning(json.loads((run / "config.json").read_text())["provenance"]))]
if dirty:  # a run trained from uncommitted code: said on the page
    display(Markdown(dirty[0]))

# %% [markdown]
# ## Loss curves, the CE against the cascade
#
# The discriminator's BCE (`d`), the generator's adversarial BCE (`g_adv`) and its weighted reconstruction loss
# (`g_rec`: the L2 term with the overlap ring weighted 10× for the central mask, the L2 over the whole image for
# random blocks), each averaged over `log_every` steps. The cascade's 128 CE (solid) and the plain 128 CE
# (dashed) share their batches and masks; the 64 CE (dotted) works at half the resolution. The reconstruction
# loss is on a log axis.

# %% tags=["hide-input"] mystnb={"image": {"alt": "Six line plots of training losses against step: the discriminator's loss, the generator's adversarial loss and its reconstruction loss on a log axis, for the central mask on the left and random blocks on the right, one line per model"}, "figure": {"caption": "Training curves of the book's first seed: look for whether D's loss falls while G's adversarial loss rises (the discriminator winning) and whether the reconstruction loss still falls at the end of training."}}
logs = {key: pd.DataFrame(read_log(run)) for key, run in runs.items()}
style = {"ce64": ":", "ce128": "--", "cce128": "-"}
fig, axes = plt.subplots(3, 2, figsize=(FIG_WIDTH_IN, 7.6), sharex="col")
for col, mask in enumerate(MASKS):
    for row, (key, title) in enumerate([("d", "D"), ("g_adv", "G adversarial"), ("g_rec", "G reconstruction")]):
        ax = axes[row, col]
        for model in MODELS:
            log = logs[(model, mask)]
            ax.plot(log["step"], log[key], style[model], label=MODEL_NAMES[model])
        ax.set_title(f"{title}, {MASK_NAMES[mask]}")
        if key == "g_rec":
            log_axis(ax)
            ax.set_xlabel("step")
axes[0, 0].legend()
plt.show()

# %% tags=["hide-input"]
last = rows.set_index("run")
d_lo, d_hi = last["last d"].min(), last["last d"].max()
adv_lo, adv_hi = last["last g_adv"].min(), last["last g_adv"].max()
wtl2 = {json.loads((run / "config.json").read_text())["config"]["wtl2"] for run in runs.values()}
assert len(wtl2) == 1, f"the runs weight the reconstruction loss differently: {wtl2}"
wtl2 = wtl2.pop()  # Pathak's weight of the reconstruction term (0.999)
share = ((1 - wtl2) * last["last g_adv"] / ((1 - wtl2) * last["last g_adv"] + last["last g_rec"])).max()
for name, value in {"train_d_lo": d_lo, "train_d_hi": d_hi, "train_adv_lo": adv_lo, "train_adv_hi": adv_hi,
                    "train_fake_real_hi": math.exp(-adv_lo), "train_adv_share": 100 * share,
                    "train_adv_weight": 1 - wtl2}.items():
    glue(name, value, display=False)
display(Markdown(
    f"At the end of training (mean of the last three log records) D's loss is {d_lo:.2f}–{d_hi:.2f} and G's "
    f"adversarial loss {adv_lo:.2f}–{adv_hi:.2f} across the six runs. G's adversarial loss is −log of the "
    f"probability D gives an inpainting of being real, so D calls the inpaintings real with probability at most "
    f"{math.exp(-adv_lo):.3f}: where D's loss is low and G's adversarial loss high, D wins the game. G barely feels "
    f"it, because the recipe weights the adversarial term by 1 − wtl2 = {1 - wtl2:g}: it is at most "
    f"{100 * share:.1f}% of G's loss, and the reconstruction loss drives the training. The inpaintings below are "
    f"therefore what an L2-trained network draws: the mean of the plausible fills, blurred."))

# %% [markdown]
# ## Sample inpaintings
#
# The first six images of `eval_data` (whether they are held out from the training images is printed below,
# from the run's parameters), for each mask strategy: the original, the network's input, and the three
# networks' inpaintings (the 64 CE's upscaled ×2 for display).

# %% tags=["hide-input"] mystnb={"image": {"alt": "Grids of six evaluation photographs: the original row, the masked input row, and one row of inpaintings for each of the 64 CE, the 128 CE and the cascade"}, "figure": {"caption": "Sample inpaintings of the first seed's networks on held-out images, one grid per mask strategy: compare the fills of the CE and the cascade row by row with the original."}}
print("evaluation images:", eval_images_note(data, eval_data))
images = load_images(eval_data, limit=6, embedded_count=6, seed=seed + 1000, progress=False).images[:6]
for mask in MASKS:
    masks = (central_mask(len(images)) if mask == "central"
             else random_blocks(len(images), generator=torch.Generator().manual_seed(seed)))
    shown = [to_float(images), fill_hole(to_float(images), masks)]
    for model in MODELS:
        out = inpaint(load_model(runs[(model, mask)]), images, masks)
        shown.append(torch.nn.functional.interpolate(out, scale_factor=2, mode="nearest") if model == "ce64" else out)
    fig, axes = plt.subplots(len(shown), len(images), figsize=(FIG_WIDTH_IN, 1.2 * len(shown) + 0.4))
    show_grid(list(torch.cat(shown)), axes=axes)
    for ax, label in zip(axes[:, 0], ["original", "input"] + [MODEL_NAMES[m].replace("cascade ", "cascade\n")
                                                              for m in MODELS]):
        ax.set_ylabel(label)
    fig.suptitle(MASK_NAMES[mask])
    plt.show()
