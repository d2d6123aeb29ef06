"""``glue``: paste a value computed in a notebook into the book's prose, without needing myst-nb at run time.

The book's notebooks are executed by papermill on machines that have no Sphinx or myst-nb (a bare GPU box), and
rendered later by Jupyter Book. This writes exactly what ``myst_nb.glue`` writes (a ``display_data`` output
whose MIME types carry the ``application/papermill.record/`` prefix and whose metadata names the key under
``scrapbook``), so ``{glue:text}`/book/generated/X.ipynb::key``` finds it; only IPython is needed.
"""

from __future__ import annotations

from typing import Any

#: The MIME prefix myst-nb reads glued values from (``myst_nb.ext.glue.GLUE_PREFIX``).
GLUE_PREFIX = "application/papermill.record/"


def glue(name: str, variable: Any, display: bool = True) -> None:
    """Store ``variable``'s display representation under ``name`` in the cell's outputs (myst-nb's format).

    ``display=False`` stores it without showing it (the prefixed MIME types are not rendered in the page).
    Cast numpy scalars with ``float``/``int`` first, so that ``{glue:text}`` format specs work.
    """
    import IPython
    from IPython.display import display as ipy_display

    mimebundle, metadata = IPython.core.formatters.format_display_data(variable)
    prefix = "" if display else GLUE_PREFIX
    metadata["scrapbook"] = dict(name=name, mime_prefix=prefix)
    ipy_display({prefix + k: v for k, v in mimebundle.items()}, raw=True, metadata=metadata)
