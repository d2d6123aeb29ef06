# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The CPU study: five seeds along training
#
# One training seed cannot tell a training procedure from luck, and one training length cannot tell whether a
# difference appears, vanishes or reverses as training goes on. This page follows the 128 CE and the cascade
# (random blocks) of every training seed along training: each run keeps its generator at a ladder of training
# lengths a factor 2 apart, and every snapshot of every seed is measured on **one** set of images and masks. At
# each length, the paired cascade − CE difference is taken per seed (over the images) and then across seeds, with
# the seed-level 95% interval of the [statistics](nsd_eval.ipynb) (a t-interval over the seeds' means) and a
# prediction interval for one more seed.
#
# The cascade is measured along two ladders, which answer two questions:
#
# - **64 CE fully trained**: the cascade at a point is its 128 stage after that many samples, on top of the 64 CE
#   trained for the whole run (the paper trains the 64 CE first, then the 128 stage). It asks how the difference
#   moves as the 128 stage trains longer, but at the early points the cascade carries a first stage trained several
#   times longer than the networks compared.
# - **Each stage s samples** (the fair ladder): at each point a cascade of its own, whose 64 CE has seen s samples
#   (its snapshot at s) and whose 128 stage is then trained s samples on top of it. It asks whether the cascade
#   beats the CE when both are trained as long, at every length.
#
# Both ladders pass through the same models at the run's length, the headline's (which measures them with more masks
# per image); where the run continued its CEs further, the fair ladder has one more point, twice as far, with the CE
# and a cascade both trained that long (the headline's runs themselves are left as they are). Below, each ladder is
# also drawn against the training compute it cost, so that the CE and the cascade can be compared at equal compute.

# %% tags=["parameters", "remove-cell"]
preset = "smoke"
data = ["embedded"]  # training images (to train the models if their runs are missing)
eval_data = ["embedded"]  # the ladder's images: the first k of the NSD evaluation set
k = 8  # images (the study: 250, the headline's)
n = 6  # NSD masks per image at every ladder point (the study: the first 25 of each seed's 100 evaluation masks)
q = 4  # masks per image for the quality measures (the first q of the n masks, as on the NSD page)
points = 3  # ladder points, a factor 2 apart, ending at the runs' final step (the study: 4)
seed = 0  # the book's seed (the first of seeds)
seeds = [0, 1]
device = "auto"
runs_dir = "../_build/nbval/runs"
runs_dirs = None  # each seed's runs folder, relative to its seed folder (None: runs_dir/seed<s> after the first)
seed_folders = None  # the folder each seed's runs were trained from, relative to this notebook (None: ".")
fig_dir = "../_build/nbval/figures"
ladder_path = "../_build/nbval/ladder.json"  # written here, read by the NSD page (metrics.json's scale_ladder)
gap_path = None  # the NSD-gap page's gap.json (reproduce --gap): its chance line drawn on the NSD figure
fair = True  # also the fair ladder: a cascade per point with each stage trained that long (trained if missing)
extend = 40  # with fair: one more point at this step (None: none), CE and cascade trained that long (study: 1200)
n_final = 10  # with extend: that point measured again with this many masks per image (the study: 100, the NSD page's)

# %% tags=["hide-input"]
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from cce_core.compute import gflop_per_sample, ladder_compute
from cce_core.config import ladder_steps, training_length_note
from cce_core.evaluate import eval_images, eval_masks, ladder_seed
from cce_core.glue import glue
from cce_core.plots import FIG_WIDTH_IN, TABLE_STYLES, forest_plot, ladder_lines, save_figure, use_book_style
from cce_core.provenance import dirty_warning, provenance, resolve_device
from cce_core.report import (
    LADDER_MEASURES,
    SEED_MEASURES,
    fair_ladder_summary,
    ladder_rows,
    ladder_summary,
    point_summary,
    run_info,
    scale_ladder,
)
from cce_core.runs import ensure_extended, ensure_fair_cascades, ensure_nsd_runs
from cce_core.stats import MIN_SAMPLES, PAPER_BOTTLENECK, PAPER_EFFECT, PAPER_TRAIN_IMAGES, PAPER_WIDTH

use_book_style()
Path(fig_dir).mkdir(parents=True, exist_ok=True)
COLORS = {"ce128": "tab:blue", "cce128": "tab:orange", "cce128_fair": "tab:purple"}
LABELS = {"ce128": "CE (128)", "cce128": "cascade, 64 CE fully trained", "cce128_fair": "cascade, each stage s samples"}
MODELS = ("ce128", "cce128", "cce128_fair") if fair else ("ce128", "cce128")

# %% [markdown]
# ## The runs and the ladder

# %% tags=["nbval-ignore-output"]
dev = resolve_device(device)
seeds = list(seeds)
runs_dirs = list(runs_dirs) if runs_dirs else [runs_dir if s == seeds[0] else f"{runs_dir}/seed{s}" for s in seeds]
seed_folders = list(seed_folders) if seed_folders else ["."] * len(seeds)
if not len(runs_dirs) == len(seed_folders) == len(seeds) or len(seeds) < 2:
    raise ValueError(f"the ladder needs 2 or more seeds and one runs folder per seed: {len(seeds)} seeds, "
                     f"{len(runs_dirs)} runs folders, {len(seed_folders)} seed folders")
runs = {s: {m: ensure_nsd_runs(rd, [0.0], preset, data, seed=s, device=device, model=m, cwd=folder)[0.0].parent
            for m in ("ce128", "cce128")} for s, rd, folder in zip(seeds, runs_dirs, seed_folders)}
info = run_info(runs[seeds[0]]["ce128"] / "config.json")
config = json.loads((runs[seeds[0]]["ce128"] / "config.json").read_text())["config"]
steps = ladder_steps(config["steps"], config["snapshot_every"], points)
samples = [st * info["batch_size"] for st in steps]
fair_steps = steps + ([extend] if fair and extend else [])  # past the run's length: the CE and the fair cascade only
fair_samples = [st * info["batch_size"] for st in fair_steps]
far = {}
if fair:  # the fair ladder's cascades: one per point and seed (at the run's length the seed's own cascade)
    for s, rd, folder in zip(seeds, runs_dirs, seed_folders):
        runs[s]["cce128_fair"] = ensure_fair_cascades(rd, fair_steps, preset, data, seed=s, device=device, cwd=folder)
        if extend:  # the seed's 128 CE continued to `extend` steps (its own run stays the headline's)
            far[s] = {"ce128": {extend: ensure_extended(rd, "ce128", "random_blocks", preset, data, extend, seed=s,
                                                        device=device, cwd=folder).parent},
                      "cce128_fair": {extend: runs[s]["cce128_fair"][extend]}}
eval_sets = {s: eval_images(eval_data, k, s) for s in seeds}  # each seed's own, as on its NSD page
images = eval_sets[seeds[0]]
print(f"{len(seeds)} seeds ({', '.join(map(str, seeds))}); ladder: steps {steps} = {samples} image samples per model "
      f"(batch {info['batch_size']}); D = {info['bottleneck']}, width {info['width']}; trained on {info['train_data']}")
if far:
    print(f"the fair ladder also at {fair_samples[-1]:,} samples ({extend} steps, "
          f"{fair_samples[-1] / info['train_images']:.0f} passes over the {info['train_images']:,} training images): "
          "each seed's 128 CE and 64 CE continued that far, and a cascade trained that long on the latter")
print(f"measured on each seed's evaluation images ({len(images)} from {images.description} for seed {seeds[0]}), "
      f"each seed's first {n} evaluation masks (random blocks), quality on the first {q} of them; device {dev}")

# %% [markdown]
# ## Every snapshot of every seed, measured
#
# Each seed has its own evaluation masks (the stream of `cce_core.evaluate.eval_masks`, apart from its training
# masks) and the evaluation images of its NSD page (`cce_core.evaluate.eval_images`: a stored set's for every seed,
# or with embedded photos the seed's own crops); within a seed the CE and the cascade see the same images and masks
# at every point, so the difference is paired image by image. The measurements are kept beside each seed's runs
# (`ladder-k<k>-n<n>.json`), so an interrupted ladder resumes where it stopped; each point records the commit, the
# code and the checkpoint that measured it (`measured` in `ladder.json`), and a changed checkpoint or code is
# measured again.

# %% tags=["nbval-ignore-output", "remove-stderr"] mystnb={"markdown_format": "myst"}
per_seed_points = {}
for s, rd, folder in zip(seeds, runs_dirs, seed_folders):
    masks = eval_masks("random_blocks", n, seed=s)
    cache = Path(folder) / rd / f"ladder-k{len(images)}-n{n}.json"
    per_seed_points[s] = ladder_seed(runs[s], steps, eval_sets[s].images, masks, masks[:q], dev, cache=cache)
    if s in far:
        per_seed_points[s] |= ladder_seed(far[s], [extend], eval_sets[s].images, masks, masks[:q], dev, cache=cache)
sizes = (info["batch_size"], info["bottleneck"], info["width"], info["train_images"])
ladder = scale_ladder({s: {st: by for st, by in p.items() if int(st) in steps} for s, p in per_seed_points.items()},
                      *sizes)
MEASURED = (f"the same {len(images)} images with {n} masks per image (the NSD page measures the final models with "
            "all its masks, so its numbers differ slightly from the last point's)")
fair_ladder = scale_ladder(per_seed_points, *sizes, models=("ce128", "cce128_fair")) if fair else None
final = None  # the fair ladder's last point again on all n_final masks, as the NSD page measures its models
if far and n_final and n_final > n:
    final_points = {}
    for s, rd, folder in zip(seeds, runs_dirs, seed_folders):
        masks = eval_masks("random_blocks", n_final, seed=s)
        final_points[s] = ladder_seed(far[s], [extend], eval_sets[s].images, masks, masks[:q], dev,
                                      cache=Path(folder) / rd / f"ladder-k{len(images)}-n{n_final}.json")
    final = scale_ladder(final_points, *sizes, models=("ce128", "cce128_fair"))[0] | {"n": n_final}
for lad, pair in ((ladder, ("ce128", "cce128")), (fair_ladder or [], ("ce128", "cce128_fair"))):
    for e in lad:  # what measured each point's values (the ladder cache's record): commits, code, checkpoint
        e["measured"] = {s: {m: per_seed_points[s][str(e["step"])][m]["measured"] for m in pair} for s in seeds}
gflop = gflop_per_sample(preset, batch_size=info["batch_size"], bottleneck=info["bottleneck"], width=info["width"])
compute = {"gflop_per_sample": gflop, "fully_trained_64": ladder_compute(samples, gflop, ce64_samples=samples[-1]),
           "each_stage": ladder_compute(fair_samples, gflop)}
record = {"steps": steps, "samples": samples, "k": len(images), "n": n, "q": q, "seeds": seeds,
          "eval_data": "; ".join(dict.fromkeys(im.description for im in eval_sets.values())),
          "train_data": info["train_data"], "points": ladder,
          "cascade_64": "each cascade's 64 CE is the one trained for the whole run (the ladder counts the 128 stage)",
          "summary": ladder_summary(ladder, measured=MEASURED), "compute": compute, "provenance": provenance(dev)}
if fair:
    record |= {"fair_points": fair_ladder, "fair_summary": fair_ladder_summary(ladder, fair_ladder),
               "fair_steps": fair_steps, "fair_samples": fair_samples,
               "fair_cascade_64": "each point's cascade: its 64 CE's snapshot at the point, its 128 stage trained as "
                                  "many samples on top of it" + (f"; at {fair_samples[-1]:,} samples the 64 CE and the "
                                  "128 CE are the seed's own runs continued that far" if extend else "")}
    if final:
        record["fair_final"] = final
_ = Path(ladder_path).write_text(json.dumps(record, indent=1))
if dirty_warning(record["provenance"]):  # measured with uncommitted code: said on the page
    display(Markdown(dirty_warning(record["provenance"])))
assert [e["samples"] for e in ladder] == samples and all(e["n_seeds"] == len(seeds) for e in ladder)
assert not fair or [e["samples"] for e in fair_ladder] == fair_samples

# %% [markdown]
# ## NSD and PSNR along training
#
# Thin lines: one seed each; thick line: the mean over seeds; band: its seed-level 95% interval. The x axis doubles
# at each point.

# %% tags=["nbval-ignore-output"] mystnb={"image": {"alt": "Two line plots of NSD against training samples on a log axis, BN-normalised on the left and eval-standardised on the right, thin lines per seed and a thick mean with a shaded band per model"}, "figure": {"caption": "Each model's NSD along training: thin lines are seeds, the thick line their mean with its seed-level 95% band. Look at how the models' lines move relative to each other as training doubles."}}
def ladder_of(m):
    """The ladder whose entries hold model ``m``: the cascade with its 64 CE fully trained is in today's ladder only;
    the CE and the fair cascade are in the fair ladder, which may go further."""
    return ladder if m == "cce128" or not fair else fair_ladder


def xs(lad):
    return [e["samples"] for e in lad]


def model_values(m, x):
    return {s: [e["models"][m][x]["per_seed"][i] for e in ladder_of(m)] for i, s in enumerate(seeds)}


fig, axes = plt.subplots(1, 2, figsize=(FIG_WIDTH_IN, 3.6), layout="constrained")
chance = json.loads(Path(gap_path).read_text())["chance"] if gap_path else None
for ax, x in zip(axes, ("nsd_normalized", "nsd_standardized")):
    for m in MODELS:
        ladder_lines(ax, xs(ladder_of(m)), model_values(m, x), [e["models"][m][x] for e in ladder_of(m)], LABELS[m],
                     COLORS[m])
    for m in ("ce128", "cce128") if chance else ():  # an untrained encoder's NSD (the NSD-gap page)
        ax.axhline(chance[m][x.removeprefix("nsd_")], color=COLORS[m], linestyle=":", linewidth=1.2,
                   label=f"chance line, {LABELS[m].split(',')[0]}")
    ax.set(xlabel="image samples per model", title=SEED_MEASURES[x])
axes[0].legend()
save_figure(fig, Path(fig_dir) / "ladder_nsd.png")

# %% tags=["nbval-ignore-output"] mystnb={"image": {"alt": "Two line plots of in-hole PSNR and SSIM against training samples, per seed and mean per model with a shaded band"}, "figure": {"caption": "Inpainting quality in the hole along training, per seed and over seeds: whether the cascade's quality keeps pace with the CE's as training lengthens."}}
fig, axes = plt.subplots(1, 2, figsize=(FIG_WIDTH_IN, 3.6), layout="constrained")
for ax, x in zip(axes, ("psnr", "ssim")):
    for m in MODELS:
        ladder_lines(ax, xs(ladder_of(m)), model_values(m, x), [e["models"][m][x] for e in ladder_of(m)], LABELS[m],
                     COLORS[m])
    ax.set(xlabel="image samples per model", title=f"in-hole {SEED_MEASURES[x]}")
axes[0].legend()
save_figure(fig, Path(fig_dir) / "ladder_quality.png")

# %% [markdown]
# ## The difference, seed by seed, at each training length
#
# Cascade − CE along training, per seed (thin) and over seeds (thick, with the seed-level band), for the
# headline's NSD reading and for PSNR: with the cascade's 64 CE trained the whole run (orange) and with each stage
# trained as long as the point (purple, the fair ladder). Below: the forest plot at each point of the fair ladder
# (of the other where it was not measured): each seed's paired difference with its image-level 95% interval (a
# description of that seed's two networks), the mean over seeds with its seed-level interval, 0 and the paper's
# difference.

# %% tags=["nbval-ignore-output"] mystnb={"image": {"alt": "Two line plots of the cascade minus CE difference against training samples, in BN-normalised NSD and in PSNR, for the two ladders, with a dashed zero line"}, "figure": {"caption": "The cascade − CE difference along training for both ladders: below the dashed zero line the cascade has the lower NSD (left) or the lower PSNR (right). Where the shaded band covers zero the seeds do not settle the sign."}}
fig, axes = plt.subplots(1, 2, figsize=(FIG_WIDTH_IN, 3.6), layout="constrained")
ladders = {"cce128": ladder, **({"cce128_fair": fair_ladder} if fair else {})}
for ax, x in zip(axes, ("nsd_normalized", "psnr")):
    for m, lad in ladders.items():
        diffs = {s: [e["per_seed"][s][x]["mean"] for e in lad] for s in seeds}
        ladder_lines(ax, xs(lad), diffs, [e["paired"][x] for e in lad], LABELS[m], COLORS[m])
    ax.axhline(0, color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel="image samples per model", title=f"cascade − CE, {SEED_MEASURES[x]}")
axes[0].legend()
save_figure(fig, Path(fig_dir) / "ladder_difference.png")

# %% tags=["nbval-ignore-output"] mystnb={"image": {"alt": "One forest plot per ladder point: each seed's cascade minus CE difference in BN-normalised NSD with its image-level interval, and the mean over seeds with its seed-level interval as a thick bar"}, "figure": {"caption": "At each training length, each seed's difference and the seed-level interval: look for seeds on both sides of zero (the training procedure's spread) and whether the thick bar clears zero."}}
cols, forest = 2, fair_ladder or ladder
rows_ = -(-len(forest) // cols)
fig, axes = plt.subplots(rows_, cols, figsize=(FIG_WIDTH_IN, rows_ * (1.4 + 0.34 * (len(seeds) + 1))),
                         layout="constrained", sharex=True, sharey=True, squeeze=False)
for i, (ax, e) in enumerate(zip(axes.ravel(), forest)):
    forest_plot([(f"seed {s}", e["per_seed"][s]["nsd_normalized"]["mean"],
                  tuple(e["per_seed"][s]["nsd_normalized"]["ci95"])) for s in seeds],
                e["paired"]["nsd_normalized"], paper_effect=PAPER_EFFECT, ax=ax, xlabel="Δ NSD, BN-normalised")
    ax.set_title(f"{e['samples']:,} samples", pad=16)  # above the off-scale arrow
    if i:
        ax.get_legend().remove()
    if i % cols:
        ax.tick_params(labelleft=False)
    if i < len(forest) - cols:
        ax.set_xlabel("")
for ax in axes.ravel()[len(forest):]:
    ax.set_visible(False)
save_figure(fig, Path(fig_dir) / "ladder_forest.png")

# %% [markdown]
# ## At equal training compute
#
# The cascade costs more to train than the CE: its 64 CE is trained first, and every step of its 128 stage runs the
# 64 CE forward too. Here the models are drawn against the training FLOPs behind them: per training sample, one
# iteration of the recipe (D step and G step, forward and backward), counted at this run's sizes with PyTorch's FLOP
# counter (`cce_core.compute.gflop_per_sample`: convolutions and matrix products; elementwise work and the optimiser
# are not counted). The fully trained 64 CE counts in full at every point of its ladder.

# %% tags=["hide-input"]
display(pd.DataFrame({"GFLOP per training sample": {LABELS.get(m, "64 CE"): round(v, 3) for m, v in gflop.items()}})
        .rename(index={"cascade, 64 CE fully trained": "cascade's 128 stage (with its 64 CE's forward)"}))

# %% tags=["nbval-ignore-output"] mystnb={"image": {"alt": "Two line plots of BN-normalised NSD and PSNR against training compute in TFLOP on a log axis, one line per model with a band over seeds"}, "figure": {"caption": "The same models placed by the training compute behind them (counted FLOPs): at equal compute, compare the lines at the same horizontal position."}}
tflop = {"ce128": compute["each_stage"]["ce128"], "cce128": compute["fully_trained_64"]["cce128"],
         "cce128_fair": compute["each_stage"]["cce128"]}
fig, axes = plt.subplots(1, 2, figsize=(FIG_WIDTH_IN, 3.6), layout="constrained")
for ax, x in zip(axes, ("nsd_normalized", "psnr")):
    for m in MODELS:
        ladder_lines(ax, tflop[m], model_values(m, x), [e["models"][m][x] for e in ladder_of(m)], LABELS[m],
                     COLORS[m], ticks=False)
    ax.set(xlabel="training compute (TFLOP)", title=f"{SEED_MEASURES[x]} against compute")
axes[0].legend()
save_figure(fig, Path(fig_dir) / "ladder_compute.png")

# %% [markdown]
# ## What each ladder can and cannot say
#
# With the 64 CE fully trained, the cascade at the first points starts from a coarse inpainting made by a network
# trained several times longer than the 128 networks being compared (the ratio halves at each point, down to one at
# the last): an advantage there may be that head start, not the design. The fair ladder removes it: at every point
# both stages of the cascade have seen as many samples as the CE, so a difference there belongs to the design at
# that training length; it still costs more compute (figure above). Both ladders end at the same models. Every
# point is far below the paper's training length, so none of it is a verdict on the paper's claim.

# %% [markdown]
# ## The seed-level result at each point
#
# Per training length: the mean over seeds of the paired cascade − CE difference with its seed-level 95% interval,
# how many seeds agree in sign, and the seed-level direction ("lower", "higher", or "no difference detected" when
# the interval covers 0).

# %% tags=["nbval-ignore-output"]
def ladder_table(lad):
    return pd.DataFrame(ladder_rows(lad, ("nsd_normalized", "psnr"))).set_index("samples per model").style\
        .set_table_styles(TABLE_STYLES)


display(Markdown("**With the cascade's 64 CE fully trained**"))
table = ladder_table(ladder)
glue("ladder_table", table, display=False)
display(table)
if fair:
    display(Markdown("**Each stage trained s samples (the fair ladder)**"))
    fair_table = ladder_table(fair_ladder)
    glue("fair_ladder_table", fair_table, display=False)
    display(fair_table)

# %% tags=["hide-input"]
last = ladder[-1]
pred = {x: last["paired"][x]["prediction95"] for x in LADDER_MEASURES}
observed = last["paired"]["nsd_normalized"]["verdict"].split(":", 1)[1].strip()
display(Markdown(
    f"At the last point, on this page's masks: {observed}.\n\n"
    f"**One more seed.** A reader who trains one more seed for {last['samples']:,} samples should expect its "
    f"cascade − CE to fall, with 95% probability, in [{pred['nsd_normalized'][0]:+.4f}, "
    f"{pred['nsd_normalized'][1]:+.4f}] in BN-normalised NSD and in [{pred['psnr'][0]:+.2f}, {pred['psnr'][1]:+.2f}] "
    f"dB in PSNR (95% prediction intervals from the {len(seeds)} seeds: mean ± t·sd·√(1 + 1/S)).\n\n"
    f"{record['summary']}\n\n" + (f"**The fair ladder.** {record['fair_summary']}\n\n" if fair else "")
    + (f"**The fair ladder's last point on all {final['n']} masks.** {point_summary(final, final['n'])}\n\n"
       if final else "")
    + f"Tier at every point: {last['tier']} (paper scale: D = {PAPER_BOTTLENECK}, width "
    f"{PAPER_WIDTH}, {MIN_SAMPLES:,} image samples per model or more from {PAPER_TRAIN_IMAGES:,} distinct images or "
    f"more; {training_length_note()})."))
for key, value in {"ladder_summary": record["summary"], "ladder_points": len(ladder),
                   "ladder_first_samples": ladder[0]["samples"], "ladder_last_samples": last["samples"],
                   "ladder_n": n, "ladder_k": len(images),
                   **({"fair_ladder_summary": record["fair_summary"]} if fair else {})}.items():
    glue(key, value, display=False)
