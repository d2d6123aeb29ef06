"""The execution statistics page (issue 19, item 13): run.json's steps and trainings as table rows."""

import json
from pathlib import Path

from cce_core.report import execution_rows, training_rows

REPO = Path(__file__).resolve().parents[1]


def record(**extra) -> dict:
    training = {"ce64-central": {"samples": 320, "planned_samples": 640, "device": "cpu"}}
    run = {"seed": 3, "seeds": [3, 5], "status": "complete", "total_wall_seconds": 100.0,
           "training": {"seed3": training, "seed5": training}, "seed_folders": {"seed5": "seed5/"},
           "wall_seconds": {"train-ce64-central": 12.0, "train-ce64-random_blocks-hole": 3.0,
                            "seed5/train-ce64-central": 20.0, "seed5/nsd_eval": 7.5, "nsd_eval": 8.0},
           "stage_seconds": {"train-ce64-central": {"training": 8.0, "notebook": 4.0}}}
    return {**run, **extra}


def test_execution_rows_in_order_with_the_whole_run():
    rows = execution_rows(record())
    assert [(r["seed"], r["step"]) for r in rows] == [(3, "train-ce64-central"), (3, "train-ce64-random_blocks-hole"),
                                                      (5, "train-ce64-central"), (5, "nsd_eval (notebook)"),
                                                      (3, "nsd_eval (notebook)"), ("", "whole call")]
    assert rows[-1] == {"call": "1 ()", "seed": "", "step": "whole call", "wall time (s)": 100.0,
                        "status": "complete"}
    assert {r["status"] for r in rows[:-1]} == {"done"}


def test_execution_rows_name_the_failed_notebook():
    rows = execution_rows(record(status="failed", error="NotebookFailed: notebook nsd_eval.ipynb failed in cell 7: "
                                                      "RuntimeError: boom"))
    assert rows[-2]["step"] == "nsd_eval (notebook)" and rows[-2]["status"] == "failed"
    assert rows[-2]["wall time (s)"] is None
    assert rows[-1]["status"] == "failed"


def test_execution_rows_list_the_earlier_calls_first():
    earlier = {"status": "trained", "total_wall_seconds": 50.0, "wall_seconds": {"train-ce64-central": 40.0},
               "commit": "abcdef123", "date": "2026-12-02"}
    rows = execution_rows(record(earlier_calls=[earlier], provenance={"commit": "0123456789"}))
    assert [(r["call"], r["step"]) for r in rows[:2]] == [("1 (abcdef1)", "train-ce64-central"),
                                                          ("1 (abcdef1)", "whole call")]
    assert rows[1]["status"] == "trained" and rows[1]["wall time (s)"] == 50.0
    assert rows[2]["call"] == "2 (0123456)" and rows[-1]["status"] == "complete"


def test_training_rows_take_the_training_time_from_the_log():
    run = record()
    run["training"]["seed5"] = {"ce64-central": {"samples": 320, "planned_samples": 320, "device": "cpu",
                                                 "train_seconds": 16.0}}
    assert training_rows(run)[1]["training (s)"] == 16.0 and training_rows(run)[1]["samples/s"] == 20.0
    assert training_rows(run)[1]["samples"] == "320" and training_rows(run)[0]["samples"] == "320 of 640"  # cut short


def test_training_rows_speed_only_where_the_training_time_is_recorded():
    rows = training_rows(record())
    assert [(r["seed"], r["run"]) for r in rows] == [(3, "ce64-central"), (5, "ce64-central")]
    assert rows[0]["training (s)"] == 8.0 and rows[0]["samples/s"] == 40.0 and rows[0]["step wall time (s)"] == 12.0
    assert rows[1]["training (s)"] is None and rows[1]["samples/s"] is None and rows[1]["step wall time (s)"] == 20.0
    single = record(training={"ce64-central": {"samples": 32, "planned_samples": 32, "device": "cpu"}})
    del single["seed_folders"]
    assert [(r["seed"], r["run"]) for r in training_rows(single)] == [(3, "ce64-central")]


def test_rows_of_the_committed_run():
    run = json.loads((REPO / "book" / "generated" / "run.json").read_text())
    calls = [*run.get("earlier_calls", []), run]
    assert len(execution_rows(run)) == sum(len(c["wall_seconds"]) + 1 for c in calls)
    trainings = run["training"].values() if "seed_folders" in run else [run["training"]]
    assert len(training_rows(run)) == sum(len(t) for t in trainings)
