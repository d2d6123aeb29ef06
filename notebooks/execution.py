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

# %% tags=["hide-input", "nbval-ignore-output"]
import json
from pathlib import Path

import pandas as pd

from cce_core.report import execution_rows, training_rows

PADDED = [{"selector": "th, td", "props": [("padding", "0.3em 0.9em")]}]
run = json.loads(Path(run_json).read_text())
steps = pd.DataFrame(execution_rows(run))
trainings = pd.DataFrame(training_rows(run))
prov = run["provenance"]
print(f"run: preset {run['preset']}, seeds {', '.join(map(str, run['seeds']))}; {run['status']} in "
      f"{run['total_wall_seconds'] / 60:.1f} min on {prov['device']} (torch {prov['torch']}, Python {prov['python']}, "
      f"commit {prov['commit'][:7]}, {prov['date'][:10]})")

# %% [markdown]
# ## The notebooks
#
# In the order they ran: each seed's six trainings, each followed by its notebook (the step's time covers both),
# the trainings with eq. (1)'s weighting if the run made them (no notebook of their own), the other seeds' NSD
# notebooks, then the book's seed's NSD, figures and, if run, NSD-loss notebooks. A step that takes only seconds
# reused a run trained before (a reproduction resumes or reuses the trainings it finds in its `runs/` folder).
# "done": the notebook ran to its end; a failed notebook is listed with the error, and the run's status is "failed".

# %% tags=["hide-input", "nbval-ignore-output"]
steps.set_index(["seed", "step"]).style.format({"wall time (s)": "{:,.1f}"}, na_rep="—").set_table_styles(PADDED)

# %% [markdown]
# ## The trainings
#
# Per model and seed: the image samples seen (steps × batch size) against those planned (fewer when a time budget
# cut the training), the step's wall time, and, where the record splits it, the training's own time and its
# speed in samples per second. Runs recorded before that split show "—" there.

# %% tags=["hide-input", "nbval-ignore-output"]
(trainings.set_index(["seed", "run"]).style
 .format({"samples": "{:,}", "planned samples": "{:,}", "step wall time (s)": "{:,.1f}",
          "training (s)": "{:,.1f}", "samples/s": "{:,.1f}"}, na_rep="—").set_table_styles(PADDED))

# %% tags=["remove-cell"]
assert len(steps) >= 2 and steps["step"].iloc[-1] == "whole run"
assert (trainings["samples"] <= trainings["planned samples"]).all()
