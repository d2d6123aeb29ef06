"""Pathak et al.'s training recipe, which the paper keeps (section 4.1; spec section 7), checked on a fixed tiny batch.

One step of ``cce_core.train.make_step`` is recomputed by hand from the networks' outputs: the generator's loss
is 0.001 * BCE(D(G(x)), 1) + mean(W * (G(x) - x_centre)^2) with W = 0.999 on the hole and 10 * 0.999 on the
overlap ring; the discriminator sees only the central block for central masks; its weights change only in
its own step; and ``train`` builds Adam with betas (0.5, 0.999), lr 2e-3 for G and 2e-4 for D.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import cce_core.train as T
from cce_core.checkpoint import build_models
from cce_core.config import make_config
from cce_core.data import to_float
from cce_core.masks import central_mask, fill_hole

TINY = dict(batch_size=4, bottleneck=16, width=8)


def tiny_batch(size: int, n: int = 4) -> torch.Tensor:
    """A fixed batch of n float images in [-1, 1] (seeded), at the model's resolution."""
    g = torch.Generator().manual_seed(123)
    return to_float(torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8))


def hand_weights(size: int, ring: int) -> torch.Tensor:
    """W over the central block, written out: 0.999 on the hole, 10 * 0.999 on the ring of known pixels."""
    block = size // 2
    w = torch.full((block, block), 10 * 0.999)
    w[ring:block - ring, ring:block - ring] = 0.999
    return w


class Step:
    """One ``make_step`` iteration with every optimiser step and every D input recorded."""

    def __init__(self, model: str) -> None:
        torch.manual_seed(0)
        self.cfg = make_config("smoke", model=model, mask="central", **TINY)
        self.g, self.d = build_models(self.cfg)
        self.g.train()
        self.d.train()
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=self.cfg.lr_g, betas=(self.cfg.beta1, 0.999))
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=self.cfg.lr_d, betas=(self.cfg.beta1, 0.999))
        self.g0, self.d0 = copy.deepcopy(self.g), copy.deepcopy(self.d)  # before the step
        self.d_steps, self.g_steps, self.d_inputs = [], [], []
        self.g_grads: dict[str, torch.Tensor] = {}
        opt_d_step, opt_g_step = self.opt_d.step, self.opt_g.step

        def d_step(*args, **kwargs):
            out = opt_d_step(*args, **kwargs)
            self.d_steps.append(copy.deepcopy(self.d))  # D right after its own update
            return out

        def g_step(*args, **kwargs):
            self.g_grads = {n: p.grad.clone() for n, p in self.g.named_parameters() if p.grad is not None}
            self.g_steps.append(len(self.d_steps))
            return opt_g_step(*args, **kwargs)

        self.opt_d.step, self.opt_g.step = d_step, g_step
        self.d.net.register_forward_pre_hook(lambda mod, inp: self.d_inputs.append(inp[0].detach().clone()))
        self.x = tiny_batch(self.cfg.size)
        self.m = central_mask(len(self.x), self.cfg.size)
        self.losses = T.make_step(self.cfg, self.g, self.d, self.opt_g, self.opt_d)(self.x, self.m)


@pytest.fixture(scope="module", params=["ce128", "ce64"])
def step(request: pytest.FixtureRequest) -> Step:
    return Step(request.param)


def test_generator_loss_by_hand(step: Step) -> None:
    """The G gradient is that of 0.001 * BCE(D(G(x)), 1) + mean(W (G(x) - x_centre)^2), D as just updated."""
    assert len(step.d_steps) == 1 and step.g_steps == [1], "one D step, then one G step"
    size, block = step.cfg.size, step.cfg.size // 2
    lo = (size - block) // 2
    ring = 4 if size == 128 else 2
    g0, d1 = step.g0, copy.deepcopy(step.d_steps[0])
    fake = g0(fill_hole(step.x, step.m))  # G before its update, in training mode (batch statistics)
    real = step.x[:, :, lo:lo + block, lo:lo + block]
    logits = d1.net(fake).flatten()
    bce = F.softplus(-logits).mean()  # -log sigmoid(l): BCE with target 1, written out
    rec = (hand_weights(size, ring) * (fake - real) ** 2).mean()
    loss = 0.001 * bce + rec
    loss.backward()
    assert step.losses[1].item() == pytest.approx(bce.item(), rel=1e-5)
    assert step.losses[2].item() == pytest.approx(rec.item(), rel=1e-5)
    assert step.losses[3].item() == pytest.approx(((fake - real) ** 2).mean().item(), rel=1e-5)
    for name, p in g0.named_parameters():
        torch.testing.assert_close(step.g_grads[name], p.grad, rtol=1e-4, atol=1e-7,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_discriminator_loss_by_hand(step: Step) -> None:
    """D's loss is BCE(D(real centre), 1) + BCE(D(G(x)), 0), real and fake in separate passes."""
    block, lo = step.cfg.size // 2, step.cfg.size // 4
    with torch.no_grad():
        fake = step.g0(fill_hole(step.x, step.m))
        d0 = copy.deepcopy(step.d0)
        real_logits = d0.net(step.x[:, :, lo:lo + block, lo:lo + block]).flatten()
        fake_logits = d0.net(fake).flatten()
    by_hand = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    assert step.losses[0].item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_discriminator_sees_only_the_central_block(step: Step) -> None:
    block, lo = step.cfg.size // 2, step.cfg.size // 4
    assert step.d_inputs, "D was never called"
    assert all(t.shape[-2:] == (block, block) for t in step.d_inputs), [tuple(t.shape) for t in step.d_inputs]
    assert torch.equal(step.d_inputs[0], step.x[:, :, lo:lo + block, lo:lo + block]), "D's real input is the centre"


def test_generator_step_leaves_discriminator_unchanged(step: Step) -> None:
    """D's weights after the whole iteration are those right after its own step: the G step does not move D."""
    after_d_step = dict(step.d_steps[0].named_parameters())
    for name, p in step.d.named_parameters():
        assert torch.equal(p, after_d_step[name]), f"the G step changed D's {name}"
    changed = [n for n, p in step.d.named_parameters() if not torch.equal(p, dict(step.d0.named_parameters())[n])]
    assert changed, "the D step changed nothing"


def test_adam_settings(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``train`` builds one Adam per network: betas (0.5, 0.999), lr 2e-3 for G and 2e-4 for D."""
    made = []
    adam = torch.optim.Adam

    def recording_adam(params, *args, **kwargs):
        opt = adam(params, *args, **kwargs)
        made.append(opt)
        return opt

    monkeypatch.setattr(torch.optim, "Adam", recording_adam)
    cfg = make_config("smoke", model="ce64", mask="central", steps=1, log_every=1, checkpoint_every=1,
                        embedded_count=4, device="cpu", **TINY)
    assert (cfg.lr_g, cfg.lr_d, cfg.beta1) == (2e-3, 2e-4, 0.5)
    seen = {}
    real_make_step = T.make_step

    def spy(cfg_, g, d, opt_g, opt_d, *args, **kwargs):
        seen.update(g=g, d=d, opt_g=opt_g, opt_d=opt_d)
        return real_make_step(cfg_, g, d, opt_g, opt_d, *args, **kwargs)

    monkeypatch.setattr(T, "make_step", spy)
    T.train(cfg, tmp_path / "run", progress=False)
    assert seen, "train did not build its step with make_step"
    for net, opt, lr in (("g", "opt_g", 2e-3), ("d", "opt_d", 2e-4)):
        assert seen[opt] in made, f"{opt} is not a torch.optim.Adam"
        params = {id(p) for group in seen[opt].param_groups for p in group["params"]}
        assert params == {id(p) for p in seen[net].parameters()}, f"{opt} does not hold exactly {net}'s parameters"
        for group in seen[opt].param_groups:
            assert group["lr"] == lr and group["betas"] == (0.5, 0.999), (opt, group["lr"], group["betas"])


def test_training_length_has_one_source():
    """Pathak's README length (500 epochs of Paris StreetView: 116,500 iterations of 64, spec 7.2), his code's default
    (25 epochs), the paper preset's steps x batch, and the tier threshold just below the preset."""
    from cce_core.config import PRESETS, TRAINING_LENGTH, training_length_note
    from cce_core.stats import MIN_SAMPLES

    assert TRAINING_LENGTH == {"paper": None, "pathak_readme": 116_500 * 64, "pathak_default": 5_825 * 64,
                               "paper_preset": PRESETS["paper"]["steps"] * PRESETS["paper"]["batch_size"]}
    assert MIN_SAMPLES <= TRAINING_LENGTH["paper_preset"] < TRAINING_LENGTH["pathak_readme"]
    assert "7,456,000" in training_length_note() and "1,024,000" in training_length_note()
