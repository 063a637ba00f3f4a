"""The documentation a newcomer walks: README.md, docs/*.md and reports/README.md.

Every relative link (``[text](path)``, ``[text](path#anchor)``, ``[text](#anchor)`` and reference
definitions ``[label]: path``) must resolve to a file of the repository (on disk and not
git-ignored, so never to a generated output), and every anchor to a heading of its target under
GitHub's slug rules. README.md stays short, and every topic page is reachable from it.
"""
from __future__ import annotations

import re
import subprocess
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 200
TOPIC_PAGES = ["pipeline", "models", "deviations", "datasets", "metrics", "ablations", "operations",
               "cli", "report", "design", "running-the-paper"]


def doc_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "reports" / "README.md"]


# --- markdown scanning ------------------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title") and ![alt](target); text may hold one level of brackets
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^()\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out, fence = [], None
    for no, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if m:
            mark = m.group(1)
            if fence is None:
                fence = mark
            elif mark[0] == fence[0] and len(mark) >= len(fence):
                fence = None
            continue
        if fence is None:
            out.append((no, line))
    return out


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link outside code."""
    found = []
    for no, line in prose_lines(text):
        m = _REF_DEF.match(line)
        if m:
            found.append((no, m.group(1)))
            continue
        for m in _INLINE_LINK.finditer(_INLINE_CODE.sub("", line)):
            found.append((no, m.group(1)))
    return [(no, t[1:-1] if t.startswith("<") else t) for no, t in found]


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (github-slugger): the rendered text, lower-cased,
    punctuation and symbols dropped (letters, digits, ``_``, ``-`` and spaces kept), each space
    a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links/images → their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")
    text = text.lower()
    kept = "".join(ch for ch in text
                   if ch in "-_ " or unicodedata.category(ch)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a markdown text, duplicates numbered as GitHub does (-1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(text):
        m = _HEADING.match(line)
        if not m:
            continue
        slug = github_slug(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def git_ignored(path: Path) -> bool:
    r = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT, capture_output=True)
    if r.returncode not in (0, 1):
        pytest.skip(f"git check-ignore unavailable: {r.stderr.decode().strip()}")
    return r.returncode == 0


def broken_links(doc: Path) -> list[str]:
    """One message per link of doc that does not resolve."""
    problems = []
    for no, target in links(doc.read_text(encoding="utf-8")):
        where = f"{doc.relative_to(ROOT)}:{no}: {target}"
        if _SCHEME.match(target) or target.startswith("//"):
            continue  # external URL: not checked offline
        path_part, _, anchor = target.partition("#")
        path_part = unquote(path_part)
        if path_part.startswith("/"):
            problems.append(f"{where}: absolute path (use a path relative to the file)")
            continue
        dest = (doc.parent / path_part).resolve() if path_part else doc.resolve()
        try:
            dest.relative_to(ROOT)
        except ValueError:
            problems.append(f"{where}: points outside the repository")
            continue
        if not dest.exists():
            problems.append(f"{where}: no such file {dest.relative_to(ROOT)}")
            continue
        if git_ignored(dest):
            problems.append(f"{where}: {dest.relative_to(ROOT)} is git-ignored (a generated file)")
            continue
        if anchor:
            if dest.suffix.lower() != ".md" or not dest.is_file():
                problems.append(f"{where}: anchor into a non-markdown target")
            elif unquote(anchor) not in anchors(dest.read_text(encoding="utf-8")):
                problems.append(f"{where}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    return problems


# --- the scanner itself ------------------------------------------------------------------------

@pytest.mark.parametrize("heading, slug", [
    ("Quickstart", "quickstart"),
    ("CI and the metric-tolerance gate", "ci-and-the-metric-tolerance-gate"),
    ("Ablations (Tables 2–5, Figs. 7–9)", "ablations-tables-25-figs-79"),
    ("Pipeline, profiles and experiments", "pipeline-profiles-and-experiments"),
    ("`msgnn-bench` and `train_msgnn`", "msgnn-bench-and-train_msgnn"),
    ("See [Models](models.md) **now**", "see-models-now"),
    ("Where to change what?", "where-to-change-what"),
    ("A  B", "a--b"),
])
def test_github_slug(heading, slug):
    assert github_slug(heading) == slug


def test_anchors_number_duplicates_and_skip_code():
    text = "# Top\n## Part\n```bash\n# not a heading\n```\n## Part\n### Part\n"
    assert anchors(text) == {"top", "part", "part-1", "part-2"}


def test_links_found_outside_code_only():
    text = ("See [a](a.md) and ![img](img/x.png \"t\") and [b](<b c.md#x>).\n"
            "`[not](code.md)` here\n"
            "```\n[not](fenced.md)\n```\n"
            "[ref]: ref.md\n"
            "[nested [x]](n.md) [ext](https://example.org/y)\n")
    assert [t for _, t in links(text)] == ["a.md", "img/x.png", "b c.md#x", "ref.md", "n.md",
                                           "https://example.org/y"]


def test_broken_links_are_reported(tmp_path, monkeypatch):
    """Negative control: the checker flags a missing file, a missing anchor and an escape."""
    monkeypatch.setitem(globals(), "ROOT", tmp_path)  # broken_links reads these module globals
    monkeypatch.setitem(globals(), "git_ignored", lambda path: False)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n## Good part\n")
    doc = tmp_path / "README.md"
    doc.write_text("[ok](docs/a.md#good-part) [self](#top) [gone](docs/missing.md)\n"
                   "[bad anchor](docs/a.md#bad-part) [out](../elsewhere.md) [web](https://x.org)\n"
                   "# Top\n")
    problems = broken_links(doc)
    assert len(problems) == 3, problems
    assert "missing.md" in problems[0] and "no such file" in problems[0]
    assert "#bad-part" in problems[1]
    assert "outside the repository" in problems[2]


# --- the repository's documentation ------------------------------------------------------------

def test_doc_files_exist():
    missing = [str(p.relative_to(ROOT)) for p in doc_files() if not p.is_file()]
    missing += [f"docs/{n}.md" for n in TOPIC_PAGES if not (ROOT / "docs" / f"{n}.md").is_file()]
    assert not missing, missing


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    assert links(doc.read_text(encoding="utf-8")), f"{doc.relative_to(ROOT)} links nowhere"
    problems = broken_links(doc)
    assert not problems, "\n".join(problems)


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; keep it ≤ {README_MAX_LINES} (move detail to docs/)"


def test_every_topic_page_is_linked_from_readme():
    linked = {(README.parent / unquote(t.partition("#")[0])).resolve()
              for _, t in links(README.read_text(encoding="utf-8")) if not _SCHEME.match(t)}
    pages = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "reports" / "README.md"]
    unlinked = [str(p.relative_to(ROOT)) for p in pages if p.resolve() not in linked]
    assert not unlinked, f"not linked from README.md: {unlinked}"


def test_readme_keeps_the_quickstart_commands():
    text = README.read_text(encoding="utf-8")
    for cmd in ("python3 -m benchmark.bootstrap repro", "python3 -m benchmark.bootstrap test",
                ".venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db"):
        assert cmd in text, cmd
