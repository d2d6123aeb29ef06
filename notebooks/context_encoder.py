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
# # Section 4: the context encoder and the cascade
#
# Section 4 of the paper {cite}`zielinski2018cascade` builds the cascade from Pathak et al.'s context encoder
# {cite}`pathak2016context` "with the same encoder and discriminator architecture and the same parameters and
# hyper-parameters". This chapter follows it in the paper's order, with the code of `cce_core`:
#
# 1. the 128×128 context encoder and its discriminator (section 4.1), printed layer by layer from the model and
#    checked against the parameter counts of Pathak's code;
# 2. the 64×64 context encoder, the same network with its highest-resolution layer removed on both sides;
# 3. the cascade (section 4.2), eq. (1) and (2), step by step on a real photograph, with checks that known
#    pixels pass through unchanged, that no hidden pixel reaches the 64 CE and that the 64 CE stays frozen;
# 4. the training recipe: the loss weights and the optimiser settings.
#
# Everything here runs on a CPU in seconds. Every network on this page is **untrained**: it shows how data flows
# through the cascade, not what a trained cascade paints (the trained models are on the figures and training
# pages of the reproduction).

# %% tags=["parameters", "remove-cell"]
data = "embedded"  # the photograph: "embedded" (scikit-image's photos), a directory or a .zip of images
seed = 0
width = 16         # channel width of the small untrained cascade (the paper: 64)
bottleneck = 64    # its code dimension D (the paper: 4000)

# %% tags=["hide-input"]
import importlib.util
import json
import textwrap

import matplotlib.pyplot as plt
import pandas as pd
import torch

from cce_core.cascade import CascadeContextEncoder, downscale, downscale_mask
from cce_core.config import MODELS, PATHAK_TRAINING, PRESETS, TRAINING_LENGTH, TrainConfig
from cce_core.data import PHOTOS128_TRAIN, SIZE, load_images, to_float
from cce_core.evaluate import cascade_stages
from cce_core.glue import glue
from cce_core.losses import reconstruction_weights
from cce_core.masks import center_box, central_mask, default_overlap, random_blocks
from cce_core.models import ContextEncoder, Discriminator, count_parameters
from cce_core.plots import FIG_WIDTH_IN, image_grid, layer_table, show_grid, use_book_style
from cce_core.reproduce import EVAL_RESERVE_S, EXTRA_SEED_EVAL, MODEL_OVERHEAD_S, REPO, TRAIN_ORDER
from cce_core.stats import MIN_SAMPLES, PAPER_BOTTLENECK, PAPER_TRAIN_IMAGES, PAPER_WIDTH, scale_tier

use_book_style()

# %% [markdown]
# ## The 128×128 context encoder
#
# The generator $F$ maps the masked image $\bar M \odot P$ (the hole filled with Pathak's mean colour) to the
# central 64×64 block. Five 4×4 stride-2 convolutions (E1 to E5) halve the resolution down to 512×4×4; the
# bottleneck E6, a 4×4 "valid" convolution, maps it to the code $E(P, M)$ of dimension $D = 4000$ (the code NSD
# measures); five transposed convolutions (D1 to D5) bring it back to 3×64×64. The table is read from the
# model itself (`cce_core.plots.layer_table`), with the paper's width 64 and $D = 4000$.

# %%
g128 = ContextEncoder(128)
table_g = pd.DataFrame(layer_table(g128, 128)).set_index("name")
table_g

# %% [markdown]
# The discriminator $D$ judges the central 64×64 block only, real or inpainted:

# %%
d128 = Discriminator(128)
pd.DataFrame(layer_table(d128, 64)).set_index("name")

# %% [markdown]
# The parameter counts are those of Pathak's Torch code (`train.lua`, no biases: the Torch code zeroes them),
# counted from its layers one by one: 71,124,544 for the generator and 2,765,568 for the discriminator. The
# bottleneck E6 and the first up-convolution D1 hold most of them, so $D$ sets the model's size.

# %%
counts = {"G128": count_parameters(g128), "D128": count_parameters(d128)}
assert counts == {"G128": 71_124_544, "D128": 2_765_568}, counts
assert table_g["params"].sum() == counts["G128"]
share = (table_g.loc["E6", "params"] + table_g.loc["D1", "params"]) / counts["G128"]
print(f"G128: {counts['G128']:,} parameters; D128: {counts['D128']:,}")
print(f"E6 and D1 hold {share:.1%} of G128's parameters")
glue("ce_params_g128", counts["G128"], display=False)
glue("ce_params_d128", counts["D128"], display=False)

# %% [markdown]
# ## The 64×64 context encoder
#
# The paper trains a context encoder "for 64x64 pixels images in a standard way": one layer fewer in the
# encoder and in the decoder. `ContextEncoder(64)` removes the highest-resolution layer on both sides (what
# Pathak's code itself does for 64×64 images, `fineSize=64`); its discriminator drops D's first layer. It
# inpaints the central 32×32 block of a 64×64 image, with a 2-pixel overlap ring.

# %%
g64, d64 = ContextEncoder(64), Discriminator(64)
table_64 = pd.DataFrame(layer_table(g64, 64)).set_index("name")
counts_64 = {"G64": count_parameters(g64), "D64": count_parameters(d64)}
assert counts_64 == {"G64": 70_930_752, "D64": 2_637_312}, counts_64
print(f"G64: {counts_64['G64']:,} parameters; D64: {counts_64['D64']:,}")
print(f"central block at 64: {center_box(64)}, overlap ring {default_overlap(64)} px "
      f"(at 128: {center_box(128)}, ring {default_overlap(128)} px)")
del g128, d128, g64, d64  # 280 MB each for the generators
table_64

# %% [markdown]
# ## The cascade, eq. (1) and (2)
#
# The cascade trains the 64 CE first, then the 128 CE with the 64 CE frozen. The 128 CE's input is
#
# $$
# x_{128} = \bar M \odot P + M \odot {\nearrow} F_{64}({\searrow}\bar M \odot {\searrow} P),
# $$
#
# which enters the reconstruction loss of eq. (1), $\lVert M \odot (P - F(x_{128}))\rVert^2$, and the
# adversarial loss of eq. (2), where $D$ compares $P$ with $F(x_{128})$. `cce_core.cascade` makes $\searrow$
# leak-free (the mask is max-pooled, the image average-pooled after the hole is zeroed) and $\nearrow$
# bilinear (the paper does not name the filters).
#
# Below, one photograph through a **small untrained** cascade (a reduced width and code dimension, printed
# below; random initial weights as in Pathak's code), with a central mask and with random blocks. With weights drawn
# from N(0, 0.02) an untrained network's output is almost exactly 0, the grey in the middle of the [-1, 1]
# range, so both networks fill the hole with flat grey: what matters here is where each stage's pixels come from
# (Pathak's mean-colour fill in (i), the leak-free half-size input in (ii), the upscaled 64 CE result pasted into
# the hole in (iii)). The trained models' inpaintings are on the figures page of the reproduction.

# %%
photo = load_images(data, limit=1, embedded_count=1, seed=seed, progress=False)
print(photo.description, "-", photo.names[0])
torch.manual_seed(seed)
cascade = CascadeContextEncoder(ContextEncoder(64, bottleneck, "center", width=width),
                                ContextEncoder(128, bottleneck, "center", width=width)).eval()
cascade_full = CascadeContextEncoder(ContextEncoder(64, bottleneck, "full", width=width),
                                     ContextEncoder(128, bottleneck, "full", width=width)).eval()
image = photo.images[0]
print(f"untrained cascade: width {width}, code dimension D = {bottleneck}, "
      f"{count_parameters(cascade.ce128):,} parameters in its 128 CE")
masks = {"central": central_mask(1)[0],
         "random blocks": random_blocks(1, generator=torch.Generator().manual_seed(seed))[0]}

# %% tags=["hide-input"] mystnb={"image": {"alt": "Two rows of six panels, one per mask: the photograph, the masked input, the downscaled input of the 64 CE, its output, the upscaled fill pasted into the hole, and the 128 CE's output, all from untrained networks"}, "figure": {"caption": "How data flows through the cascade, stage by stage, for the central mask and for random blocks. The networks are untrained, so the fills are noise: the figure shows the plumbing, not a result."}}
fig, axes = image_grid(4, 3, size=FIG_WIDTH_IN / 3, title="The cascade on one photograph (untrained networks)")
for row, (name, mask) in enumerate(masks.items()):
    stages = cascade_stages(cascade if name == "central" else cascade_full, image, mask)
    show_grid(list(stages.values()), [textwrap.fill(t, 18) for t in stages], axes=axes[2 * row:2 * row + 2].ravel())
    axes[2 * row, 0].set_ylabel(name)
plt.show()

# %% [markdown]
# ### Known pixels pass through, hidden pixels never reach the 64 CE
#
# Three properties of eq. (1) and of the pasting of the result, checked on this photograph for both masks:
# the cascade's input $x_{128}$ and its final inpainting keep every known pixel of $P$ exactly; and changing the
# hidden pixels of $P$ changes neither the 64 CE's input nor $x_{128}$.

# %%
x = to_float(image[None])
for name, mask in masks.items():
    model, m = (cascade if name == "central" else cascade_full), mask[None]
    known = (1 - m).bool().expand_as(x)
    with torch.no_grad():
        x128 = model.prepare_input(x, m)
        out = model.inpaint(x, m)
        scrambled = torch.where(known, x, torch.rand_like(x) * 2 - 1)  # new content in the hole only
        same_input = torch.equal(model.prepare_input(scrambled, m), x128)
        same_small = torch.equal(downscale(scrambled * (1 - m)), downscale(x * (1 - m)))
    assert torch.equal(x128[known], x[known]) and torch.equal(out[known], x[known])
    assert same_input and same_small
    print(f"{name}: known pixels unchanged in x_128 and in the inpainting; "
          f"hole content reaches neither the 64 CE nor x_128 ({int(m.sum())} hidden pixels, "
          f"{int(downscale_mask(m).sum())} at 64)")

# %% [markdown]
# ### The 64 CE stays frozen
#
# While the 128 CE trains, the 64 CE keeps its weights and its BatchNorm statistics: its parameters need no
# gradient and it stays in eval mode when the cascade is put in training mode. One optimiser step on a
# reconstruction loss through the whole cascade changes the 128 CE and leaves the 64 CE bit for bit as it was.

# %%
before = {k: v.clone() for k, v in cascade.ce64.state_dict().items()}
cascade.train()
assert not cascade.ce64.training and cascade.ce128.training
assert not any(p.requires_grad for p in cascade.ce64.parameters())
trainable = [p for p in cascade.parameters() if p.requires_grad]
opt = torch.optim.Adam(trainable, lr=2e-3, betas=(0.5, 0.999))
batch = to_float(load_images(data, limit=4, embedded_count=4, seed=seed, progress=False).images)
m = central_mask(len(batch))
lo, hi = center_box(128)
loss = ((cascade(batch, m) - batch[:, :, lo:hi, lo:hi]) ** 2).mean()
ce128_before = cascade.ce128.encoder[0].weight.clone()
opt.zero_grad()
loss.backward()
opt.step()
cascade.eval()
assert all(p.grad is None for p in cascade.ce64.parameters())
assert all(torch.equal(before[k], v) for k, v in cascade.ce64.state_dict().items())
assert not torch.equal(ce128_before, cascade.ce128.encoder[0].weight)
print(f"trainable parameters: {sum(p.numel() for p in trainable):,} (the 128 CE: "
      f"{count_parameters(cascade.ce128):,}); the 64 CE's {len(before)} tensors are unchanged after a step")

# %% [markdown]
# ## The training recipe
#
# The paper keeps Pathak's hyper-parameters. The generator's loss is
# $L = \lambda_{rec} L_{rec} + \lambda_{adv} L_{adv}$ with $\lambda_{rec} = 0.999$ and $\lambda_{adv} = 0.001$,
# the adversarial term being the non-saturating $\mathrm{BCE}(D(F(x)), 1)$. For central masks $L_{rec}$ is a
# mean squared error over the predicted 64×64 block, weighted 10× on the 4-pixel ring of known pixels around the
# hole, which makes the prediction blend into its border. Each iteration first updates $D$, then $F$, with Adam.
# The values below are `cce_core.config.TrainConfig`'s defaults; `tests/test_recipe.py` checks on a fixed
# batch that one training step computes exactly this loss, with these optimiser settings.

# %%
cfg = TrainConfig()
recipe = pd.DataFrame({"value": [cfg.wtl2, round(1 - cfg.wtl2, 6), cfg.overlap_weight, cfg.lr_g, cfg.lr_d,
                                 f"({cfg.beta1}, 0.999)", cfg.batch_size]},
                      index=["lambda_rec (wtl2)", "lambda_adv", "ring weight", "Adam lr, G", "Adam lr, D",
                             "Adam betas", "batch size"])
recipe

# %% mystnb={"image": {"alt": "A square heat map of the reconstruction weights over the central 64 by 64 block: a bright ring of width 4 around a darker centre"}, "figure": {"caption": "The reconstruction loss's weights for the central mask: the 4-pixel ring around the hole weighs 10 times the hole itself."}}
w = reconstruction_weights(cfg, central_mask(1))[0, 0]
print(f"W over the 64x64 block: {float(w.min()):.3f} in the hole, {float(w.max()):.3f} on the ring")
fig, ax = plt.subplots(figsize=(2.6, 2.6), layout="constrained")
ax.imshow(w, cmap="viridis")
ax.set(title="L2 weights W (central)", xticks=[], yticks=[])
plt.show()

# %% [markdown]
# ## How long the networks train
#
# The paper does not say how long its networks trained: it keeps "the same parameters and hyper-parameters" as
# Pathak et al. The training lengths that matter here, in image samples per model, are kept in one place,
# `cce_core.config.TRAINING_LENGTH`, from which this table, the re-run page, the report and the CPU study take them.

# %% tags=["hide-input"]
t, p, paper_preset = TRAINING_LENGTH, PATHAK_TRAINING, PRESETS["paper"]
lengths = pd.DataFrame(
    {"image samples per model": ["not stated", f"{t['pathak_readme']:,}", f"{t['pathak_default']:,}",
                                 f"{t['paper_preset']:,}", f"{MIN_SAMPLES:,} or more"],
     "how": ["section 5: Pathak's parameters and hyper-parameters",
             f"{p['epochs_readme']} epochs of Paris StreetView ({p['images']:,} images, batches of {p['batch_size']})",
             f"{p['epochs_default']} epochs, the same way",
             f"{paper_preset['steps']:,} steps of {paper_preset['batch_size']} (PRESETS['paper'])",
             f"cce_core.stats.MIN_SAMPLES, with D = {PAPER_BOTTLENECK}, width {PAPER_WIDTH} and "
             f"{PAPER_TRAIN_IMAGES:,} distinct training images"]},
    index=["the paper", "Pathak's README", "Pathak's code default", "the book's paper preset",
           "the book's tier 'paper scale'"])
glue("train_len_pathak_readme", t["pathak_readme"], display=False)
glue("train_len_pathak_default", t["pathak_default"], display=False)
glue("train_len_pathak_epochs_readme", p["epochs_readme"], display=False)
glue("train_len_pathak_epochs_default", p["epochs_default"], display=False)
glue("train_len_paper_preset", t["paper_preset"], display=False)
glue("train_len_ratio", t["pathak_readme"] / t["paper_preset"], display=False)
glue("train_len_tier", MIN_SAMPLES, display=False)
lengths

# %% [markdown]
# The `paper` preset trains {glue:text}`train_len_ratio:.1f` times fewer samples than Pathak's README. That is a
# choice of budget, to keep the first run of the paper's architecture short on one GPU (the re-run page estimates
# its cost), not the paper's length and not a finding. The tier "paper scale" starts just below the preset, so in
# this book "paper scale" means the paper's architecture and number of training images, trained that much shorter
# than Pathak's README: a verdict at that tier is about networks trained that long.
#
# ### What a training step costs
#
# The floating-point operations of one training iteration (the D step and the G step, forward and backward) per
# image, at the paper's sizes, counted by the training benchmark's own counter (`benchmarks/train_throughput.py`,
# PyTorch's `FlopCounterMode`) on one step of a batch of two (the count per image does not depend on the batch).
# The cascade's 128 CE also runs its frozen 64 CE forward. These counts give the re-run page its GPU estimate.

# %% tags=["hide-input"]
spec = importlib.util.spec_from_file_location("train_throughput", REPO / "benchmarks" / "train_throughput.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
paper_sizes = {k: paper_preset[k] for k in ("width", "bottleneck")}
gflop = {model: bench.gflop_per_image(model, dict(batch_size=2, device="cpu", **paper_sizes), torch.device("cpu"))
         for model in MODELS}
pd.DataFrame({"GFLOP per image and iteration": [round(gflop[m], 2) for m in MODELS]},
             index=["64 CE", "128 CE", "cascade's 128 CE"])

# %% tags=["remove-cell"]
# The re-run page's numbers (book/rerun.md glues them from here): the presets, the time budget's constants, what each
# training set reaches, the CPU benchmark's measured images/s and the GPU estimate from the counts above.
study = PRESETS["study"]
for model in MODELS:
    glue(f"gflop_{model}", gflop[model], display=False)
for name, preset in PRESETS.items():
    glue(f"preset_{name}_steps", preset["steps"], display=False)
    glue(f"preset_{name}_batch", preset["batch_size"], display=False)
    glue(f"preset_{name}_samples", preset["steps"] * preset["batch_size"], display=False)
    glue(f"preset_{name}_snapshot_every", preset["snapshot_every"], display=False)
    glue(f"preset_{name}_bottleneck", preset["bottleneck"], display=False)
    glue(f"preset_{name}_width", preset["width"], display=False)
models_per_seed = len(TRAIN_ORDER)
glue("budget_reserve_paper", EVAL_RESERVE_S["paper"], display=False)
glue("budget_overhead_paper", MODEL_OVERHEAD_S["paper"], display=False)
glue("budget_extra_seed", EXTRA_SEED_EVAL, display=False)
glue("models_per_seed", models_per_seed, display=False)

# What each training set reaches if every model finishes, with the CPU presets and with the paper preset, and what
# the book then concludes (cce_core.report: verdicts at paper scale only).
CONCLUDES = {"paper scale": "verdicts on the paper's claims (with two seeds or more)",
             "paper architecture, reduced data": "what was observed; no verdict",
             "reduced scale": "what was observed; no verdict"}
options = {"mini": PHOTOS128_TRAIN["train-mini.zip"], "gpu": PHOTOS128_TRAIN["train-gpu.zip"],
           "shards": PHOTOS128_TRAIN["train-0*.zip"], "imagenet": PAPER_TRAIN_IMAGES}
for key, n_images in options.items():
    tier_cpu = scale_tier(study["steps"] * study["batch_size"], study["bottleneck"], study["width"], n_images)
    tier_paper = scale_tier(t["paper_preset"], PAPER_BOTTLENECK, PAPER_WIDTH, n_images)
    glue(f"data_{key}_images", n_images, display=False)
    glue(f"tier_{key}_cpu", tier_cpu, display=False)
    glue(f"tier_{key}_paper", tier_paper, display=False)
    glue(f"concludes_{key}", CONCLUDES[tier_paper], display=False)
image_bytes = 3 * SIZE * SIZE  # one decoded image, uint8, held in memory (and on the GPU) for the whole training
glue("image_kib", image_bytes / 2**10, display=False)
glue("imagenet_folder_gb", PAPER_TRAIN_IMAGES * image_bytes / 1e9, display=False)

# Measured: the CPU benchmark (the cpu preset's sizes, which the study preset shares), the arm without the fast path.
bench_file, cpu_rate = bench.cpu_rates(REPO / "benchmarks" / "results", arm="defaults")
cpu = json.loads(bench_file.read_text())
assert cpu["sizes"] in ("cpu", "study") and all(r[k] == PRESETS["cpu"][k] == PRESETS["study"][k] for r in cpu["results"]
                                     for k in ("width", "bottleneck", "batch_size"))
glue("cpu_bench_device", cpu["provenance"]["device"], display=False)
glue("cpu_bench_file", bench_file.name, display=False)
for model in MODELS:
    glue(f"cpu_rate_{model}", cpu_rate[model], display=False)


def trainings(seeds: int = 1, central_once: bool = False) -> list[str]:
    """The models a reproduction trains for ``seeds`` seeds (``--central-once``: the central-mask ones once)."""
    return [model for s in range(seeds) for mask, model in TRAIN_ORDER if mask != "central" or not central_once or s == 0]


def train_hours(samples: float, rate: dict, seeds: int = 1, central_once: bool = False) -> float:
    """Hours of training, one model after another, at ``rate`` images/s per model."""
    return sum(samples / rate[model] for model in trainings(seeds, central_once)) / 3600


glue("cpu_study_trainings", len(trainings(5, central_once=True)), display=False)
glue("cpu_hours_cpu_preset", train_hours(PRESETS["cpu"]["steps"] * PRESETS["cpu"]["batch_size"], cpu_rate),
     display=False)
glue("cpu_hours_study", train_hours(study["steps"] * study["batch_size"], cpu_rate, seeds=5, central_once=True),
     display=False)
cpu_gflop = {r["model"]: r["gflop_per_image"] for r in cpu["results"]}
cpu_paper_rate = {m: cpu_rate[m] * cpu_gflop[m] / gflop[m] for m in MODELS}  # the paper's sizes at the same FLOP/s
glue("cpu_hours_paper_preset", train_hours(t["paper_preset"], cpu_paper_rate), display=False)

# Estimated, never measured: a GPU reaching an assumed share of its dense bf16 peak in a training step. The
# random-block counts stand for both masks (the central-mask networks predict only the central block: fewer FLOP).
GPU = "H100"
ASSUMED_SHARE = (0.02, 0.10)  # an assumption about small convolutions at batch 64, not a measurement
peak = bench.bf16_peak(GPU)
glue("gpu_name", GPU, display=False)
glue("gpu_peak_tflops", peak, display=False)
for label, share in zip(("low", "high"), ASSUMED_SHARE):
    rate = {m: share * peak * 1e3 / gflop[m] for m in MODELS}
    glue(f"gpu_share_{label}", 100 * share, display=False)
    glue(f"gpu_rate_{label}_ce64", rate["ce64"], display=False)
    glue(f"gpu_rate_{label}_cce128", rate["cce128"], display=False)
    glue(f"gpu_hours_{label}_preset", train_hours(t["paper_preset"], rate), display=False)
    glue(f"gpu_hours_{label}_preset_3", train_hours(t["paper_preset"], rate, seeds=3), display=False)
    glue(f"gpu_hours_{label}_pathak", train_hours(t["pathak_readme"], rate), display=False)
    for seeds in (1, 3):  # the --time-budget that lets the slowest model finish: the plan's bound, solved for it
        m = models_per_seed * seeds
        reserve = EVAL_RESERVE_S["paper"] * (1 + EXTRA_SEED_EVAL * (seeds - 1))
        budget = m * t["paper_preset"] / rate["cce128"] + reserve + m * MODEL_OVERHEAD_S["paper"]
        glue(f"gpu_budget_{label}_{seeds}", budget, display=False)
