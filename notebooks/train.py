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
# # Training the {glue:text}`model_name`, {glue:text}`mask_name`
#
# This notebook trains one of the paper's three networks (section 4) with Pathak et al.'s recipe and shows
# how it learnt:
#
# * `ce64`: the 64×64 context encoder, trained "in a standard way" on the 128×128 photographs downscaled ×½;
# * `ce128`: the plain 128×128 context encoder, the paper's baseline "CE";
# * `cce128`: the 128×128 context encoder of the cascade, whose input hole is filled by the frozen, upscaled
#   64×64 CE (eq. (1) and (2)).
#
# The reproduction (`python -m cce_core reproduce`) runs it six times with papermill: the three models, for the
# central mask (Fig. 4) and for random blocks (the NSD comparison). The parameters of this run are in the cell
# below.

# %% tags=["parameters", "remove-cell"]
model = "ce128"  # ce64 | ce128 | cce128
mask = "random_blocks"  # central | random_blocks | random_region
preset = "smoke"  # smoke, cpu or paper: see cce_core.config.PRESETS
data = ["embedded"]  # training images: "embedded", folders, or zips such as ../../shared/data/photos128/train-00.zip
eval_data = ["embedded"]  # images for the sample inpaintings
runs_dir = "../_build/nbval/runs"  # where the training runs live
seed = 0
device = "auto"

# %% tags=["hide-input"]
import json

import matplotlib.pyplot as plt
import pandas as pd
import torch

from cce_core.checkpoint import load_model, read_log
from cce_core.data import EVAL_CROPS, load_images, to_float
from cce_core.evaluate import inpaint
from cce_core.glue import glue
from cce_core.masks import central_mask, fill_hole, random_blocks
from cce_core.plots import MASK_NAMES, MODEL_NAMES, eval_images_note, show_grid
from cce_core.runs import ensure_run

glue("model_name", MODEL_NAMES[model], display=False)  # the page title names the model and the mask
glue("mask_name", MASK_NAMES[mask], display=False)

# %% [markdown]
# ## Train
#
# The 64 CE must exist before the cascade can be trained, so for `cce128` the 64 CE of the same mask strategy is
# trained first if its run is missing. A run that is already complete is reused, an interrupted one resumed.

# %% tags=["nbval-ignore-output"]
checkpoint = ensure_run(runs_dir, model, mask, preset, data, seed=seed, device=device)
run = checkpoint.parent
meta = json.loads((run / "config.json").read_text())
cfg = meta["config"]
print(f"run: {run.name}")

# %% [markdown]
# ## Configuration and provenance
#
# Everything that defines the run, as written next to its checkpoint (`config.json`).

# %% tags=["nbval-ignore-output"]
keys = ["model", "mask", "preset", "steps", "batch_size", "bottleneck", "width", "variant", "lr_g", "lr_d",
        "beta1", "wtl2", "overlap_weight", "full_known_weight", "upscale", "seed", "mask_generator", "fast",
        "planned_steps"]
table = pd.DataFrame({"value": [str(cfg.get(k)) for k in keys]}, index=keys)
samples = cfg["steps"] * cfg["batch_size"]
print(f"data: {meta['data']['description']} ({meta['data']['images']} images, skipped {meta['data']['skipped']})")
cut = f", cut by its time limit from {cfg['planned_steps'] * cfg['batch_size']:,} planned" if cfg.get("planned_steps") else ""
print(f"image samples seen: {samples:,}{cut} (Pathak's recipe: about 7.5 M)")
print("provenance:", meta["provenance"])
table

# %% [markdown]
# ## Loss curves
#
# The discriminator's BCE (`d`), the generator's adversarial BCE (`g_adv`) and its weighted reconstruction loss
# (`g_rec`, the L2 term with the overlap ring weighted 10×; for full-image models, the L2 over the image), each
# averaged over `log_every` steps.

# %%
log = pd.DataFrame(read_log(run))
fig, axes = plt.subplots(1, 3, figsize=(12, 3))
for ax, key in zip(axes, ["d", "g_adv", "g_rec"]):
    ax.plot(log["step"], log[key])
    ax.set_title(key)
    ax.set_xlabel("step")
axes[2].set_yscale("log")
fig.tight_layout()
first, last = float(log["g_rec"].iloc[:3].mean()), float(log["g_rec"].iloc[-3:].mean())
glue("rec_first", first, display=False)
glue("rec_last", last, display=False)
print(f"reconstruction loss: {first:.4f} over the first 3 records -> {last:.4f} over the last 3")
assert log[["d", "g_adv", "g_rec"]].notna().all().all()

# %% [markdown]
# ## Sample inpaintings
#
# The first eight images of `eval_data`. Whether they are held out from the training images is decided from the
# run's parameters and printed below: with the embedded default they are other random crops of the training
# photographs, so only a sanity check.

# %%
print("evaluation images:", eval_images_note(data, eval_data))
g = load_model(run)
images = load_images(eval_data, limit=8, embedded_count=8, seed=seed, purpose=EVAL_CROPS, progress=False).images[:8]
masks = central_mask(len(images)) if mask == "central" else random_blocks(len(images), generator=torch.Generator().manual_seed(seed))
out = inpaint(g, images, masks)
if model == "ce64":  # show the 64 CE's result at its own resolution, upscaled for display
    out = torch.nn.functional.interpolate(out, scale_factor=2, mode="nearest")
shown = torch.cat([to_float(images), fill_hole(to_float(images), masks), out])
axes = show_grid(list(shown), ncols=len(images), size=1.6)
for ax, label in zip(axes[:: len(images)], ["original", "input", model]):
    ax.set_ylabel(label)
plt.show()
