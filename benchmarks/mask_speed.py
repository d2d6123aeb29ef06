"""CPU time of the random-blocks mask generators: ms per batch of 64 masks at 128 (issue 9 target: < 3 ms).

    python benchmarks/mask_speed.py [--batch 64] [--repeats 50] [--threads 1]

Prints the median and the best of ``--repeats`` calls of the batched generator (``masks.random_blocks``, what
training uses) and of the loop version it replaced (``masks.random_blocks_reference``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cce_core.masks import random_blocks, random_blocks_reference  # noqa: E402


def timings(fn, batch: int, repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` calls of ``fn(batch, 128, generator)`` after one warm-up call."""
    g = torch.Generator().manual_seed(0)
    fn(batch, 128, g)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(batch, 128, g)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    for name, fn in (("batched (random_blocks)", random_blocks),
                     ("loop (random_blocks_reference)", random_blocks_reference)):
        t = timings(fn, a.batch, a.repeats if fn is random_blocks else max(5, a.repeats // 5))
        print(f"{name:32s} {a.batch} masks at 128 on the CPU ({a.threads} thread): "
              f"median {statistics.median(t):6.2f} ms, "
              f"best {min(t):6.2f} ms")


if __name__ == "__main__":
    main()
