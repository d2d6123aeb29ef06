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
# $$\begin{aligned} &\mathrm{NSD}(E; (P_j)_j, (M_i)_i) \\
#   &\quad = \frac{1}{Dnk}\sum_{j=1}^{k}\sum_{i=1}^{n}\lVert E(P_j, M_i) - \bar Z_j\rVert^2, \end{aligned}$$
#
# $$\bar Z_j = \frac1n\sum_i E(P_j, M_i),$$
#
# where $E(P, M)$ is the $D$-dimensional output of the bottleneck convolution of the 128×128 CE (for the cascade:
# of its 128×128 CE, fed the cascade input of eq. (1)). The same $n$ random-block masks are used for every image
# and both models, so the comparison is paired.
#
# Section 3 assumes that $E$ maps into $N(0, I)$. Three readings of the formula differ in how the codes are put
# there (the NSD theory chapter argues the choice):
#
# * **BN-normalised** (the headline): codes $(z - \mu_{\mathrm{run}})/\sqrt{\sigma^2_{\mathrm{run}} + \epsilon}$ with the
#   running statistics of the BatchNorm that follows the bottleneck: the network's own map to $N(0, I)$, fitted on
#   its training data and independent of the evaluation set. Only this reading is set beside the paper's values.
# * **raw**: the convolution's output as it is; its scale is arbitrary (BatchNorm divides it out).
# * **eval-standardised**: each dimension divided by its spread over the $kn$ evaluation codes; it is the share of
#   variance due to the mask, and moves with how different the evaluation images are from each other.
#
# Beside NSD, the paper's "visibly more plausible" is measured with in-hole L1, PSNR and SSIM of the inpaintings
# (`cce_core.evaluate`).

# %% tags=["parameters", "remove-cell"]
preset = "smoke"
data = ["embedded"]  # training images (to train the models if their runs are missing)
eval_data = ["embedded"]  # the k NSD images: ../../shared/data/photos128/eval-imagenet250.zip in the paper run
ood_data = None  # out-of-distribution NSD images (e.g. eval-bsds100.zip), or None
k = 8  # images (the paper: 250)
n = 10  # masks (the paper: 100)
q = 4  # masks per image for the quality measures (the first q of the n NSD masks)
curve_k = 50  # images for NSD along training (the snapshots of the 128 CE and the cascade)
curve_n = 20  # NSD masks for NSD along training (the first curve_n of the n masks)
mask = "random_blocks"
seed = 0
device = "auto"
runs_dir = "../_build/nbval/runs"
fig_dir = "../_build/nbval/figures"
metrics_path = "../_build/nbval/metrics.json"
other_metrics = []  # metrics.json of the same reproduction's other training seeds (relative paths), compared below
gap_path = None  # the NSD-gap page's gap.json (reproduce --gap): its chance line on the NSD figure
ladder_path = None  # the scale ladder's results (notebooks/scale_ladder, reproduce --ladder), added to metrics.json
central = True  # also the central-mask models (False: a seed trained without them, reproduce --central-once)
loss_variants = False  # also evaluate the random-block models trained with eq. (1)'s loss weighting (runs *-hole)

# %% tags=["hide-input"]
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from cce_core.checkpoint import load_checkpoint, load_model, snapshot_path, snapshots
from cce_core.evaluate import (
    QUALITY,
    READING_LABELS,
    READINGS,
    checkpoint_curve,
    code_scale,
    encode_all,
    eval_images,
    eval_masks,
    model_nsd,
    model_quality,
    nsd_readings,
)
from cce_core.glue import glue
from cce_core.masks import central_mask
from cce_core.nsd import variance_split
from cce_core.plots import FIG_WIDTH_IN, TABLE_STYLES, forest_plot, nsd_against_paper, save_figure, use_book_style
from cce_core.provenance import provenance, resolve_device
from cce_core.report import (
    DIRECTION,
    ONE_WEIGHTING,
    SEED_MEASURES,
    build_metrics,
    calibration_glue,
    calibration_rows,
    compare_readings,
    curve_summary,
    design_components,
    glue_values,
    ladder_curves,
    load_seed_metrics,
    loss_variant_comparison,
    loss_variant_rows,
    run_info,
    seeds_report,
    seeds_rows,
    verdict_word,
)
from cce_core.runs import ensure_run, run_name
from cce_core.stats import PAPER_CCE, PAPER_CE, PAPER_EFFECT, calibration_table

use_book_style()
Path(fig_dir).mkdir(parents=True, exist_ok=True)


def save(fig, name):
    """Write a figure the report shows, stamped with its smallest font size (the book's figure convention)."""
    save_figure(fig, Path(fig_dir) / f"{name}.png")


LABELS = {"ce128": "CE (128)", "cce128": "cascade CE", "ce64": "64 CE alone"}
QUALITY_LABELS = {"l1": "in-hole L1", "psnr": "PSNR (dB)", "ssim": "SSIM"}

# %% [markdown]
# ## The models, the images and the masks
#
# Six models: the 64 CE, the 128 CE and the cascade, each trained with random blocks and with the central mask
# (a run may train the central-mask ones for its first seed only: they serve the figures). NSD needs varying masks,
# so it is measured on the random-block models; the quality measures on all the models the seed has.

# %% tags=["nbval-ignore-output"]
dev = resolve_device(device)
names = [run_name(m, mk) for mk in ((mask, "central") if central else (mask,)) for m in ("ce64", "ce128", "cce128")]
checkpoints = {name: ensure_run(runs_dir, *name.split("-", 1), preset, data, seed=seed, device=device) for name in names}
models = {name: load_model(c, dev) for name, c in checkpoints.items()}
runs = {name: run_info(c.parent / "config.json", step=load_checkpoint(c)["step"]) for name, c in checkpoints.items()}


def eval_set(source):
    """The first k images of an evaluation source (one rule with the scale ladder: `cce_core.evaluate.eval_images`)."""
    return eval_images(source, k, seed)


images = eval_set(eval_data)
masks = eval_masks(mask, n, seed=seed)
print(f"{len(images)} images from {images.description}; {n} masks ({mask}, seed {seed}); device {dev}")
for name, r in runs.items():
    print(f"{name}: {r['samples']:,} image samples, D = {r['bottleneck']}, width {r['width']}, data {r['train_data']}")

# %% [markdown]
# ## NSD of each model, in the three readings

# %% tags=["nbval-ignore-output"]
moments = {m: encode_all(models[run_name(m, mask)], images.images, masks, progress=False) for m in ("ce128", "cce128", "ce64")}
results = {m: nsd_readings(acc, models[run_name(m, mask)]) for m, acc in moments.items()}
assert all(np.isfinite(getattr(r, reading).per_image).all() for r in results.values() for reading in READINGS)

# %%
rows = []
for m, r in results.items():
    rows.append({"model": LABELS[m],
                 **{f"NSD {READING_LABELS[x]}": f"{getattr(r, x).mean:.3f} ± {getattr(r, x).std:.3f}" for x in READINGS},
                 "paper": {"ce128": "0.79 ± 0.17", "cce128": "0.56 ± 0.17"}.get(m, "—")})
nsd_table = (pd.DataFrame(rows).set_index("model").style
             .set_table_styles([{"selector": "th, td", "props": [("padding", "0.3em 0.5em"), ("text-align", "right")]}]))
glue("nsd_table", nsd_table, display=False)
r = results["ce128"].raw
print(f"mean ± sd over the k = {r.k} images, each under n = {r.n} masks; code dimension D = {r.dims}")
nsd_table

# %% [markdown]
# ## Paired comparison
#
# Per image, NSD of the cascade minus NSD of the CE, with a 95% bootstrap interval of the mean (images resampled)
# and a paired sign-flip permutation test, in each reading.

# %%
comparisons = compare_readings(results, seed=seed)
for reading, c in comparisons.items():
    print(f"{READING_LABELS[reading]:>17}: {c}")

# %% mystnb={"image": {"alt": "Three histograms of per-image NSD of the CE and the cascade, one per reading, and a scatter plot of the cascade's against the CE's BN-normalised NSD per image with the diagonal"}, "figure": {"caption": "Per-image NSD of the book's first seed in its three readings, and the pairing image by image: points below the dashed diagonal are images where the cascade's NSD is lower."}}
fig, axes = plt.subplots(2, 2, figsize=(FIG_WIDTH_IN, 6.4))
axes = axes.ravel()
for ax, reading in zip(axes[:3], READINGS):
    frame = pd.DataFrame({"CE": getattr(results["ce128"], reading).per_image,
                          "cascade": getattr(results["cce128"], reading).per_image}).melt(var_name="model", value_name="NSD")
    sns.histplot(frame, x="NSD", hue="model", kde=len(frame) > 20, ax=ax, element="step")
    ax.set_title(READING_LABELS[reading])
ce_s, cce_s = results["ce128"].normalized.per_image, results["cce128"].normalized.per_image
axes[3].scatter(ce_s, cce_s, s=8)
lim = [min(ce_s.min(), cce_s.min()), max(ce_s.max(), cce_s.max())]
axes[3].plot(lim, lim, "k--", lw=1)
axes[3].set(xlabel="CE", ylabel="cascade", title="BN-normalised, paired")
fig.suptitle("Per-image NSD of the CE and the cascade")
save(fig, "nsd_distributions")

# %% [markdown]
# (nsd-variance-split)=
# ## Why our NSD differs from the paper's: the mask's part and the image's part of the codes' variance
#
# The BN-normalised NSD divides the mask's part of the codes' variance by the variance the network's BatchNorm
# expects (its running variance, fitted on the training batches). Split the evaluation codes' variance per
# dimension into the part due to the mask (within one image, over the $n$ masks: this is NSD) and the part due to
# the image (between the $k$ image means $\bar Z_j$), both in the BN-normalised units (`cce_core.nsd.variance_split`).
# Then NSD = (the mask's share of the evaluation codes' variance) × (the evaluation codes' variance over the
# running variance): the first factor says how much the mask moves a code compared with a different image, the
# second how widely the evaluation codes spread compared with the training batches' codes.

# %%
splits = {m: variance_split(moments[m], code_scale(models[run_name(m, mask)])) for m in ("ce128", "cce128")}
split_rows = []
for m, sp in splits.items():
    split_rows.append({"model": LABELS[m], "mask's part (NSD)": sp.within, "image's part": sp.between,
                       "evaluation variance / running variance": sp.total,
                       "mask's share of the evaluation variance (%)": 100 * sp.within_share})
    for key, value in {"within": sp.within, "between": sp.between, "total": sp.total,
                       "share": 100 * sp.within_share, "running_ratio": 1 / sp.total}.items():
        glue(f"var_{key}_{m}", float(value), display=False)
split_table = (pd.DataFrame(split_rows).set_index("model").style.format(precision=3)
               .format("{:.1f}", subset=["mask's share of the evaluation variance (%)"]).set_table_styles(TABLE_STYLES))
glue("variance_split_table", split_table, display=False)
split_table

# %% tags=["hide-input"]
ce = splits["ce128"]
display(Markdown(
    f"For the CE, the mask accounts for {100 * ce.within_share:.1f}% of the evaluation codes' variance and the image "
    f"for the rest; and the evaluation codes spread {ce.total:.3f} times as much as the BatchNorm's running variance "
    f"(the running variance is {1 / ce.total:.1f} times theirs); NSD = {ce.within_share:.3f} × {ce.total:.3f} = "
    f"{ce.within:.3f}. "
    f"The paper's {PAPER_CE} would mean, for codes in N(0, I) as section 3 assumes, that {100 * PAPER_CE:.0f}% of each "
    f"dimension's variance comes from the mask and {100 * (1 - PAPER_CE):.0f}% from the image: the mask would move the "
    f"code almost as much as a different image would, close to the {(n - 1) / n:.2f} = (n − 1)/n of codes that ignore "
    f"the image."))

# %% [markdown]
# ## "Visibly more plausible", measured
#
# For every model, the same $k$ images, each with the first $q$ NSD masks (random-block models) or the central mask
# (central models): in-hole L1, PSNR and SSIM (SSIM map of the whole 128×128 inpainting averaged over the missing
# pixels; a 64 CE is measured on its inpainting upscaled into the 128 hole, as the cascade uses it). Which way each
# number points:

# %%
display(Markdown("\n".join(f"* **{name}**: {text}" for name, text in DIRECTION.items())))

# %% tags=["nbval-ignore-output"]
quality_masks = {mask: masks[:q], "central": central_mask(1, 128)}
quality = {name: model_quality(models[name], images.images, quality_masks[runs[name]["mask"]]) for name in names}

# %%
quality_table = pd.DataFrame([{"model": LABELS[r["model"]], "mask": r["mask"],
                               **{QUALITY_LABELS[m]: f"{quality[name][m].mean():.3f}" for m in QUALITY},
                               "NSD BN-normalised": f"{results[r['model']].normalized.mean:.3f}" if r["mask"] == mask else "—"}
                              for name, r in runs.items()]).set_index(["mask", "model"])
quality_table = quality_table.style.set_table_styles(TABLE_STYLES)
glue("quality_table", quality_table, display=False)
quality_table

# %% [markdown]
# ## Out-of-distribution images

# %% tags=["nbval-ignore-output"]
ood, ood_images = None, None
if ood_data:
    ood_images = eval_set(ood_data)
    ood = {m: model_nsd(models[run_name(m, mask)], ood_images.images, masks, progress=False) for m in ("ce128", "cce128")}
    for m in ood:
        print(f"{m}: BN-normalised {ood[m].normalized}; raw {ood[m].raw}; eval-standardised {ood[m].standardized}")
else:
    print("no out-of-distribution set given (ood_data=None)")

# %% [markdown]
# ## Does NSD fall as the inpainting improves?
#
# Section 3 reads a lower NSD as a better inpainting. Along training this can be checked: the runs keep their
# generator at regular steps (snapshots). Where the run measured the CPU study's scale ladder, the values are that
# page's own: at each training length the mean over every seed of the 128 CE and of the cascade (random blocks), on
# the ladder's images and masks. Otherwise the first seed's snapshots are measured here, the earlier ones on a
# subset (the first images with the first NSD masks) and the final model with the headline's images and masks, so
# the curve ends where the table above does. The summary below the figure names which. If NSD tracks the quality of
# the inpainting, it falls while the in-hole PSNR rises (a negative rank correlation).

# %% tags=["nbval-ignore-output"] mystnb={"image": {"alt": "NSD and PSNR of the CE and the cascade at the snapshots along training"}, "figure": {"caption": "NSD and inpainting quality along training (the summary below says of which seeds, images and masks): whether NSD falls as the inpainting improves, the premise of the paper's measure."}}
if ladder_path:  # the CPU study's measurement, every seed on the same images and masks: one number per quantity
    ladder_record = json.loads(Path(ladder_path).read_text())
    curves = ladder_curves(ladder_record["points"])
    source = (f"mean over the {len(ladder_record['seeds'])} seeds of the CPU study at each training length, each "
              f"seed's networks on {ladder_record['k']} images with {ladder_record['n']} masks per image")
else:
    curves, ck, cn = {}, min(curve_k, len(images)), min(curve_n, n)
    for m in ("ce128", "cce128"):
        final = checkpoints[run_name(m, mask)]
        step = int(load_checkpoint(final)["step"])
        earlier = [p for p in snapshots(final.parent) if p not in (final, snapshot_path(final.parent, step))]
        curves[m] = checkpoint_curve(earlier, images.images[:ck], masks[:cn], masks[:q], dev)
        curves[m].append({"checkpoint": str(final), "step": step, "nsd_normalized": results[m].normalized.mean,
                          "psnr": float(quality[run_name(m, mask)]["psnr"].mean())})  # the headline's numbers
    source = (f"seed {seed}'s networks, the snapshots on the first {ck} images with {cn} masks per image and the "
              f"final model on all {len(images)} images with {n} masks")
along = curve_summary(curves, source)
for key, value in {"curve_k": min(curve_k, len(images)), "curve_n": min(curve_n, n), "curve_q": q}.items():
    glue(key, value, display=False)  # the subset's sizes, for pages that name them
fig, axes = plt.subplots(1, 2, figsize=(FIG_WIDTH_IN, 3.4))
for m, rows in curves.items():
    steps = [r["step"] for r in rows]
    for ax, key in zip(axes, ("nsd_normalized", "psnr")):
        cut = len(rows) if ladder_path else len(rows) - 1  # without a ladder the last point is the headline's
        line, = ax.plot(steps[:cut], [r[key] for r in rows[:cut]], "o-", label=LABELS[m])
        if not ladder_path:
            ax.plot(steps[-2:], [r[key] for r in rows[-2:]], ":", color=line.get_color())
            ax.plot(steps[-1:], [rows[-1][key]], "D", color=line.get_color(), markersize=8)
if not ladder_path:
    axes[0].plot([], [], "kD", label="final: the headline")
axes[0].set(xlabel="step", title="NSD, BN-normalised")
axes[1].set(xlabel="step", title="in-hole PSNR (dB)")
axes[0].legend()
save(fig, "nsd_along_training")
print(along["summary"])

# %% tags=["nbval-ignore-output", "hide-input"] mystnb={"markdown_format": "myst"}
LOSS_WEIGHTING_TEXT = """Pathak's `train_random.lua`, whose recipe the paper reuses, weights the L2
reconstruction loss of the random-block models uniformly over all pixels (`TrainConfig.full_known_weight = 1`, the default); the paper's eq. (1) counts the
missing pixels only (`full_known_weight = 0`). With `loss_variants`, the 128 CE and the cascade (with its own 64
CE) were also trained the eq. (1) way, and are measured here on the same images and masks as the default ones:
the paired difference eq. (1) − uniform in each NSD reading and in-hole quality measure."""
variants = None
if loss_variants:
    hole_models = {m: load_model(ensure_run(runs_dir, m, mask, preset, data, seed=seed, device=device,
                                            full_known_weight=0.0), dev) for m in ("ce128", "cce128")}
    variants = loss_variant_comparison(
        {m: results[m] for m in hole_models},
        {m: model_nsd(g, images.images, masks, progress=False) for m, g in hole_models.items()},
        {m: quality[run_name(m, mask)] for m in hole_models},
        {m: model_quality(g, images.images, quality_masks[mask]) for m, g in hole_models.items()}, seed=seed)
loss_variants_summary = variants["summary"] if variants else ONE_WEIGHTING
loss_variants_table = (pd.DataFrame(loss_variant_rows(variants)).set_index("model") if variants
                       else pd.DataFrame({"loss weighting": [ONE_WEIGHTING]}, index=["—"])).style.set_table_styles(TABLE_STYLES)
glue("loss_variants_table", loss_variants_table, display=False)
glue("loss_variants_summary", loss_variants_summary, display=False)
glue("loss_variants_section", Markdown(  # the report's section, empty where this run made no such measurement
    "**Does the loss weighting move NSD?** The CE and the cascade with random blocks trained both ways, with the same "
    f"seed (`reproduce --loss-variants`), measured on the same images and masks. {loss_variants_summary}\n\n"
    + loss_variants_table.to_html() if variants else ""), display=False)
if variants:  # the section is shown only where this run trained both weightings
    display(Markdown("**The reconstruction loss of the random-block models.** " + LOSS_WEIGHTING_TEXT))
    print(loss_variants_summary)
    display(loss_variants_table)

# %% [markdown]
# ## The seed is the unit: verdicts across training seeds
#
# The paper's claim is about a training procedure, so the variation that matters is between training runs. A
# reproduction run with several seeds (`reproduce --seeds 0 1 2`) trains every model once per seed and evaluates
# each seed with its own masks; this notebook, the first seed's, runs last and reads the others' `metrics.json`.
# Per seed, the paired cascade − CE difference with its image-level 95% CI (a description of that seed's two
# networks); across seeds, an interval in which both the seeds and the images are random, since every seed is
# measured on the same images (`cce_core.stats.crossed_interval`, whose docstring argues the choice; a comparison
# whose per-image values the run did not store falls back to the t-interval over the per-seed means, and the table
# names the method). Every verdict reads the seed-level
# interval (`cce_core.report.seeds_report`); the value claims (0.79, 0.56) are decided by equivalence, two
# one-sided tests with a declared margin (`cce_core.stats.equivalence`). `build_metrics` gathers this seed's
# numbers, `seeds_report` the seed level, both are written to `metrics.json`, and `glue_values` turns them into
# the values the report pastes.

# %%
metrics = build_metrics(preset=preset, seed=seed, mask=mask, eval_data=images.description, k=len(images), n=n, q=q,
                        runs=runs, results=results, quality=quality, provenance=provenance(dev), ood=ood,
                        ood_data=ood_images.description if ood_images is not None else None)
metrics["along_training"] = along
if ladder_path:  # metrics.json's scale_ladder: the seed-level comparison at each training length (read above)
    metrics["scale_ladder"] = ladder_record["points"]
    metrics["scale_ladder_set"] = {key: ladder_record[key] for key in ("steps", "samples", "k", "n", "q", "eval_data",
                                                                       "cascade_64")}
    if ladder_record.get("fair_points"):  # the fair ladder (each stage trained as long as the point), maybe longer
        metrics["fair_scale_ladder"] = ladder_record["fair_points"]
        metrics["scale_ladder_set"] |= {"fair_steps": ladder_record["fair_steps"],
                                        "fair_cascade_64": ladder_record["fair_cascade_64"]}
    if ladder_record.get("fair_final"):  # the fair ladder's last point again on all the NSD page's masks
        metrics["fair_scale_ladder_final"] = ladder_record["fair_final"]
if variants:
    metrics["loss_variants"] = variants
seeds = seeds_report([metrics] + load_seed_metrics(other_metrics))
metrics["seeds"], metrics["verdicts"] = seeds, seeds["verdicts"]  # every verdict: seed level
_ = Path(metrics_path).write_text(json.dumps(metrics, indent=1))
values = glue_values(metrics)
values["along_training"] = along["summary"]
values["ladder_summary"] = (ladder_record["summary"] if ladder_path else
                            "This run measured no scale ladder (reproduce --ladder, with several seeds, measures one).")
for key, value in values.items():
    glue(key, value, display=False)
assert values["verdict_lower_normalized"] and np.isfinite(values["diff_normalized_mean"])

# %% tags=["nbval-ignore-output"]
seeds_table = pd.DataFrame(seeds_rows(seeds)).set_index("cascade − CE in").style.set_table_styles(TABLE_STYLES)
glue("seeds_table", seeds_table, display=False)
display(Markdown(f"{seeds['tier_line']}\n\nNSD and quality, seed {seed}'s networks: {values['quality_agreement']}"))
def claim_label(key):
    """A verdict's key (``lower_normalized``, ``better_psnr``, ``ce_value``, ...) as the claim it decides."""
    readings = {"normalized": "BN-normalised", "raw": "raw", "std": "eval-standardised",
                "standardized": "eval-standardised"}  # ood_lower_<reading> keys name the reading in full
    if key.endswith("_value"):
        return {"ce": f"CE's NSD is {PAPER_CE}", "cce": f"cascade's NSD is {PAPER_CCE}"}[key[:-6]]
    if "lower_" in key:
        where = ", out of distribution" if key.startswith("ood_") else ""
        return f"cascade's NSD lower ({readings[key.rsplit('_', 1)[1]]}{where})"
    return f"cascade better: {SEED_MEASURES[key[7:]]}"


verdict_table = pd.DataFrame([{"claim": claim_label(key), "verdict": verdict_word(text),
                               "what the seeds show": text.split(":", 1)[-1].strip()}
                              for key, text in metrics["verdicts"].items()]).set_index("claim")
display(verdict_table.style.set_table_styles(TABLE_STYLES))
seeds_table

# %% [markdown]
# The forest plot: each seed's cascade − CE (BN-normalised NSD) with its image-level 95% CI, the mean over seeds with
# its seed-level 95% interval, and the paper's difference; beside it, each model's NSD per seed and over seeds
# against the paper's values and the null value $(n-1)/n$ of codes that ignore the image.

# %% tags=["nbval-ignore-output"] mystnb={"image": {"alt": "A forest plot of each seed's cascade minus CE difference in BN-normalised NSD with its image-level interval and the mean over seeds with its seed-level interval, beside each model's NSD per seed against the paper's values"}, "figure": {"caption": "The headline across seeds: each seed's difference with its image-level interval, and the seed-level interval that speaks about the training procedure. The paper's difference is drawn as an arrow where it lies off the scale; below, each model against the paper's values and, where measured, the chance line."}}
fig, axes = plt.subplots(2, 1, figsize=(FIG_WIDTH_IN, 3.6 + 0.9 * (len(seeds["seeds"]) + 1)), layout="constrained")
row = seeds["per_seed"]
forest_plot([(f"seed {s}", row[s]["nsd_normalized"]["mean"], tuple(row[s]["nsd_normalized"]["ci95"])) for s in row],
            seeds["across"]["nsd_normalized"], paper_effect=PAPER_EFFECT, ax=axes[0],
            xlabel="cascade − CE, BN-normalised NSD")
chance = json.loads(Path(gap_path).read_text())["chance"] if gap_path else None  # the NSD-gap page's chance line
nsd_against_paper({"CE": seeds["across"]["ce128_nsd_normalized"], "cascade": seeds["across"]["cce128_nsd_normalized"]},
                  n, ax=axes[1], chance={"CE": chance["ce128"]["normalized"],
                                         "cascade": chance["cce128"]["normalized"]} if chance else None)
axes[0].set_title("paired difference per seed and across seeds")
axes[1].set_title("each model's NSD against the paper")
save(fig, "seeds_forest")

# %% [markdown]
# **Does a verdict mean what it says?** `cce_core.stats.calibration_table` simulates studies of this run's own
# design: S seeds measuring the same k images, with the variance components (between seeds, between images, and the
# rest) read from this run's per-image BN-normalised differences (`cce_core.report.design_components`). Under no
# effect it counts how often each rule says "cascade lower" or "higher" (nominal 2.5% each): the interval the book
# uses (seeds and images random), the t-interval over seed means (images fixed), the single-t interval with
# Satterthwaite's df, and the image-level rules of one seed. It also gives the power at effects of our scale
# (`cce_core.stats.POWER_EFFECTS`) and at the paper's relative effect (the cascade's NSD as far below our CE's, in
# proportion, as the paper's 0.56 is below its 0.79). The table is in the reproduction report.

# %%
components = design_components(seeds)
calibration = pd.DataFrame(calibration_table(components, reference_nsd=seeds["across"]["ce128_nsd_normalized"]["mean"]))
null = calibration[(calibration.case == "no effect") & (calibration.seed_sd_of == "the run")].set_index("n_seeds")
calib_values = {"calib_old_one_seed": 100 * null.loc[1, "image_one_seed_lower"],
                **{f"calib_old_every_{s}": 100 * null.loc[s, "image_every_seed_lower"] for s in (2, 3)},
                **{f"calib_new_{s}": 100 * null.loc[s, "crossed_lower"] for s in (2, 3, 5)},
                "calib_sims": int(calibration.n_sims.iloc[0])}
for key, value in calib_values.items():
    glue(key, float(value) if key != "calib_sims" else value, display=False)
for key, value in calibration_glue(calibration.to_dict("records"), components).items():
    glue(key, value, display=False)
calibration_table_shown = (pd.DataFrame(calibration_rows(calibration.to_dict("records"))).style.hide(axis="index")
                           .set_table_styles(TABLE_STYLES))
glue("calibration_table", calibration_table_shown, display=False)  # shown in the report
print(f"variance components of this run's design: {components}")

# %% [markdown]
# ## Provenance

# %% tags=["nbval-ignore-output"] mystnb={"markdown_format": "myst"}
from cce_core.provenance import dirty_warning

if dirty_warning(metrics["provenance"]):  # made from uncommitted code: said on the page
    display(Markdown(dirty_warning(metrics["provenance"])))
print(json.dumps({"preset": preset, "seed": seed, "train": metrics["train_data"], "eval": images.description,
                  **metrics["provenance"]}, indent=1))
