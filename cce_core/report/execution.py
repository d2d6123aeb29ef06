"""Execution statistics of a reproduction (the execution page), from its ``run.json``."""

from __future__ import annotations

import re

# --- execution statistics (run.json) --------------------------------------------------------------------------

def _seed_and_name(key: str, first_seed: int) -> tuple[int, str]:
    """run.json's step key (``seed1/train-ce64-central``, ``nsd_eval``) as (seed, step name)."""
    folder, _, name = key.rpartition("/")
    return (int(folder.removeprefix("seed")) if folder else first_seed), name


def execution_rows(run: dict) -> list[dict]:
    """The steps of a reproduction, from its ``run.json`` (:class:`cce_core.reproduce.Recorder`): one row per step in
    the order it ran (call, seed, step, notebook, wall time in s, status), the notebook that failed if one did, and
    each call's wall time and status. A reproduction made in several calls into one folder (``--train-only``, then
    the notebooks) lists the earlier calls first (``earlier_calls``); a later call that reused a training shows it
    at about 0 s. Trainings (``train-*``) run without a notebook of their own (the Training page shows them all)."""
    rows = []
    calls = [*run.get("earlier_calls", []), run]
    for i, call in enumerate(calls, 1):
        label = f"{i} ({str(call.get('commit') or call.get('provenance', {}).get('commit', ''))[:7]})"
        for key, seconds in (call.get("wall_seconds") or {}).items():
            seed, name = _seed_and_name(key, run["seed"])
            training = name.startswith("train-")
            rows.append({"call": label, "seed": seed, "step": name + ("" if training else " (notebook)"),
                         "wall time (s)": seconds, "status": "done"})
        failed = re.search(r"notebook (\S+)\.ipynb failed", call.get("error") or "")
        if failed:
            rows.append({"call": label, "seed": "", "step": f"{failed.group(1)} (notebook)", "wall time (s)": None,
                         "status": "failed"})
        rows.append({"call": label, "seed": "", "step": "whole call", "wall time (s)": call.get("total_wall_seconds"),
                     "status": call.get("status", "unknown")})
    return rows


def training_rows(run: dict) -> list[dict]:
    """Each training of a reproduction, from its ``run.json``: seed, run, image samples seen (and planned), the
    step's wall time (training and its notebook), the training's own time and samples per second where
    ``run.json`` records the split (``stage_seconds``, runs made since it does; None before), and the device."""
    first = run["seed"]
    groups = run["training"] if "seed_folders" in run else {f"seed{first}": run["training"]}
    stages = run.get("stage_seconds", {})
    rows = []
    for group, trainings in groups.items():
        seed = int(group.removeprefix("seed"))
        prefix = "" if seed == first else f"seed{seed}/"
        for name, t in trainings.items():
            key = f"{prefix}train-{name}"
            train_s = t.get("train_seconds") or stages.get(key, {}).get("training")  # the log's, where it has it
            samples = (f"{t['samples']:,}" if t["samples"] == t["planned_samples"]
                       else f"{t['samples']:,} of {t['planned_samples']:,}")
            rows.append({"seed": seed, "run": name, "samples": samples,
                         "step wall time (s)": run.get("wall_seconds", {}).get(key),
                         "training (s)": train_s,
                         "samples/s": round(t["samples"] / train_s, 1) if train_s else None,
                         "device": t["device"]})
    return rows
