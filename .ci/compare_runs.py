"""Compare two reproduction folders number for number: ``python .ci/compare_runs.py BEFORE AFTER``.

Compares ``generated/metrics.json`` and every ``runs/**/log.jsonl`` of the two folders (``make reproduce
OUT=...``) and prints, per file, ``identical`` or the keys whose values differ (and files present on one side
only). Values are compared exactly: floats as Python reads them from the JSON text, i.e. bit for bit.

It ignores only fields that are wall-clock timings or stamps of when, where from or with what commit a run was
made, wherever they occur (by key name):

* ``images_per_s``: training speed in a log line (wall clock);
* ``date``: the provenance's time stamp;
* ``commit``: the provenance's git commit (before and after a change differ by construction);
* ``wall_seconds``, ``total_wall_seconds``, ``seconds``: wall-clock durations;
* ``checkpoint``: a checkpoint's file path (the folders differ).

Exit status 0 when every file is identical (up to those fields) and both folders hold the same files, else 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

IGNORED = ("images_per_s", "date", "commit", "wall_seconds", "total_wall_seconds", "seconds", "checkpoint")


def differences(a, b, path: str = "") -> list[str]:
    """The key paths where ``a`` and ``b`` differ, ignoring the keys in :data:`IGNORED`."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k in IGNORED:
                continue
            p = f"{path}.{k}" if path else str(k)
            if k not in a or k not in b:
                out.append(f"{p} (only in {'after' if k not in a else 'before'})")
            else:
                out += differences(a[k], b[k], p)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path} (length {len(a)} vs {len(b)})"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    if type(a) is not type(b) or a != b:
        return [f"{path or '(value)'}: {a!r} vs {b!r}"]
    return []


def load(path: Path):
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line]
    return json.loads(path.read_text())


def files(root: Path) -> set[str]:
    found = {p.relative_to(root).as_posix() for p in (root / "runs").rglob("log.jsonl")}
    if (root / "generated" / "metrics.json").exists():
        found.add("generated/metrics.json")
    return found


def main(before: Path, after: Path) -> int:
    print(f"ignored keys (wall-clock timings, stamps, paths): {', '.join(IGNORED)}")
    fa, fb = files(before), files(after)
    if not fa:
        print(f"{before}: no generated/metrics.json and no runs/**/log.jsonl")
        return 1
    ok = fa == fb
    for name in sorted(fa | fb):
        if name not in fa or name not in fb:
            print(f"{name}: only in {'after' if name not in fa else 'before'}")
            continue
        diff = differences(load(before / name), load(after / name))
        ok &= not diff
        print(f"{name}: identical" if not diff else f"{name}: differs in {len(diff)} keys: " + "; ".join(diff[:20]))
    print("all identical" if ok else "DIFFERENT")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.splitlines()[0])
    raise SystemExit(main(Path(sys.argv[1]), Path(sys.argv[2])))
