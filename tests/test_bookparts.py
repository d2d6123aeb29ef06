"""The landing page's passages about optional notebooks appear only where the run made them (cce_core.bookparts)."""
import json
from pathlib import Path

from cce_core.bookparts import has, keep_measured

PAGE = """Intro.

<!-- needs nsd_gap.ipynb::gap_answer -->
**Gap.** {glue:text}`/book/generated/nsd_gap.ipynb::gap_answer:s`
<!-- /needs -->

Middle.

<!-- needs scale_ladder.ipynb -->
**Ladder.**
<!-- /needs -->
End.
"""


def executed(path: Path, names: list[str]) -> None:
    outputs = [{"output_type": "display_data", "data": {"text/plain": "'x'"},
                "metadata": {"scrapbook": {"name": n, "mime_prefix": ""}}} for n in names]
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "source": "", "metadata": {}, "outputs": outputs}]}))


def test_passages_follow_the_notebooks_and_their_glued_names(tmp_path: Path) -> None:
    assert keep_measured(PAGE, tmp_path) == "Intro.\n\n\nMiddle.\n\nEnd.\n"
    executed(tmp_path / "nsd_gap.ipynb", ["other"])  # the notebook without the name: still dropped
    assert not has(tmp_path, "nsd_gap.ipynb::gap_answer") and "Gap" not in keep_measured(PAGE, tmp_path)
    executed(tmp_path / "nsd_gap.ipynb", ["gap_answer"])
    executed(tmp_path / "scale_ladder.ipynb", [])
    kept = keep_measured(PAGE, tmp_path)
    assert "**Gap.**" in kept and "**Ladder.**" in kept and "<!--" not in kept


def test_the_landing_page_marks_every_optional_notebook_it_glues() -> None:
    """Every reference of intro.md to an optional notebook sits inside a `needs` passage (else a run without that
    option would not build)."""
    text = (Path(__file__).parents[1] / "book" / "intro.md").read_text()
    bare = keep_measured(text, Path("/nonexistent"))
    for name in ("nsd_gap", "scale_ladder", "nsd_loss"):
        assert name not in bare, f"intro.md refers to {name} outside a <!-- needs ... --> passage"
