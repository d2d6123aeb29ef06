"""The seeds of a run's random streams, derived by a hash so that no two streams ever meet.

A run (seed s) draws from several streams: its batches and per-step masks, each chunk of masks of a
:class:`cce_core.batches.MaskStream`, the NSD loss's extra masks, each process's stream under ``torchrun``, the
embedded training crops; its evaluation draws the NSD masks and the embedded evaluation crops. Each stream's seed is
:func:`derive_seed` (s, purpose, index...): ``numpy.random.SeedSequence`` hashes the run's seed, a 64-bit hash of
the purpose's name and the indices into the seed. Unlike packing the numbers into bits (where seed 0, stream 0 is
the seed 0 of every other use), two different (seed, purpose, index) give unrelated seeds: the evaluation masks are
never the first training masks.
"""

from __future__ import annotations

import hashlib

import numpy as np


def purpose_id(purpose: str) -> int:
    """A 64-bit number for a stream's purpose (the first 8 bytes of its name's SHA-256)."""
    if not purpose:
        raise ValueError("a stream needs a purpose (a non-empty name)")
    return int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:8], "little")


def derive_seed(seed: int, purpose: str, *index: int) -> int:
    """The 63-bit seed of stream (``seed``, ``purpose``, ``index``...) for ``torch.Generator.manual_seed``.

    E.g. ``derive_seed(cfg.seed, "mask chunk", c)`` for chunk c of a run's masks; the same arguments always give
    the same seed, different ones unrelated seeds (``numpy.random.SeedSequence``)."""
    if seed < 0 or any(i < 0 for i in index):
        raise ValueError(f"seeds and stream indices must be non-negative integers, got {seed} and {index}")
    state = np.random.SeedSequence([int(seed), purpose_id(purpose), *map(int, index)]).generate_state(1, np.uint64)
    return int(state[0]) & 0x7FFF_FFFF_FFFF_FFFF
