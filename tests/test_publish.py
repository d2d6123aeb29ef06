"""The book's publication (issue 19, item 14): .github/workflows/book.yml builds the book with the Makefile's own
target and deploys the HTML that target writes to GitHub Pages, with the permissions Pages needs."""

import re
import shlex
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "book.yml"


def recipe(target: str) -> list[str]:
    """The command lines of a Makefile target (its tab-indented lines), comments dropped."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"{re.escape(target)}\s*:", line))
    body = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        body.append(line.strip())
    return body


def workflow() -> dict:
    wf = yaml.safe_load(WORKFLOW.read_text())
    wf["on"] = wf.pop(True, wf.get("on"))  # YAML 1.1 reads the key `on` as True
    return wf


def steps(wf: dict) -> list[dict]:
    return [s for job in wf["jobs"].values() for s in job.get("steps", [])]


def uses(step: dict, action: str) -> bool:
    return step.get("uses", "").split("@")[0] == action


def html_dir() -> str:
    """Where `make book` writes the HTML: ``jupyter-book build ROOT`` writes ``ROOT/_build/html``."""
    (line,) = [c for c in recipe("book") if "jupyter-book build" in c]
    args = shlex.split(line)
    root = args[args.index("build") + 1]
    return (Path(root) / "_build" / "html").as_posix()


def test_workflow_builds_with_make_book():
    wf = workflow()
    runs = [s["run"] for s in steps(wf) if "run" in s]
    assert any(shlex.split(r)[:2] == ["make", "book"] for r in runs), f"no `make book` step in {WORKFLOW.name}: {runs}"
    assert not any("jupyter-book" in r for r in runs), "the workflow builds the book itself, not with `make book`"
    assert any("jupyter-book build" in c for c in recipe("book")), "the Makefile's book target no longer builds it"
    setup = [s for s in steps(wf) if uses(s, "actions/setup-python")]
    assert setup and str(setup[0]["with"]["python-version"]) == "3.11" and setup[0]["with"]["cache"] == "pip"


def test_workflow_uploads_what_make_book_writes():
    (upload,) = [s for s in steps(workflow()) if uses(s, "actions/upload-pages-artifact")]
    assert Path(upload["with"]["path"]).as_posix() == html_dir() == "_build/html"


def test_workflow_deploys_to_pages_with_its_permissions():
    wf = workflow()
    deploying = [(name, job) for name, job in wf["jobs"].items()
                 if any(uses(s, "actions/deploy-pages") for s in job.get("steps", []))]
    assert len(deploying) == 1, "one job deploys to GitHub Pages"
    name, job = deploying[0]
    builder = next(n for n, j in wf["jobs"].items() if any(uses(s, "actions/upload-pages-artifact")
                                                            for s in j.get("steps", [])))
    assert builder in ([job["needs"]] if isinstance(job.get("needs"), str) else job.get("needs", []))
    permissions = {**wf.get("permissions", {}), **job.get("permissions", {})}
    assert permissions.get("pages") == "write" and permissions.get("id-token") == "write"
    assert job["environment"]["name"] == "github-pages"
    assert "push" in wf["on"] and "main" in wf["on"]["push"]["branches"]
