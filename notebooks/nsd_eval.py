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
# # NSD: the cascade against the plain context encoder
#
# The paper's quantitative claim (section 5): "NSD for our approach equals 0.56 ± 0.17, while for standard CE it
# equals 0.79 ± 0.17 (for k = 250 randomly chosen images and n = 100 randomly chosen masks)". This notebook
# measures both on held-out images with the estimator of section 3,
#
# $$\mathrm{NSD}(E; (P_j)_j, (M_i)_i) = \frac{1}{Dnk}\sum_{j=1}^{k}\sum_{i=1}^{n}\lVert E(P_j, M_i) - \bar Z_j\rVert^2,
# \qquad \bar Z_j = \frac1n\sum_i E(P_j, M_i),$$
#
# where $E(P, M)$ is the $D$-dimensional output of the bottleneck convolution of the 128×128 CE (for the cascade:
# of its 128×128 CE, fed the cascade input of eq. (1)). The same $n$ random-block masks are used for every image
# and both models, so the comparison is paired.
#
# Two versions are reported: **raw**, the formula as written, and **standardised**, each code dimension divided
# by its standard deviation over all $kn$ codes (see the NSD theory chapter for why: the raw value depends on the
# arbitrary scale of a convolution that BatchNorm follows).

# %% tags=["parameters"]
preset = "smoke"
data = ["embedded"]  # training images (to train the models if their runs are missing)
eval_data = ["embedded"]  # the k NSD images: ../../shared/data/photos128/eval-imagenet250.zip in the paper run
ood_data = None  # out-of-distribution NSD images (e.g. eval-bsds100.zip), or None
k = 8  # images (the paper: 250)
n = 10  # masks (the paper: 100)
mask = "random_blocks"
seed = 0
device = "auto"
runs_dir = "../_build/nbval/runs"
fig_dir = "../_build/nbval/figures"
metrics_path = "../_build/nbval/metrics.json"

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from cce_core.glue import glue

from cce_core.data import load_images
from cce_core.evaluate import eval_masks, model_nsd
from cce_core.nsd import bootstrap_ci, paired_comparison
from cce_core.provenance import provenance, resolve_device
from cce_core.report import PAPER, verdict_lower, verdict_value
from cce_core.reproduce import ensure_run, run_name
from cce_core.train import load_model

Path(fig_dir).mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## The models, the images and the masks

# %%
# NBVAL_IGNORE_OUTPUT
dev = resolve_device(device)
checkpoints = {m: ensure_run(runs_dir, m, mask, preset, data, seed=seed, device=device) for m in ("ce64", "ce128", "cce128")}
models = {m: load_model(c, dev) for m, c in checkpoints.items()}
run_cfg = json.loads((checkpoints["ce128"].parent / "config.json").read_text())
samples = run_cfg["config"]["steps"] * run_cfg["config"]["batch_size"]


def eval_set(source):
    """The first k images of an evaluation source (embedded crops use another seed than training)."""
    return load_images(source, limit=k, embedded_count=k, seed=seed + 1000, progress=False)


images = eval_set(eval_data)
masks = eval_masks(mask, n, seed=seed)
print(f"{len(images)} images from {images.description}; {n} masks ({mask}, seed {seed}); device {dev}")
print(f"training: preset {preset}, {samples:,} image samples per model, data {run_cfg['data']['description']}")

# %% [markdown]
# ## NSD of each model

# %%
# NBVAL_IGNORE_OUTPUT
results = {m: model_nsd(models[m], images.images, masks, progress=False) for m in ("ce128", "cce128", "ce64")}

# %%
rows = []
for m, label in [("ce128", "CE (128)"), ("cce128", "cascade CE"), ("ce64", "64 CE alone")]:
    r = results[m]
    rows.append({"model": label, "NSD raw": f"{r.raw.mean:.3f} ± {r.raw.std:.3f}",
                 "NSD standardised": f"{r.standardized.mean:.3f} ± {r.standardized.std:.3f}",
                 "paper": {"ce128": "0.79 ± 0.17", "cce128": "0.56 ± 0.17"}.get(m, "—"),
                 "D": r.raw.dims, "k": r.raw.k, "n": r.raw.n})
nsd_table = pd.DataFrame(rows).set_index("model")
glue("nsd_table", nsd_table, display=False)
nsd_table

# %% [markdown]
# ## Paired comparison
#
# Per image, NSD of the cascade minus NSD of the CE, with a 95% bootstrap interval of the mean (images resampled)
# and a paired sign-flip permutation test.

# %%
comparisons = {}
for kind in ("raw", "standardized"):
    a, b = getattr(results["ce128"], kind), getattr(results["cce128"], kind)
    comparisons[kind] = paired_comparison(a, b, seed=seed)
    print(f"{kind:>12}: {comparisons[kind]}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
for ax, kind in zip(axes[:2], ("raw", "standardized")):
    frame = pd.DataFrame({"CE": getattr(results["ce128"], kind).per_image,
                          "cascade": getattr(results["cce128"], kind).per_image}).melt(var_name="model", value_name="NSD")
    sns.histplot(frame, x="NSD", hue="model", kde=True, ax=ax, element="step")
    ax.set_title(f"per-image NSD, {kind}")
ce_s, cce_s = results["ce128"].standardized.per_image, results["cce128"].standardized.per_image
axes[2].scatter(ce_s, cce_s, s=8)
lim = [min(ce_s.min(), cce_s.min()), max(ce_s.max(), cce_s.max())]
axes[2].plot(lim, lim, "k--", lw=1)
axes[2].set(xlabel="CE (standardised)", ylabel="cascade (standardised)", title="paired, per image")
fig.tight_layout()
fig.savefig(Path(fig_dir) / "nsd_distributions.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## Out-of-distribution images

# %%
# NBVAL_IGNORE_OUTPUT
ood = None
if ood_data:
    ood_images = eval_set(ood_data)
    ood = {m: model_nsd(models[m], ood_images.images, masks, progress=False) for m in ("ce128", "cce128")}
    for m in ood:
        print(f"{m}: raw {ood[m].raw}; standardised {ood[m].standardized}")
    ood_cmp = paired_comparison(ood["ce128"].standardized, ood["cce128"].standardized, seed=seed)
    print(f"standardised, cascade - CE: {ood_cmp}")
else:
    print("no out-of-distribution set given (ood_data=None)")

# %% [markdown]
# ## Verdicts and the numbers the report quotes

# %%
verdicts = {
    "lower_raw": verdict_lower(comparisons["raw"], preset, samples),
    "lower_std": verdict_lower(comparisons["standardized"], preset, samples),
    "ce_value": verdict_value(results["ce128"].raw, PAPER["ce"][0], preset, samples, seed),
    "cce_value": verdict_value(results["cce128"].raw, PAPER["cce"][0], preset, samples, seed),
}
for key, text in verdicts.items():
    glue(f"verdict_{key}", text, display=False)
    print(f"{key}: {text}")

metrics = {"preset": preset, "samples_per_model": samples, "k": len(images), "n": n, "mask": mask, "seed": seed,
           "eval_data": images.description, "train_data": run_cfg["data"]["description"],
           "provenance": provenance(dev), "verdicts": verdicts, "models": {}, "paired": {}}
for m, r in results.items():
    for kind in ("raw", "standardized"):
        res = getattr(r, kind)
        lo, hi = bootstrap_ci(res.per_image, seed=seed)
        key = f"{m}_{kind}"
        metrics["models"][key] = {"mean": res.mean, "std": res.std, "ci95": [lo, hi], "dims": res.dims,
                                  "per_image": np.round(res.per_image, 6).tolist()}
        for stat, value in (("mean", res.mean), ("std", res.std), ("lo", lo), ("hi", hi)):
            glue(f"nsd_{key}_{stat}", float(value), display=False)
for kind, c in comparisons.items():
    metrics["paired"][kind] = {"mean": c.mean, "ci95": list(c.ci), "p_value": c.p_value, "fraction_lower": c.fraction_lower}
    for stat, value in (("mean", c.mean), ("lo", c.ci[0]), ("hi", c.ci[1]), ("p", c.p_value),
                        ("frac", 100 * c.fraction_lower)):
        glue(f"diff_{kind}_{stat}", float(value), display=False)
if ood:
    metrics["ood"] = {"data": ood_images.description, "paired_standardized": {"mean": ood_cmp.mean, "ci95": list(ood_cmp.ci)},
                      **{f"{m}_{kind}": {"mean": getattr(r, kind).mean, "std": getattr(r, kind).std}
                         for m, r in ood.items() for kind in ("raw", "standardized")}}
    ood_summary = (f"On {ood_images.description}: standardised NSD {ood['ce128'].standardized.mean:.3f} (CE) vs "
                   f"{ood['cce128'].standardized.mean:.3f} (cascade), raw {ood['ce128'].raw.mean:.3f} vs "
                   f"{ood['cce128'].raw.mean:.3f}; standardised paired difference (cascade − CE) "
                   f"{ood_cmp.mean:+.3f}, 95% CI [{ood_cmp.ci[0]:+.3f}, {ood_cmp.ci[1]:+.3f}].")
else:
    ood_summary = "This run measured no out-of-distribution set."
glue("ood_summary", ood_summary, display=False)
glue("eval_description", images.description, display=False)
glue("train_description", run_cfg["data"]["description"], display=False)
glue("eval_k", int(len(images)), display=False)
glue("eval_n", int(n), display=False)
glue("samples_per_model", int(samples), display=False)
glue("run_preset", preset, display=False)
Path(metrics_path).write_text(json.dumps(metrics, indent=1))

# %% [markdown]
# ## Provenance

# %%
# NBVAL_IGNORE_OUTPUT
prov = metrics["provenance"]
for key in ("device", "commit", "date", "torch"):
    glue(f"prov_{key}", str(prov[key]), display=False)
print(json.dumps({"preset": preset, "seed": seed, "train": run_cfg["data"]["description"],
                  "eval": images.description, **prov}, indent=1))
