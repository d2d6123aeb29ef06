"""The book's pages speak only of what the run measured: a Sphinx extension for the Markdown pages.

A page marks a passage that needs an optional notebook of the run (``reproduce --gap``, ``--ladder``,
``--fair-ladder``, ``--nsd-loss``), or one value it glues, with HTML comments::

    <!-- needs nsd_gap.ipynb -->
    **Why our NSD is ...** {glue:text}`/book/generated/nsd_gap.ipynb::gap_answer:s`
    <!-- /needs -->

    <!-- needs scale_ladder.ipynb::fair_ladder_summary -->
    ...
    <!-- /needs -->

When the book is built, a passage whose notebook is missing from ``book/generated`` (or does not glue that name) is
dropped before the page is parsed, so a run without that option builds without dangling references; otherwise only
the markers go. Registered in ``_config.yml`` (``sphinx: extra_extensions``); the same filter serves ``make book``
and :func:`cce_core.reproduce.build_book`, since both build a folder whose ``book/generated`` holds the run.
"""
import json
import re
from pathlib import Path

NEEDS = re.compile(r"<!-- needs (\S+?) -->\n(.*?)<!-- /needs -->\n?", re.S)


def glued_names(notebook: Path) -> set[str]:
    """The names an executed notebook glued (``cce_core.glue.glue``: myst-nb's scrapbook metadata)."""
    nb = json.loads(notebook.read_text())
    return {o.get("metadata", {}).get("scrapbook", {}).get("name") for c in nb.get("cells", [])
            for o in c.get("outputs", [])} - {None}


def has(generated: Path, need: str) -> bool:
    """Whether ``generated`` holds the notebook of ``need`` (``name.ipynb`` or ``name.ipynb::glued_key``)."""
    name, _, key = need.partition("::")
    path = generated / name
    return path.is_file() and (not key or key in glued_names(path))


def keep_measured(text: str, generated: str | Path) -> str:
    """``text`` without the passages whose ``needs`` the run in ``generated`` does not meet, markers removed."""
    return NEEDS.sub(lambda m: m.group(2) if has(Path(generated), m.group(1)) else "", text)


def _source_read(app, docname: str, source: list[str]) -> None:
    if "<!-- needs " in source[0]:
        source[0] = keep_measured(source[0], Path(app.srcdir) / "book" / "generated")


def setup(app) -> dict:
    app.connect("source-read", _source_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
