"""The item table of the StackExchange routing scenario: one row per question thread, from the dump's Posts.xml.

    python bench/scenarios/stackexchange_items.py --out /tmp/se/items.tsv
    python bench/scenarios/stackexchange_items.py ../shared/data/stackexchange-qc/raw/Posts.xml --out items.tsv

Writes ``thread_id<TAB>title<TAB>tags<TAB>body`` with a header: ``thread_id`` is the question's post Id,
which is what ``events.csv`` of ``../shared/data/stackexchange-qc`` calls a thread (every answer, comment
and favourite there points at its question), so the table keys the same items. The body is the question's
HTML as text (tags dropped, entities decoded, whitespace collapsed) cut to about ``--body-chars``
characters at a word boundary; tags are the question's tags joined by ", ". Answers (PostTypeId 2), tag
wikis and the rest are skipped. Fields holding a double quote are written with CSV quoting (doubled
quotes), which nextaction's readers parse. The file is written to a temporary sibling and renamed over
``--out``, so a reader never sees half a table.

The data stays where it is (CC BY-SA, see its PROVENANCE.md); never copy it or the output into the repo.
Note: ``thread_id`` is not one of the item-id column names nextaction recognises by itself; map it when
reading (``read_items(path, mapping={"item": "thread_id"})``).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import tempfile
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

DEFAULT_POSTS = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "stackexchange-qc" / "raw" / "Posts.xml"
)
QUESTION = "1"  # PostTypeId of a question
BODY_CHARS = 1000
COLUMNS = ("thread_id", "title", "tags", "body")
SPACE = re.compile(r"\s+")
TAG = re.compile(r"<([^<>]+)>")
# elements whose end separates words ("a</p><p>b" is two words, "a<b>c</b>" one)
BLOCKS = frozenset(
    {"p", "br", "li", "ul", "ol", "pre", "blockquote", "h1", "h2", "h3", "h4", "hr", "div", "td", "tr"}
)


class _Text(HTMLParser):
    """Collects the text of an HTML fragment; block elements become spaces."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in BLOCKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in BLOCKS:
            self.parts.append(" ")


def collapse(text: str) -> str:
    """Every run of whitespace (tabs and line breaks too: one row per line) as one space, ends trimmed."""
    return SPACE.sub(" ", text).strip()


def html_text(html: str) -> str:
    """The text of an HTML fragment, whitespace collapsed."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    return collapse("".join(parser.parts))


def cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, at the last space before the limit when there is one."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    space = head.rfind(" ")
    return (head[:space] if space > limit // 2 else head).rstrip()


def tags_text(tags: str) -> str:
    """``<simulation><quantum-turing-machine>`` (or the newer ``|a|b|``) -> ``simulation, quantum-turing-machine``."""
    found = TAG.findall(tags) or [t for t in tags.split("|") if t]
    return ", ".join(collapse(t) for t in found)


def question_rows(posts: Path, *, body_chars: int = BODY_CHARS) -> list[tuple[str, str, str, str]]:
    """(thread_id, title, tags, body) of every question in a StackExchange ``Posts.xml``, in file order."""
    rows: list[tuple[str, str, str, str]] = []
    # iterparse with clear(): the dump of a big site does not fit in memory as a tree
    for _, el in ET.iterparse(posts, events=("end",)):
        if el.tag != "row":
            continue
        a = el.attrib
        if a.get("PostTypeId") == QUESTION and a.get("Id"):
            rows.append(
                (
                    a["Id"],
                    collapse(a.get("Title", "")),
                    tags_text(a.get("Tags", "")),
                    cut(html_text(a.get("Body", "")), body_chars),
                )
            )
        el.clear()
    return rows


def write_tsv(rows: list[tuple[str, str, str, str]], out: Path) -> None:
    """Write the table atomically: a temporary file in ``out``'s folder, then ``os.replace``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
            writer.writerow(COLUMNS)
            writer.writerows(rows)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("posts", nargs="?", type=Path, default=DEFAULT_POSTS, help="the dump's Posts.xml")
    ap.add_argument("--out", type=Path, required=True, help="the TSV to write (replaced atomically)")
    ap.add_argument("--body-chars", type=int, default=BODY_CHARS, help="longest body kept (characters)")
    args = ap.parse_args(argv)
    if not args.posts.is_file():
        raise SystemExit(f"{args.posts}: no such file; pass the path of a StackExchange Posts.xml")
    if args.body_chars < 1:
        raise SystemExit(f"--body-chars must be at least 1, got {args.body_chars}")
    try:
        rows = question_rows(args.posts, body_chars=args.body_chars)
    except ET.ParseError as err:
        raise SystemExit(f"{args.posts}: not a StackExchange XML dump ({err})") from None
    write_tsv(rows, args.out)
    print(f"{len(rows):,} question threads -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
