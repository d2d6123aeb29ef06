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
import textwrap

import matplotlib.pyplot as plt
import pandas as pd
import torch

from cce_core.cascade import CascadeContextEncoder, downscale, downscale_mask
from cce_core.config import TrainConfig
from cce_core.data import load_images, to_float
from cce_core.evaluate import cascade_stages
from cce_core.glue import glue
from cce_core.losses import reconstruction_weights
from cce_core.masks import center_box, central_mask, default_overlap, random_blocks
from cce_core.models import ContextEncoder, Discriminator, count_parameters
from cce_core.plots import FIG_WIDTH_IN, image_grid, layer_table, show_grid, use_book_style

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
# as computed in the reference spec: 71,124,544 for the generator and 2,765,568 for the discriminator. The bottleneck
# E6 and the first up-convolution D1 hold most of them, so $D$ sets the model's size.

# %%
counts = {"G128": count_parameters(g128), "D128": count_parameters(d128)}
assert counts == {"G128": 71_124_544, "D128": 2_765_568}, counts
assert table_g["parameters"].sum() == counts["G128"]
share = (table_g.loc["E6", "parameters"] + table_g.loc["D1", "parameters"]) / counts["G128"]
print(f"G128: {counts['G128']:,} parameters; D128: {counts['D128']:,}")
print(f"E6 and D1 hold {share:.1%} of G128's parameters")
glue("ce_params_g128", counts["G128"], display=False)
glue("ce_params_d128", counts["D128"], display=False)

# %% [markdown]
# ## The 64×64 context encoder
#
# The paper trains a context encoder "for 64x64 pixels images in a standard way": one layer fewer in the
# encoder and in the decoder. `ContextEncoder(64)` removes the highest-resolution layer on both sides (the
# spec's Variant R, Pathak's own rule for `fineSize=64`); its discriminator drops D's first layer. It
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

# %% tags=["hide-input"]
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

# %%
w = reconstruction_weights(cfg, central_mask(1))[0, 0]
print(f"W over the 64x64 block: {float(w.min()):.3f} in the hole, {float(w.max()):.3f} on the ring")
fig, ax = plt.subplots(figsize=(2.6, 2.6), layout="constrained")
ax.imshow(w, cmap="viridis")
ax.set(title="L2 weights W (central)", xticks=[], yticks=[])
plt.show()
