"""Every marked example in README.md and docs/*.md runs against a live server, in page order.

How to mark a block is in docs/extending.md ("Examples in the docs are tests").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.doc_examples import find_examples, run_example
from helpers.paths import REPO
from helpers.services import ServerProcess

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKED = [p for p in PAGES if find_examples(p)]


def test_the_docs_have_examples_that_run() -> None:
    # The docs pages written for users carry runnable examples; a page losing all its
    # markers would silently stop being tested.
    assert REPO / "docs" / "examples.md" in MARKED


@pytest.mark.parametrize("page", MARKED, ids=[p.name for p in MARKED])
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        for example in find_examples(page):
            run_example(example, server.url, REPO)
    finally:
        server.stop()


def test_markers_are_parsed_with_their_expected_exit(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n```bash\nnot marked\n```\n"
        "<!-- doctest -->\n```bash\necho one\n```\n"
        "<!-- doctest: exit=1 -->\n~~~python\nraise SystemExit(1)\n~~~\n"
    )
    one, two = find_examples(page)
    assert (one.language, one.code, one.exit_code, one.line) == ("bash", "echo one\n", 0, 6)
    assert (two.language, two.exit_code) == ("python", 1)
    run_example(two, "http://127.0.0.1:9", tmp_path)
    with pytest.raises(AssertionError, match="exited 0, expected 1"):
        run_example(type(two)(page, 9, "bash", "true\n", 1), "http://127.0.0.1:9", tmp_path)
    page.write_text("<!-- doctest -->\n```ruby\nputs 1\n```\n")
    with pytest.raises(ValueError, match="ruby language"):
        find_examples(page)
