"""Docs that code points at exist: every 'docs/method.md, "Section"' citation names a heading."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sources():
    for top in ("fer_jax", "data_prep", "configs", "tests"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                path = os.path.join(folder, name)
                if name.endswith(".py") and path != os.path.abspath(__file__):
                    yield path


def test_method_md_citations_name_existing_sections():
    text = open(os.path.join(ROOT, "docs", "method.md"), encoding="utf-8").read()
    headings = {h.strip() for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    cited = 0
    for path in _sources():
        source = open(path, encoding="utf-8").read()
        # Any mention of method.md must be the repository's docs/method.md.
        for match in re.finditer(r"(\S*)method\.md", source):
            assert match.group(1).endswith("docs/"), f"{path}: cites {match.group(0)!r}"
        for match in re.finditer(r'docs/method\.md, ((?:"[^"]+"(?: and |, )?)+)', source):
            for section in re.findall(r'"([^"]+)"', match.group(1)):
                cited += 1
                assert section in headings, f"{path}: no section {section!r} in docs/method.md"
    assert cited >= 5
