"""Citations: every key cited is in docs/REFERENCES.md, and nothing alludes to "seed N".

The course reports this code was built from were handed to us as numbered "seeds";
students do not have them under that name, so the repository cites them by their
bibliography key (``[fcos-light]``, ``[cs771-hw3]``, ...) like any other source.

What counts as a citation is decided per kind of file, so that indexing code such
as ``boxes[keep]`` or ``Optional[str]`` never looks like one:

* Python: only comments and string literals (docstrings included) are read, and a
  key must stand on its own: after the start of the text, a space, a quote or an
  opening bracket, never after an identifier (``values[index]``) or a closing bracket.
* Markdown: fenced code blocks and inline code are removed first; a ``[key]``
  followed by ``(`` is a link, not a citation.
"""

import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("fcos_from_scratch", "docs", "README.md", "benchmarks", "data_scripts",
           "lessons", "assignments", "tests")
TEXT_SUFFIXES = {".py", ".md", ".txt", ".rst", ".cfg", ".toml", ".sh", ".yaml", ".yml", ".ipynb"}
THIS_FILE = Path(__file__).resolve()  # holds allusions on purpose, as test cases

# "seed 003", "(seed 001)", "seed 000's", "seeds 000 and 001", "seed-003 lab", a
# number wrapped onto the next line ("seed\n000", also after a comment's "#"), and
# "seed report(s)" / "seed lab" / "seed paper" / "seed document(s)". Not an
# allusion: "--seed 1", "seed=0", "seed: 0", "manual_seed(0)", "seed_everything",
# "rng.seed(3)", "seed + epoch" -- a random seed is always written as code.
_AFTER_SEED = r"(?:[ \t]*-[ \t]*|[ \t]+|[ \t]*\n[ \t]*(?:#[ \t]*)?)"
SEED_ALLUSION = re.compile(
    r"(?<![\w.\-])seeds?"
    r"(?:" + _AFTER_SEED + r"(?:00\d|[0-4])(?![\w.,]?\d)"  # a report number
    r"|[ \t]+(?:reports?|labs?|papers?|documents?|docs?)\b)",  # or a kind of seed
    re.IGNORECASE,
)

KEY = r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*"
# Python comments and strings: a key after start / whitespace / opening bracket.
PY_CITATION = re.compile(r"(?:^|(?<=[\s(\[{\"']))\[(" + KEY + r")\](?![(\[=])")
# Markdown prose (code removed): any key not followed by "(" (a link) or "[".
MD_CITATION = re.compile(r"(?<![\w\]])\[(" + KEY + r")\](?![(\[])")
# Percent-format notebook cells ("# %% [markdown]", lessons) are not citations.
CELL_MARKER = re.compile(r"^# %% \[markdown\]", re.MULTILINE)
FENCED_CODE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def _files():
    for name in SCANNED:
        path = ROOT / name
        if path.is_file():
            yield path
        elif path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and file.suffix in TEXT_SUFFIXES and file.resolve() != THIS_FILE:
                    yield file


CELL_MARKER = re.compile(r"#\s*%%\s*\[markdown\]")  # a lesson's percent-format text-cell marker


def _python_text(source: str):
    """``(line, text)`` of every comment and string literal of a Python source
    (lesson cell markers are syntax, not prose)."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    for token in tokens:
        if token.type in (tokenize.COMMENT, tokenize.STRING):
            yield token.start[0], CELL_MARKER.sub("# %%", token.string)


def _markdown_text(source: str):
    """``(line, text)`` of every prose line of a Markdown source (code blanked out)."""
    prose = FENCED_CODE.sub(lambda m: "\n" * m.group(0).count("\n"), source)
    for number, line in enumerate(prose.splitlines(), start=1):
        yield number, INLINE_CODE.sub("", line)


def cited_keys(path: Path, source: str, known=frozenset()):
    """``(line, key)`` of every citation in one file whose key is not in ``known``.

    A Python file is tokenized only when its raw text has a candidate outside
    ``known``: every citation in a comment or string also matches the raw text, so
    the shortcut finds exactly what tokenizing would, in a fraction of the time.
    """
    if path.suffix == ".py":
        source = CELL_MARKER.sub("# %%", source)
        if all(m.group(1) in known for m in PY_CITATION.finditer(source)):
            return []
        pieces, pattern = _python_text(source), PY_CITATION
    elif path.suffix == ".md":
        pieces, pattern = _markdown_text(source), MD_CITATION
    else:
        return []
    return [(line, m.group(1)) for line, text in pieces for m in pattern.finditer(text)
            if m.group(1) not in known]


def reference_keys():
    table_row = re.compile(r"^\|\s*`\[(" + KEY + r")\]`\s*\|", re.MULTILINE)
    return table_row.findall((ROOT / "docs" / "REFERENCES.md").read_text(encoding="utf-8"))


# --- the rules themselves ------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "as seed 003 did", "(seed 001)", "seed 000's value", "the seed-003 lab", "Seed 002",
    "seeds 000 and 001", "(seed\n000)", "# (seed\n# 000) said", "seed 3", "the seed reports",
    "a seed lab", "seed 004:",
])
def test_seed_allusion_pattern_fires(text):
    assert SEED_ALLUSION.search(text)


@pytest.mark.parametrize("text", [
    "--seed 1", "seed=0", "seed: 0", "torch.manual_seed(0)", "seed_everything(3)",
    "rng.seed(3)", "seed + epoch", "default_rng([seed, split, index])", "seeded by seed + 1",
    "a seed 0.5", "seed 12", "seed 1,000",
])
def test_seed_allusion_pattern_ignores_random_seeds(text):
    assert not SEED_ALLUSION.search(text)


def test_citation_patterns():
    py = 'x = boxes[keep]  # [fcos] Eq. (3), values[index], Optional[str], ([giou] Sec. 2)'
    assert [key for _, key in cited_keys(Path("a.py"), py)] == ["fcos", "giou"]
    cell = "# %% [markdown]\n# ## Title [giou] Alg. 1\n"
    assert [key for _, key in cited_keys(Path("a.py"), cell)] == ["giou"]
    md = "As [fcos-light] did; see [the docs](x.md), `a[key]`.\n```\npip install .[test]\n```\n"
    assert [key for _, key in cited_keys(Path("a.md"), md)] == ["fcos-light"]


# --- the repository --------------------------------------------------------------------------
def test_no_seed_allusions():
    found = []
    for path in _files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in SEED_ALLUSION.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)!r}")
    assert not found, "cite the report by its docs/REFERENCES.md key instead:\n" + "\n".join(found)


def test_reference_keys_are_unique():
    keys = reference_keys()
    assert len(keys) > 20, "docs/REFERENCES.md table not found"
    assert len(keys) == len(set(keys)), sorted(k for k in set(keys) if keys.count(k) > 1)


def test_every_cited_key_is_in_references():
    known = set(reference_keys())
    unknown = []
    for path in _files():
        for line, key in cited_keys(path, path.read_text(encoding="utf-8", errors="replace"), known):
            unknown.append(f"{path.relative_to(ROOT)}:{line}: [{key}]")
    assert not unknown, "add these to docs/REFERENCES.md or fix the citation:\n" + "\n".join(unknown)
