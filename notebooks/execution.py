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
# # Execution statistics
#
# How long each step of the run this book shows took, and whether it finished: every executed notebook with its
# wall time, then every training with the image samples it saw. Both tables are read from the run's record,
# `book/generated/run.json`, which `python -m cce_core reproduce` writes as it goes (also when a step fails), on
# whatever machine ran it; your own reproduction writes its own in `OUT/generated/run.json`.

# %% tags=["parameters", "remove-cell"]
run_json = "../book/generated/run.json"  # the run's record, relative to this notebook

# %% tags=["hide-input", "nbval-ignore-output"] mystnb={"markdown_format": "myst"}
import json
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from cce_core.plots import TABLE_STYLES
from cce_core.provenance import dirty_warning
from cce_core.report import execution_rows, training_rows

run = json.loads(Path(run_json).read_text())
steps = pd.DataFrame(execution_rows(run))
trainings = pd.DataFrame(training_rows(run))
prov = run["provenance"]
calls = [*run.get("earlier_calls", []), run]
print(f"run: preset {run['preset']}, seeds {', '.join(map(str, run['seeds']))}; {run['status']} in "
      f"{sum(c['total_wall_seconds'] for c in calls) / 60:.1f} min over {len(calls)} call(s) on {prov['device']} "
      f"(torch {prov['torch']}, Python {prov['python']}, last call at commit {prov['commit'][:7]}, {prov['date'][:10]})")
if dirty_warning(prov):  # the last call ran from uncommitted code: said on the page
    display(Markdown(dirty_warning(prov)))

# %% [markdown]
# ## The notebooks
#
# In the order they ran: each seed's trainings (no notebook of their own: the Training page shows them), the
# trainings with eq. (1)'s weighting if the run made them, the other seeds' NSD notebooks, the scale ladder if the
# run made one, then the book's seed's NSD, figures and, if run, NSD-loss notebooks. A reproduction can be made in
# more than one call into the same folder (`reproduce --train-only`, then the same command without it): each call
# is listed with its commit, the earlier ones first, and a training that a later call found already done shows
# there at about 0 s (its own time is in the first call, and in the table of trainings below).
# "done": the step ran to its end (a "(notebook)" step is the executed notebook of that name); a failed notebook is
# listed with the error, and the call's status is "failed".

# %% tags=["hide-input", "nbval-ignore-output"]
steps.set_index(["call", "seed", "step"]).style.format({"wall time (s)": "{:,.1f}"}, na_rep="—").set_table_styles(TABLE_STYLES)

# %% [markdown]
# ## The trainings
#
# Per model and seed: the image samples seen (steps × batch size; "x of y" when a time budget cut the training
# short of the y planned), the step's wall time in the last call, and the training loop's own time (from the run's log,
# or from the record's split for runs made before the logs kept it) with its speed in samples per second.
#
# The book's CPU study was trained on a two-core machine that also ran this project's tests and book builds during
# most of its trainings (every training of seeds 1 to 4, the NSD-loss trainings, the fair ladder's cascades, its
# longer point and the NSD-gap cells): their times say how long each took there, not what two quiet cores deliver.
# The throughput of a quiet CPU is measured by the benchmark on the {doc}`re-run page <../book/rerun>`.

# %% tags=["hide-input", "nbval-ignore-output"]
print("trained on:", "; ".join(trainings["device"].astype(str).unique()))  # the CPU model: timings compare within one
(trainings.drop(columns="device").set_index(["seed", "run"]).style
 .format({"step wall time (s)": "{:,.1f}", "training (s)": "{:,.1f}", "samples/s": "{:,.1f}"}, na_rep="—")
 .set_table_styles(TABLE_STYLES))

# %% tags=["remove-cell"]
assert len(steps) >= 2 and steps["step"].iloc[-1] == "whole call"
