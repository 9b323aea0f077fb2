"""MkDocs hooks (``mkdocs.yml`` -> ``hooks``): put the latest benchmark results into ``benchmarks.md``.

``make bench`` writes ``bench/results/latest.md``. The page shows it when it exists and says so when
it does not, so the docs build strictly with or without results (and never show made-up numbers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MARKER = "<!-- bench-results -->"
RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "latest.md"
NO_RESULTS = (
    '!!! note "No benchmark results in this build"\n'
    "    `bench/results/latest.md` did not exist when these docs were built. Run `make bench`, then\n"
    "    `make docs`, to include the results measured on your machine.\n"
)


def results_markdown(path: Path = RESULTS) -> str:
    """The results page's body: the file's Markdown (headings shifted below the page title) or a note."""
    if not path.is_file():
        return NO_RESULTS
    lines = []
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif line.startswith("#") and not fenced:
            line = "#" + line  # the page has its own title: results' "# ..." becomes "## ..."
        lines.append(line)
    return "_From `bench/results/latest.md`._\n\n" + "\n".join(lines) + "\n"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any, **kwargs: Any) -> str:
    """Replace the marker of ``benchmarks.md`` with the results."""
    if page.file.src_uri != "benchmarks.md" or MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, results_markdown())
