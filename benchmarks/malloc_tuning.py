"""Host work of CPU training: glibc's default malloc against ``cce_core.config.keep_freed_memory`` (issue 32).

    python benchmarks/malloc_tuning.py --data ../shared/data/photos128/train-mini.zip [--model ce128] [--steps 40]
        [--rounds 3] [--threads 1] [--json benchmarks/results/cpu-<date>-malloc.json]

Trains ``python -m cce_core train --preset study`` (the CPU study's sizes) for ``--steps`` steps, ``--rounds`` times
per arm, in fresh processes, the arms alternating (order reversed every other round): ``glibc defaults``
(``CCE_KEEP_FREED_MEMORY=0``) and ``keep freed memory`` (what the command line does). Per run: wall seconds, user
and system CPU seconds and minor page faults of the child (``getrusage``), and the training's own images per second
(median of its log after the first record, so start-up is not in it). Prints each arm's medians and writes them
with the CPU model, threads and load average. A benchmark prints figures; no test times anything.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from cce_core.provenance import cpu_model  # noqa: E402

ARMS = {"glibc defaults": {"CCE_KEEP_FREED_MEMORY": "0"}, "keep freed memory": {}}


def run_once(arm: str, args: argparse.Namespace, out: Path) -> dict:
    """One training of ``args.steps`` steps in a fresh process under ``arm``; its costs and logged speed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | ARMS[arm]
    env |= {"OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "cce_core", "train", "--preset", "study", "--model", args.model, "--steps",
           str(args.steps), "--data", *args.data, "--out", str(out), "--quiet", "--force"]
    if args.model == "cce128":
        cmd += ["--ce64", str(args.ce64)]
    before, t = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall, after = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)
    logged = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x.strip()]
    return {"wall_s": wall, "user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime,
            "minor_faults": after.ru_minflt - before.ru_minflt,
            "images_per_s": statistics.median(r["images_per_s"] for r in logged[1:] if "images_per_s" in r)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", required=True, help="training images (e.g. train-mini.zip)")
    p.add_argument("--model", choices=("ce64", "ce128", "cce128"), default="ce128")
    p.add_argument("--steps", type=int, default=40, help="steps per run (log every 10: the first record is dropped)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "cce128":  # the cascade's 64 CE, trained once (not timed)
            args.ce64 = Path(tmp) / "ce64"
            subprocess.run([sys.executable, "-m", "cce_core", "train", "--preset", "study", "--model", "ce64",
                            "--steps", "10", "--data", *args.data, "--out", str(args.ce64), "--quiet"],
                           env=os.environ | {"PYTHONPATH": str(ROOT)}, check=True, stdout=subprocess.DEVNULL)
        for r in range(args.rounds):
            for arm in (list(ARMS) if r % 2 == 0 else list(ARMS)[::-1]):
                runs[arm].append(run_once(arm, args, Path(tmp) / "run"))
                print(f"round {r + 1} {arm}: " + ", ".join(f"{k} {v:,.2f}" for k, v in runs[arm][-1].items()),
                      flush=True)
    summary = {arm: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for arm, rs in runs.items()}
    base = summary["glibc defaults"]["images_per_s"]
    for arm, s in summary.items():
        print(f"{arm:>18}: {s['images_per_s']:.1f} images/s ({s['images_per_s'] / base:.2f}x), "
              f"sys {s['sys_s']:.1f} s, user {s['user_s']:.1f} s, {s['minor_faults']:,.0f} minor faults (medians)")
    if args.json:
        args.json.write_text(json.dumps({
            "what": "CPU training host work: glibc malloc defaults vs cce_core.config.keep_freed_memory",
            "cpu": cpu_model(), "threads": args.threads, "model": args.model, "preset": "study",
            "steps": args.steps, "rounds": args.rounds, "data": [Path(d).name for d in args.data],
            "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M"), "runs": runs,
            "median": summary}, indent=1))


if __name__ == "__main__":
    main()
