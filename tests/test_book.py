"""The Jupyter Book builds with warnings as errors, and its pages work offline in a real browser.

The book is built once per session into a temporary directory outside the repository (a build folder inside
the source tree would be read back as pages, tooling doc pitfall P2). Set ``CCE_BOOK_HTML`` to an already built
``_build/html`` directory to skip the build, and ``CCE_BOOK_TOC`` to build and check another table of contents
than ``_toc.yml`` (e.g. a subset while pages are being written). Every page of the table of contents is then opened
in headless Debian Chromium (``apt-get install chromium``). Without Chromium the browser tests are skipped, or fail
when ``CI=true``.
"""

from __future__ import annotations

import functools
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TOC = Path(os.environ.get("CCE_BOOK_TOC", REPO / "_toc.yml")).resolve()
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=10000"]
#: Pages whose math must have been typeset by the local MathJax (any other page with math is checked too).
MATH_PAGES = ("book/paper", "notebooks/nsd_theory")
REMOTE = re.compile(r"^(https?:)?//", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------------------------
# helpers


def toc_files(toc_path: Path = TOC) -> list[str]:
    """Every ``file:`` of the table of contents (root first), without extension, e.g. ``book/intro``."""
    toc = yaml.safe_load(toc_path.read_text())
    files = [toc["root"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return [str(Path(f).with_suffix("")) if Path(f).suffix in (".md", ".ipynb", ".py") else f for f in files]


class _Tags(HTMLParser):
    """Collect the attributes of <img>, <script> and <link> tags and the text of <span class="pasted-text">."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.pasted: list[str] = []
        self._in_pasted = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag in ("img", "script", "link"):
            self.tags.append((tag, attributes))
        if tag == "span" and "pasted-text" in attributes.get("class", "").split():
            self._in_pasted += 1
            self.pasted.append("")
        elif self._in_pasted and tag == "span":
            self._in_pasted += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "span" and self._in_pasted:
            self._in_pasted -= 1

    def handle_data(self, data: str) -> None:
        if self._in_pasted:
            self.pasted[-1] += data


def parse(markup: str) -> _Tags:
    parser = _Tags()
    parser.feed(markup)
    return parser


def resolve_local(page: Path, url: str, html_dir: Path) -> Path | None:
    """The file a relative URL of ``page`` points to, or None for a remote URL."""
    if REMOTE.match(url):
        return None
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    return (page.parent / unquote(parts.path)).resolve()


def page_title(markup: str) -> str:
    match = re.search(r"<title>(.*?)</title>", markup, re.DOTALL)
    return html.unescape(match.group(1)).strip() if match else ""


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def run_chromium(chromium: str, *args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="cce-chromium-") as profile:
        return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def html_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built HTML: ``$CCE_BOOK_HTML`` if set, else a fresh ``jupyter-book build -W --keep-going``."""
    prebuilt = os.environ.get("CCE_BOOK_HTML")
    if prebuilt:
        path = Path(prebuilt).resolve()
        assert (path / "index.html").is_file(), f"CCE_BOOK_HTML={prebuilt} holds no index.html"
        return path
    out = tmp_path_factory.mktemp("book")
    if out.resolve().is_relative_to(REPO):  # e.g. --basetemp inside the repo: the build would read itself
        out = Path(tempfile.mkdtemp(prefix="cce-book-"))
    from cce_core.reproduce import toc_for

    toc = out / "_toc.yml"  # as `make book`: the optional parts only where the committed run made them
    toc.write_text(toc_for(REPO / "book" / "generated") if TOC == REPO / "_toc.yml" else TOC.read_text())
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jupyter_book) if jupyter_book.is_file() else "jupyter-book", "build", str(REPO),
           "--path-output", str(out), "--toc", str(toc), "-W", "--keep-going"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
    return out / "_build" / "html"


@pytest.fixture(scope="module")
def pages(html_dir: Path) -> dict[str, Path]:
    """The HTML file of every page in _toc.yml, e.g. {"book/intro": .../book/intro.html}; the pages of an optional
    part (``cce_core.reproduce.OPTIONAL_PARTS``) only where the run behind the book made them."""
    from cce_core.reproduce import OPTIONAL_PARTS
    optional = {f"book/generated/{Path(name).stem}" for name in OPTIONAL_PARTS.values()}
    found = {doc: html_dir / f"{doc}.html" for doc in toc_files()}
    missing = [str(p) for doc, p in found.items() if not p.is_file() and doc not in optional]
    assert not missing, f"pages of _toc.yml missing from the build: {missing}"
    return {doc: p for doc, p in found.items() if p.is_file()}


@pytest.fixture(scope="module")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        message = "headless Chromium not found (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def doms(chromium: str, pages: dict[str, Path]) -> dict[str, str]:
    """Each page's DOM after Chromium ran its scripts (MathJax included), two browsers at a time."""
    def dump(item: tuple[str, Path]) -> tuple[str, str]:
        doc, path = item
        result = run_chromium(chromium, "--dump-dom", path.as_uri())
        assert result.returncode == 0, f"chromium failed on {doc}: {result.stderr[-3000:]}"
        return doc, result.stdout

    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(dump, pages.items()))


# ---------------------------------------------------------------------------------------------------------------
# tests


def test_toc_lists_pages() -> None:
    files = toc_files()
    assert files[0] == "book/intro"
    assert {"book/paper", "notebooks/nsd_theory", "notebooks/masks", "notebooks/context_encoder",
            "book/references"} <= set(files)
    order = ["notebooks/nsd_theory", "notebooks/context_encoder", "notebooks/masks", "book/report"]
    assert [files.index(f) for f in order] == sorted(files.index(f) for f in order)


def test_fig4_examples_are_distinct_images() -> None:
    """Fig. 4's rule never shows an image twice, even when one image leads in two groups or images are few."""
    import torch

    from cce_core.plots import pick_examples

    lead = torch.tensor([0.3, -0.2, 0.1, -0.4, 0.0, 0.2, -0.1, 0.05])
    picks = pick_examples(lead, per_group=2, seed=0)
    assert [why for why, _ in picks] == ["best CE"] * 2 + ["best cascade"] * 2 + ["random"] * 2
    assert [i for _, i in picks[:4]] == [0, 5, 3, 1]
    assert len({i for _, i in picks}) == 6
    few = pick_examples(torch.tensor([0.1, -0.1, 0.0]), per_group=2)
    assert sorted(i for _, i in few) == [0, 1, 2]


def test_held_out_is_read_from_the_sources() -> None:
    from cce_core.plots import eval_images_note

    assert eval_images_note(["embedded"], ["embedded"]).startswith("not held out")
    assert eval_images_note(["/data/train.zip"], ["/data/eval.zip"]).startswith("held out")
    shared = eval_images_note(["/data/train.zip"], ["/data/train.zip"])
    assert shared.startswith("not held out") and "/data/" not in shared


def test_pages_load(pages: dict[str, Path], doms: dict[str, str]) -> None:
    for doc, path in pages.items():
        dom = doms[doc]
        title = page_title(path.read_text())
        assert dom.strip(), f"{doc}: Chromium returned an empty DOM"
        assert title, f"{doc}: the built page has no <title>"
        assert page_title(dom) == title, f"{doc}: Chromium shows title {page_title(dom)!r}, expected {title!r}"
        assert "<main" in dom and "bd-article" in dom, f"{doc}: no article content in the DOM"


def test_no_broken_images(html_dir: Path, pages: dict[str, Path], doms: dict[str, str]) -> None:
    broken = []
    for doc, path in pages.items():
        for tag, attrs in parse(path.read_text()).tags + parse(doms[doc]).tags:
            src = attrs.get("src", "")
            if tag != "img" or not src or src.startswith("data:"):
                continue
            target = resolve_local(path, src, html_dir)
            if target is None or not target.is_file():
                broken.append(f"{doc}: <img src={src!r}>")
    assert not broken, "broken or remote images:\n" + "\n".join(sorted(set(broken)))


#: An alt text that says nothing: empty, a file name or path, or a hash (issue 30, fault 12).
UNINFORMATIVE_ALT = re.compile(r"^\s*$|\.(png|jpe?g|svg|gif)\s*$|^[./]*_images/|^[0-9a-f]{16,}", re.IGNORECASE)


def uninformative_alts(path: Path) -> list[str]:
    """The ``src`` of every image in a page's article whose alt text is empty, a file name or a hash."""
    markup = path.read_text()
    start = markup.find("<article")
    article = markup[start:markup.find("</article>", start)] if start >= 0 else markup
    return [attrs.get("src", "") for tag, attrs in parse(article).tags
            if tag == "img" and UNINFORMATIVE_ALT.search(attrs.get("alt", ""))]


def _text_and_figures(cells: list) -> tuple[list[str], list[dict]]:
    """A notebook's markdown cells and its code cells' ``mystnb`` metadata (papermill's injected cell left out)."""
    def source(c) -> str:
        return "".join(c["source"]) if isinstance(c["source"], list) else c["source"]

    code = [c for c in cells if c["cell_type"] == "code"
            and "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    return ([source(c).strip() for c in cells if c["cell_type"] == "markdown"],
            [c.get("metadata", {}).get("mystnb", {}) for c in code])


@functools.cache  # asked for every page by several tests: each notebook is read once
def stale_run_page(doc: str) -> bool:
    """Whether ``doc`` is an executed notebook of ``book/generated`` whose text or figure metadata (alt texts,
    captions) differ from its notebook's today (``notebooks/<name>.py``): the stored run was executed before the
    notebook changed, and its page shows the old text until the run is re-executed."""
    import jupytext
    import nbformat

    stored, source = REPO / f"{doc}.ipynb", REPO / "notebooks" / f"{Path(doc).name}.py"
    if not doc.startswith("book/generated/") or not stored.is_file() or not source.is_file():
        return False
    return (_text_and_figures(nbformat.read(stored, as_version=4).cells)
            != _text_and_figures(jupytext.read(source).cells))


def shows_stale_run(doc: str) -> bool:
    """Whether page ``doc`` shows a stored run older than its notebooks: it is one (:func:`stale_run_page`), or a
    Markdown page that glues values or tables from one."""
    if stale_run_page(doc):
        return True
    source = REPO / f"{doc}.md"
    glued = set(re.findall(r"/(book/generated/[\w/]+)\.ipynb::", source.read_text())) if source.is_file() else set()
    return any(stale_run_page(g) for g in glued)


def test_images_say_what_they_show(pages: dict[str, Path]) -> None:
    """Every image of every page has an alt text that describes it (not empty, not a file name or hash); the pages
    of a stored run older than its notebooks are checked by :func:`test_stored_run_is_current`."""
    wrong = [f"{doc}: {src}" for doc, path in pages.items() if not stale_run_page(doc)
             for src in uninformative_alts(path)]
    assert not wrong, "images without an alt text that says what they show:\n" + "\n".join(wrong)


def test_stored_run_is_current(pages: dict[str, Path]) -> None:
    """The stored run's pages show their notebooks' current text and figure captions."""
    stale = [doc for doc in pages if stale_run_page(doc)]
    assert not stale, f"pages of book/generated older than their notebooks: {stale}"


def test_uninformative_alts_are_caught(tmp_path: Path) -> None:
    page = tmp_path / "p.html"
    page.write_text('<nav><img src="logo.png" alt=""></nav><article><img src="a.png" alt="">'
                    '<img src="b.png" alt="../_images/3a53d.jpg"><img src="c.png" alt="3a53d0c1e2f4a5b6c7d8">'
                    '<img src="d.png" alt="fig1.png"><img src="e.png" alt="Two histograms of NSD"></article>')
    assert uninformative_alts(page) == ["a.png", "b.png", "c.png", "d.png"]


def test_no_remote_scripts_or_styles(html_dir: Path, pages: dict[str, Path], doms: dict[str, str]) -> None:
    remote, missing = [], []
    for doc, path in pages.items():
        for tag, attrs in parse(path.read_text()).tags + parse(doms[doc]).tags:
            url = attrs.get("src", "") if tag == "script" else attrs.get("href", "")
            if not url or (tag == "link" and "stylesheet" not in attrs.get("rel", "") and attrs.get("as") != "script"):
                continue
            target = resolve_local(path, url, html_dir)
            if target is None:
                remote.append(f"{doc}: <{tag} {url}>")
            elif not target.is_file():
                missing.append(f"{doc}: <{tag} {url}>")
    assert not remote, "pages load scripts or styles from the network:\n" + "\n".join(remote)
    assert not missing, "scripts or styles missing from the build:\n" + "\n".join(missing)


def test_mathjax_is_local(html_dir: Path, pages: dict[str, Path]) -> None:
    scripts = [attrs.get("src", "") for tag, attrs in parse(pages["book/paper"].read_text()).tags if tag == "script"]
    mathjax = [s for s in scripts if "mathjax" in s.lower()]
    assert mathjax, "paper.html loads no MathJax"
    for src in mathjax:
        target = resolve_local(pages["book/paper"], src, html_dir)
        assert target is not None and target.is_file(), f"MathJax is not served from the book: {src}"


def test_math_is_typeset(pages: dict[str, Path], doms: dict[str, str]) -> None:
    for doc in MATH_PAGES:
        assert "<mjx-container" in doms[doc], f"{doc}: no math typeset by MathJax"
    for doc, path in pages.items():
        has_math = re.search(r'class="math[ "]', path.read_text()) is not None
        if has_math:
            assert "<mjx-container" in doms[doc], f"{doc}: has math but MathJax typeset none"
        assert "<mjx-merror" not in doms[doc], f"{doc}: MathJax reports a TeX error"


def test_report_page(request: pytest.FixtureRequest) -> None:
    if "book/report" not in toc_files():
        pytest.skip("book/report.md is not in _toc.yml yet")
    pages = request.getfixturevalue("pages")
    pasted = [t.strip() for t in parse(pages["book/report"].read_text()).pasted]

    def is_float(text: str) -> bool:
        try:
            float(text.replace(",", "").rstrip("%"))
        except ValueError:
            return False
        return True

    numbers = [t for t in pasted if is_float(t)]
    assert len(numbers) >= 10, (f"report.html has too few glued numbers ({len(numbers)}; "
                                f"pasted-text spans: {pasted[:10]})")


#: Strings that only a machine's own file system puts in a page (absolute paths of a run or of a build).
ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/(work|root|home|tmp|Users|private/var|var/folders)/")
#: Outputs that are leftovers of code, not results: a bare number (a return value such as write_text's), the
#: repr of a path, a matplotlib object, or an nbval marker comment.
STRAY_OUTPUT = re.compile(r"^(\d+|(Posix|Windows)?Path\(.*\)|<(Figure|matplotlib|Axes)[^>]*>|\[<matplotlib.*\]|"
                          r"Text\(.*\))$")
NOTEBOOK_PAGES = ("notebooks/", "book/generated/")


def page_text(markup: str) -> str:
    """The visible text of a page's article (scripts, styles and the navigation left out)."""
    article = markup.split('<article class="bd-article"', 1)[-1].split("</article>", 1)[0]
    article = re.sub(r"<(script|style)\b.*?</\1>", " ", article, flags=re.DOTALL)
    return html.unescape(re.sub(r"<[^>]+>", " ", article))


def cell_outputs(markup: str) -> list[str]:
    """The text of each plain-text output block (``<div class="output ...">``'s <pre>) of a notebook page."""
    blocks = re.findall(r'<div class="output (?:text_plain|stream|stderr)[^"]*">\s*(?:<div class="highlight">)?'
                        r'\s*<pre>(.*?)</pre>', markup, re.DOTALL)
    return [html.unescape(re.sub(r"<[^>]+>", "", b)).strip() for b in blocks]


def test_page_titles_are_distinct(pages: dict[str, Path]) -> None:
    """Each page has its own title, so the previous/next links and the browser tabs tell pages apart."""
    titles = {doc: page_title(path.read_text()) for doc, path in pages.items()}
    seen: dict[str, list[str]] = {}
    for doc, title in titles.items():
        seen.setdefault(title, []).append(doc)
    same = {t: docs for t, docs in seen.items() if len(docs) > 1}
    assert not same, f"pages share a title: {same}"
    for doc, path in pages.items():  # what a reader sees: the previous and the next link name different pages
        labels = [html.unescape(re.sub(r"<[^>]+>", "", t)).strip() for t in
                  re.findall(r'<p class="prev-next-title">(.*?)</p>', path.read_text(), re.DOTALL)]
        assert len(set(labels)) == len(labels), f"{doc}: previous/next links read {labels}"
    from cce_core.plots import MASK_NAMES, MODEL_NAMES

    for doc, title in titles.items():
        name = Path(doc).name
        if name.startswith("train-"):
            model, mask = name.removeprefix("train-").split("-", 1)
            assert MODEL_NAMES[model] in title and MASK_NAMES[mask] in title, f"{doc}: title {title!r}"


def test_no_absolute_paths(pages: dict[str, Path]) -> None:
    """No rendered page shows a path of the machine that ran or built it (paths are relative, or data names)."""
    found = []
    for doc, path in pages.items():
        for match in ABSOLUTE_PATH.finditer(page_text(path.read_text())):
            text = page_text(path.read_text())
            found.append(f"{doc}: ...{text[max(0, match.start() - 60):match.end() + 60]!r}...")
    assert not found, "absolute paths in rendered pages:\n" + "\n".join(found[:20])


def test_no_stray_outputs(pages: dict[str, Path]) -> None:
    """Notebook pages show results only: no bare return values, no reprs of objects, no stderr, no markers,
    and not the default parameters cell (its `runs_dir` points into the nbval build folder)."""
    stray = []
    for doc, path in pages.items():
        if not doc.startswith(NOTEBOOK_PAGES):
            continue
        markup = path.read_text()
        stray += [f"{doc}: output {out[:80]!r}" for out in cell_outputs(markup) if STRAY_OUTPUT.match(out)]
        stray += [f"{doc}: a stderr output" for _ in re.findall(r'<div class="output stderr', markup)]
        text = page_text(markup)
        stray += [f"{doc}: {marker}" for marker in ("NBVAL_", "_build/nbval") if marker in text]
    assert not stray, "stray outputs on notebook pages:\n" + "\n".join(stray)


def test_figures_are_not_numbered_by_sphinx(pages: dict[str, Path]) -> None:
    """Figures carry the paper's numbers in their captions; Sphinx adds none of its own ("Fig. 2 Fig. 1 ...")."""
    numbered = [doc for doc, path in pages.items() if 'class="caption-number"' in path.read_text()]
    assert not numbered, f"Sphinx numbered figures on: {numbered}"


def test_landing_page_gives_the_answer(html_dir: Path, pages: dict[str, Path]) -> None:
    """intro.html shows the paper's NSD pair, ours glued from the run (the two models' means over seeds and the
    paired difference, each with its seed-level interval), a verdict per line, the run's tier and scale, and the
    CE-vs-cascade figure."""
    markup = pages["book/intro"].read_text()
    pasted = [t.strip() for t in parse(markup).pasted]
    numbers = []
    for text in pasted:
        try:
            numbers.append(float(text))
        except ValueError:
            pass
    assert len(numbers) >= 3, f"intro.html shows too few glued numbers: {pasted}"
    intervals = [t for t in pasted if re.fullmatch(r"\[[-+]?[\d.]+, [-+]?[\d.]+\]|none \(one seed\)", t)]
    assert len(intervals) >= 3, f"the seed-level intervals are missing: {pasted}"
    verdicts = {"reproduced", "not reproduced", "equivalent", "different", "inconclusive", "one seed",
                "observed", "cascade lower", "cascade higher", "no difference detected", "different from the paper's",
                "the paper's, within the margin"}  # below paper scale: what was observed (verdict_word)
    assert sum(t in verdicts for t in pasted) >= 3, f"a verdict per line is missing: {pasted}"
    words = [t for t in pasted if len(t) > 40]
    assert len(words) >= 2, f"the run's tier and scale are missing: {words}"
    text = page_text(markup)
    assert "0.79" in text and "0.56" in text, "the paper's NSD values are not on the landing page"
    images = [attrs.get("src", "") for tag, attrs in parse(markup).tags if tag == "img"]
    assert any(src.endswith("fig4_random_blocks.jpg") for src in images), f"no Fig. 4 on the landing page: {images}"


def test_screenshot(chromium: str, pages: dict[str, Path]) -> None:
    doc = "book/report" if "book/report" in pages else "book/intro"
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"{doc.replace('/', '-')}.png"
    shot.unlink(missing_ok=True)
    result = run_chromium(chromium, f"--screenshot={shot}", "--window-size=1280,2000", pages[doc].as_uri())
    assert result.returncode == 0, result.stderr[-3000:]
    assert shot.is_file() and shot.stat().st_size > 10_000, f"no screenshot written to {shot}"


# ---------------------------------------------------------------------------------------------------------------
# what a reader sees at 1280 px (issue 19: legible figures, nothing clipped, the paper's order)

#: Measured in each page after its scripts (MathJax included) ran: the footnote font size, every content image's
#: rendered and natural width, and every element of the article that sticks out of the article's column or of its
#: own box without a scroll container between (text a reader cannot see or reach).
PROBE_JS = r"""
(function () {
  function measure() {
    const article = document.querySelector("article.bd-article");
    const box = article.getBoundingClientRect();
    const probe = document.createElement("aside");
    probe.className = "footnote";
    probe.textContent = "x";
    const list = document.createElement("aside");
    list.className = "footnote-list";
    list.appendChild(probe);
    article.appendChild(list);
    const footnote = parseFloat(getComputedStyle(probe).fontSize);
    list.remove();
    const images = [...article.querySelectorAll("img")].filter(i => i.offsetParent !== null).map(i => ({
      src: i.getAttribute("src"), natural: i.naturalWidth, rendered: i.getBoundingClientRect().width}));
    const scrolls = el => ["auto", "scroll"].includes(getComputedStyle(el).overflowX);
    const overflowing = [];
    for (const el of article.querySelectorAll("*")) {
      const r = el.getBoundingClientRect();
      if (!r.width || getComputedStyle(el).visibility === "hidden") continue;
      const math = el.matches('mjx-container[display="true"], div.math-wrapper, div.math');
      if (math && el.scrollWidth > el.clientWidth + 2) {  // an equation wider than its box (it scrolls or is cut)
        overflowing.push({tag: "equation", cls: "", text: (el.textContent || "").trim().slice(0, 80),  // split it
                          right: Math.round(r.left + el.scrollWidth), column: Math.round(r.right), clipped: true});
        continue;
      }
      let scrolled = false;
      for (let a = el.parentElement; a && a !== article; a = a.parentElement) {
        if (scrolls(a)) { scrolled = true; break; }
      }
      if (scrolled) continue;
      const style = getComputedStyle(el);
      const own = style.overflowX;  // an inline box (a word, inline math) has no width of its own to clip at
      const clipped = (own === "hidden" || own === "clip") && !style.display.startsWith("inline")
                      && el.scrollWidth > el.clientWidth + 2;
      if (r.right > box.right + 1 || r.left < box.left - 1 || clipped) {
        overflowing.push({tag: el.tagName.toLowerCase(), cls: String(el.getAttribute("class") || "").slice(0, 60),
                          text: (el.textContent || "").trim().slice(0, 80), right: Math.round(r.right),
                          column: Math.round(box.right), clipped: clipped});
      }
    }
    const wide = [];  // tables whose content is wider than their box (their last columns hidden behind a scroll)
    for (const table of article.querySelectorAll("table")) {
      let box = table.parentElement;
      while (box && box !== article && !scrolls(box)) box = box.parentElement;
      const limit = box && box !== article ? box.clientWidth : article.clientWidth;
      if (table.scrollWidth > limit + 2) {
        wide.push({head: [...table.querySelectorAll("th")].slice(0, 3).map(t => t.textContent.trim()).join(" | "),
                   width: table.scrollWidth, box: limit});
      }
    }
    const nav = [...document.querySelectorAll("nav.bd-docs-nav a.reference.internal")].map(a => a.getAttribute("href"));
    const wrapped = [];  // shell blocks taller than their lines: the browser broke a line (mid-option) to fit
    for (const block of article.querySelectorAll("div.highlight-bash pre, div.highlight-shell pre")) {
      const cs = getComputedStyle(block);
      const lines = block.textContent.replace(/\n$/, "").split("\n");
      const height = block.scrollHeight - parseFloat(cs.paddingTop) - parseFloat(cs.paddingBottom);
      const line = parseFloat(cs.lineHeight);
      if (line > 0 && height > (lines.length + 0.5) * line) {
        wrapped.push(lines.reduce((a, b) => (b.length > a.length ? b : a)).slice(0, 120));
      }
    }
    const pre = document.createElement("pre");
    pre.id = "cce-probe";
    pre.textContent = JSON.stringify({footnote, images, overflowing, nav, wrapped, wide, width: box.width});
    document.body.appendChild(pre);
  }
  function safely() {
    try { measure(); } catch (e) {
      const pre = document.createElement("pre");
      pre.id = "cce-probe";
      pre.textContent = JSON.stringify({error: String(e)});
      document.body.appendChild(pre);
    }
  }
  function ready() {
    const mj = window.MathJax && window.MathJax.startup && window.MathJax.startup.promise;
    (mj || Promise.resolve()).then(() => setTimeout(safely, 50), () => setTimeout(safely, 50));
  }
  if (document.readyState === "complete") ready(); else window.addEventListener("load", ready);
})();
"""


#: The narrowest window headless Chromium lays a page out in (``--window-size`` below it gives this width).
MIN_WINDOW = 500


def probe_page(chromium: str, page: Path, width: int = 1280) -> dict:
    """:data:`PROBE_JS`'s measurements of ``page`` in a ``width`` px window: a copy of the page with the script
    is written beside it (so its relative links resolve) and removed afterwards. Headless Chromium's window is at
    least :data:`MIN_WINDOW` px wide; a narrower one (a phone) is that window with the page's body held to
    ``width`` px (the theme's narrow-screen layout applies below 960 px either way)."""
    import json

    narrow = f"<style>body {{ width: {width}px !important; }}</style>" if width < MIN_WINDOW else ""
    copy = page.with_name(f"_cce_probe_{page.name}")
    copy.write_text(page.read_text().replace("</body>", f"{narrow}<script>{PROBE_JS}</script></body>"))
    try:
        result = run_chromium(chromium, f"--window-size={max(width, MIN_WINDOW)},2000", "--dump-dom",
                              copy.as_uri())
    finally:
        copy.unlink(missing_ok=True)
    match = re.search(r'<pre id="cce-probe"[^>]*>(.*?)</pre>', result.stdout, re.DOTALL)
    assert match, f"{page.name}: the probe wrote nothing: {result.stderr[-2000:]}"
    measured = json.loads(html.unescape(match.group(1)))
    assert "error" not in measured, f"{page.name}: the probe failed: {measured.get('error')}"
    return measured


@pytest.fixture(scope="module")
def probes(chromium: str, pages: dict[str, Path]) -> dict[str, dict]:
    with ThreadPoolExecutor(2) as pool:
        return dict(zip(pages, pool.map(lambda p: probe_page(chromium, p), pages.values())))


def small_figure_text(images: list[dict], footnote_px: float, page: Path, html_dir: Path) -> list[str]:
    """The images of a page whose smallest text is shown smaller than ``footnote_px``, by the font size and dpi
    stamped in each PNG or JPEG (:func:`cce_core.plots.font_metadata`, :func:`cce_core.plots.read_stamp`); an image
    without the stamp is reported too."""
    from PIL import Image

    from cce_core.plots import DPI_KEY, FONT_KEY, read_stamp, rendered_text_px

    wrong = []
    for img in images:
        target = resolve_local(page, img["src"], html_dir)
        if target is None or not target.is_file() or target.suffix.lower() not in (".png", ".jpg"):
            wrong.append(f"{img['src']}: not a local PNG or JPEG")
            continue
        info = read_stamp(Image.open(target))
        if DPI_KEY not in info:
            wrong.append(f"{target.name}: no font stamp (draw it after cce_core.plots.use_book_style())")
            continue
        if FONT_KEY not in info:  # a figure without text
            continue
        px = rendered_text_px(float(info[FONT_KEY]), float(info[DPI_KEY]), img["natural"], img["rendered"])
        if px < footnote_px:
            wrong.append(f"{target.name}: {info[FONT_KEY]} pt at {info[DPI_KEY]} dpi shown {img['rendered']:.0f} of "
                         f"{img['natural']} px wide: text {px:.1f} px < footnotes {footnote_px:.1f} px")
    return wrong


def test_figure_text_is_legible(html_dir: Path, pages: dict[str, Path], probes: dict[str, dict]) -> None:
    """Every figure's smallest text is shown at least as large as the footnotes at a 1280 px window."""
    wrong = [f"{doc}: {w}" for doc, path in pages.items()
             for w in small_figure_text(probes[doc]["images"], probes[doc]["footnote"], path, html_dir)]
    assert not wrong, "figure text smaller than the footnotes at 1280 px:\n" + "\n".join(wrong)


def test_small_figure_text_is_caught(tmp_path: Path) -> None:
    """The legibility check fails on a figure with 4 pt text and passes the same figure in the book's style,
    both shown 700 px wide, against 14 px footnotes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cce_core.plots import BOOK_RC, font_metadata

    def drawn(name: str, fontsize: float | None) -> dict:
        with plt.rc_context(BOOK_RC):
            fig, ax = plt.subplots()
            ax.plot([1, 2, 3])
            ax.set_title("loss", fontsize=fontsize)
            ax.tick_params(labelsize=fontsize)
            fig.savefig(tmp_path / name, metadata=font_metadata(fig))
            natural = fig.get_size_inches()[0] * fig.dpi
            plt.close(fig)
        return {"src": name, "natural": natural, "rendered": 700}

    page = tmp_path / "page.html"
    tiny = small_figure_text([drawn("tiny.png", 4)], 14.0, page, tmp_path)
    assert len(tiny) == 1 and "4 pt" in tiny[0]
    assert small_figure_text([drawn("book.png", None)], 14.0, page, tmp_path) == []
    plain = tmp_path / "plain.png"
    plt.imsave(plain, [[0, 1], [1, 0]])
    assert "no font stamp" in small_figure_text([{"src": "plain.png", "natural": 2, "rendered": 2}], 14, page,
                                                tmp_path)[0]


def test_nothing_is_clipped(probes: dict[str, dict]) -> None:
    """No table, equation, code block or figure sticks out of the page's column or is cut off by its own box at
    1280 px, unless it scrolls inside a scroll container."""
    wrong = [f"{doc}: <{o['tag']} class={o['cls']!r}> right edge {o['right']} > column {o['column']}"
             f"{' (clipped)' if o['clipped'] else ''}: {o['text']!r}"
             for doc, probe in probes.items() for o in probe["overflowing"]]
    assert not wrong, "clipped at 1280 px:\n" + "\n".join(wrong[:40])


#: A phone's width for the narrow-screen checks (issue 30, fault 7).
PHONE = 420


@pytest.fixture(scope="module")
def phone_probes(chromium: str, pages: dict[str, Path]) -> dict[str, dict]:
    with ThreadPoolExecutor(2) as pool:
        return dict(zip(pages, pool.map(lambda p: probe_page(chromium, p, PHONE), pages.values())))


def test_equations_fit_a_phone(phone_probes: dict[str, dict]) -> None:
    """Every display equation fits the column of a 420 px phone screen: a long one is broken into aligned lines
    (a scrolling equation hides its end, with nothing to show that it scrolls). Pages of a stored run older than
    their notebooks: :func:`test_stored_run_is_current`."""
    wrong = [f"{doc}: right edge {o['right']} > column {o['column']}: {o['text']!r}"
             for doc, probe in phone_probes.items() if not stale_run_page(doc)
             for o in probe["overflowing"] if o["tag"] == "equation"]
    assert not wrong, f"equations wider than a {PHONE} px screen:\n" + "\n".join(wrong)


def test_tables_fit_the_page(probes: dict[str, dict]) -> None:
    """At 1280 px no table is wider than its box: every column, the last one included, is on the page without
    scrolling (long cells wrap). Pages that show a stored run older than its notebooks (:func:`shows_stale_run`):
    :func:`test_stored_run_is_current`."""
    wrong = [f"{doc}: table {t['head']!r} is {t['width']} px in a {t['box']} px box"
             for doc, probe in probes.items() if not shows_stale_run(doc) for t in probe["wide"]]
    assert not wrong, "tables wider than the page at 1280 px:\n" + "\n".join(wrong)


def test_commands_do_not_wrap(probes: dict[str, dict]) -> None:
    """Every shell block fits the column at 1280 px, line for line: a long command is broken with backslashes at
    option boundaries (about 77 characters fit), not wrapped by the browser in the middle of an option."""
    wrong = [f"{doc}: longest line {line!r}" for doc, probe in probes.items() for line in probe["wrapped"]]
    assert not wrong, "shell commands wrapped at 1280 px:\n" + "\n".join(wrong)


#: The paper's order (issue 19, item 10): the pages of the navigation, in this order, where they are in the book.
PAPER_ORDER = ["book/intro", "book/paper", "notebooks/nsd_theory", "notebooks/context_encoder", "notebooks/masks",
               "book/generated/training", "book/report", "book/generated/nsd_eval", "book/generated/figures",
               "book/generated/nsd_gap",
               "book/generated/nsd_loss", "book/rerun", "book/generated/execution", "book/references"]


def test_pages_in_the_papers_order(html_dir: Path, pages: dict[str, Path], probes: dict[str, dict]) -> None:
    """The rendered navigation (the sidebar of the paper page) lists the pages in the paper's order."""
    page = pages["book/paper"]
    shown = []
    for href in probes["book/paper"]["nav"]:
        target = page if href.startswith("#") else resolve_local(page, href, html_dir)
        if target is not None:
            shown.append(target.relative_to(html_dir.resolve()).with_suffix("").as_posix())
    expected = [doc for doc in PAPER_ORDER if doc in pages and doc != "book/intro"]
    assert [doc for doc in shown if doc in expected] == expected, f"navigation order: {shown}"
    assert set(shown) >= set(pages) - {"book/intro"}, f"pages missing from the navigation: {set(pages) - set(shown)}"


# ---------------------------------------------------------------------------------------------------------------
# every number about the run comes from glue (issue 19, item 1)

#: The numbers a page may type by hand, the only ones: the paper's own values and constants (section 5's NSD
#: 0.79 ± 0.17 and 0.56 ± 0.17 for k = 250 images and n = 100 masks, their difference −0.23; 100,000 training
#: images; its arXiv id), Pathak's constants the book quotes (the weight 0.999 of the reconstruction loss; the random
#: regions' noise resolution 0.06, threshold 0.25, coverage between 20% and 30% and 10000-pixel pattern), and the
#: book's fixed rules (95% and 90% intervals, a nominal 2.5%, a 99.99% band, coverage 10% to 25%, the margin 0.085,
#: paper scale from 1,000,000 samples), and the parameter counts of Pathak's networks (71,124,544 for G, 2,765,568
#: for D; the reference spec's count of his code) with his weight initialisation N(0, 0.02).
PAPER_NUMBERS = {"0.79", "0.56", "0.17", "0.23", "100,000", "1803.04033", "0.999", "0.06", "0.25", "20%", "30%",
                 "10000", "95%", "90%", "2.5%", "99.99%", "10%", "25%", "0.085", "1,000,000", "71,124,544",
                 "2,765,568", "0.02"}
NUMBER = re.compile(r"(?<![\w.,/])\d[\d,]*(?:\.\d+)?%?(?![\w])")
#: What reads as a result: a decimal, a percentage, a count with thousands separators, or a count of 10000 or
#: more. Small integers (sizes, counts, equation and figure numbers), section numbers (3.1, 4.2) and years are
#: the text's structure.
RESULT = re.compile(r".*[.%,].*|\d{5,}")
STRUCTURE = re.compile(r"[1-9]\.[1-9]|(19|20)\d\d")
#: What is not prose: code (inputs, literals, commands), a notebook's computed outputs, glued values and math.
NOT_PROSE = ("cell_output", "cell_input", "pasted-text", "pasted-inline", "math", "highlight", "output", "toctree")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
#: Classes MyST puts on a page's sections so that MathJax leaves their text alone: they mark prose, not math (matched
#: as "math" they would hide whole pages from the check).
MATHJAX_IGNORE = {"tex2jax_ignore", "mathjax_ignore"}


class _Prose(HTMLParser):
    """The article's text a person wrote: everything but code, outputs, glue, math and footnote labels."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.stack: list[tuple[str, bool]] = []
        self.inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        cls = " ".join(c for c in (dict(attrs).get("class") or "").split() if c not in MATHJAX_IGNORE)
        if tag == "article" and "bd-article" in cls:
            self.inside = True
        if tag in VOID:
            return
        skip = (tag in ("script", "style", "pre", "code", "mjx-container", "nav") or
                any(c in cls.split() or c in cls for c in NOT_PROSE) or "label" in cls.split())
        self.stack.append((tag, skip))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()[0] == tag:
                break
        if tag == "article":
            self.inside = False

    def handle_data(self, data: str) -> None:
        if self.inside and not any(skip for _, skip in self.stack):
            self.text.append(data)


def unglued_numbers(markup: str) -> list[str]:
    """The numbers in a page's prose that are neither glued nor in :data:`PAPER_NUMBERS` (nor structure)."""
    parser = _Prose()
    parser.feed(markup)
    text = " ".join(parser.text)
    found = []
    for match in NUMBER.finditer(text):
        number = match.group(0).rstrip(",")
        if number in PAPER_NUMBERS or STRUCTURE.fullmatch(number) or not RESULT.fullmatch(number):
            continue
        found.append(f"{number!r} in ...{' '.join(text[max(0, match.start() - 50):match.end() + 30].split())}...")
    return found


def test_unglued_numbers_are_caught() -> None:
    """The check flags a hand-typed result and passes glued values, code, math and the paper's constants."""
    page = ('<article class="bd-article"><p>The paper: 0.79 ± 0.17 (section 4.2, eq. (1)). Ours: '
            '<span class="pasted-text">0.0612</span>, the re-run gave 0.5847 against 0.5743.</p>'
            '<pre>python -m cce_core reproduce --seeds 0 1 2 --time-budget 36000</pre>'
            '<span class="math notranslate">\\(k = 250, 0.37\\)</span><div class="cell_output"><p>4.16</p></div>'
            '</article>')
    assert [f.split(" in ")[0] for f in unglued_numbers(page)] == ["'0.5847'", "'0.5743'"]
    section = page.replace("<p>", '<section class="tex2jax_ignore mathjax_ignore"><p>').replace("</article>",
                                                                                            "</section></article>")
    assert [f.split(" in ")[0] for f in unglued_numbers(section)] == ["'0.5847'", "'0.5743'"]  # MyST's sections


def test_every_number_is_glued(pages: dict[str, Path]) -> None:
    """No page's prose carries a number typed by hand, except the paper's own (:data:`PAPER_NUMBERS`): results
    come from glue, so they cannot go stale when the run is re-made."""
    found = [f"{doc}: {f}" for doc, path in pages.items() for f in unglued_numbers(path.read_text())]
    assert not found, "numbers typed by hand:\n" + "\n".join(found[:60])
