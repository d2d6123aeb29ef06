"""The README's main job end to end: the smoke reproduction executes every notebook and builds its own book."""

import hashlib
import json
from pathlib import Path

from cce_core.reproduce import TRAIN_ORDER, reproduce, run_name

REPO = Path(__file__).resolve().parents[1]


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_smoke_reproduction_builds_its_book(tmp_path):
    committed = tree_digest(REPO / "book" / "generated")
    generated = reproduce(preset="smoke", out=tmp_path, book=True)

    names = {p.name for p in generated.glob("*.ipynb")}
    assert names == {f"train-{run_name(model, mask)}.ipynb" for mask, model in TRAIN_ORDER} | {"nsd_eval.ipynb", "figures.ipynb"}
    figures = {p.name for p in (generated / "figures").glob("*.png")}
    assert {"fig1_pipeline.png", "fig2_latent.png", "fig3_distances.png", "fig4_central.png",
            "fig4_random_blocks.png", "nsd_distributions.png"} <= figures

    metrics = json.loads((generated / "metrics.json").read_text())
    assert metrics["preset"] == "smoke" and metrics["k"] == 8 and metrics["n"] == 10
    assert all(v.startswith("not testable") for v in metrics["verdicts"].values())
    run = json.loads((generated / "run.json").read_text())
    assert run["provenance"]["commit"] and run["total_wall_seconds"] > 0

    report = (tmp_path / "book" / "_build" / "html" / "book" / "report.html").read_text()
    assert "smoke" in report and "not testable" in report
    # a reproduction writes only under its --out folder: the book's committed results are untouched
    assert tree_digest(REPO / "book" / "generated") == committed
