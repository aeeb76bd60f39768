"""The docs' complete method lists name every declared method (``METHOD`` in ``trainers/<name>.py``).

A list that claims to be complete is marked in its Markdown file::

    <!-- methods: trainer -->`CoOp`, `CoCoOp`, ...<!-- /methods -->

(a note may follow the form, e.g. ``<!-- methods: key (the trainers/ line) -->``). The form says how the
methods are spelled there: ``trainer`` (the ``--trainer`` name, an alias or the table title), ``key``
(``coop``: the scripts' folder and the sweep's key) or ``node`` (``COOP``: the config node ``TRAINER.COOP``).
Every declared method must appear in every marked list, so a new ``trainers/<name>.py`` fails here until
the docs name it. ``MARKED`` is the table of the marked lists; a marker removed or added without updating
it fails too.
"""
import os
import re

import pytest

from trainers.config import method_declarations

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: file -> the forms of its marked lists, in file order
MARKED = {
    "README.md": ["trainer", "key", "trainer", "node"],
    "docs/ARCHITECTURE.md": ["key"],
    "docs/API.md": ["trainer"],
    "docs/CONFIG.md": ["node"],
    "docs/METHODS.md": ["trainer", "node"],
    "docs/REPRODUCE.md": ["trainer", "key", "trainer"],
}

_BLOCK = re.compile(r"<!-- methods: (\w+)[^>]*-->(.*?)<!-- /methods -->", re.S)


def marked_lists(text):
    """``[(form, text of the list)]`` of a Markdown text, in order."""
    return _BLOCK.findall(text)


def spellings(decl, form):
    """The ways ``decl`` may be written in a list of ``form``."""
    if form == "trainer":
        return {decl["trainer"], decl["title"], *decl["aliases"]}
    if form == "key":
        return {decl["key"]}
    if form == "node":
        return {decl["node"]}
    raise ValueError(f"unknown method-list form {form!r}; expected trainer, key or node")


def missing(block, form, decls):
    """Trainer names of the declarations that ``block`` does not name (as whole words)."""
    return [d["trainer"] for d in decls
            if not any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(s)}(?![A-Za-z0-9_])", block)
                       for s in spellings(d, form))]


def test_a_missing_method_is_found():
    decls = [d for d in method_declarations() if d["key"] in ("zsclip", "coop", "cocoop", "kgcoop")]
    assert missing("`CoCoOp`, `KgCoOp`", "trainer", decls) == ["ZeroshotCLIP", "CoOp"]  # CoOp is not CoCoOp
    assert missing("zero-shot CLIP, CoOp, CoCoOp, KgCoOp", "trainer", decls) == []
    assert missing("`scripts/cocoop/`, kgcoop.py", "key", decls) == ["ZeroshotCLIP", "CoOp"]
    assert missing("COOP/COCOOP/KGCOOP/ZSCLIP", "node", decls) == []
    assert marked_lists("a <!-- methods: key -->`coop`<!-- /methods --> b\n<!-- methods: node -->\nX\n"
                        "<!-- /methods -->") == [("key", "`coop`"), ("node", "\nX\n")]


@pytest.mark.parametrize("path", sorted(MARKED))
def test_every_marked_list_names_every_declared_method(path):
    decls = method_declarations()
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        blocks = marked_lists(f.read())
    assert [form for form, _ in blocks] == MARKED[path], f"{path}: the marked method lists changed; update MARKED"
    problems = [f"{path}, marked list {i + 1} ({form}): missing {', '.join(names)}"
                for i, (form, block) in enumerate(blocks) if (names := missing(block, form, decls))]
    assert not problems, "\n".join(problems)


def test_no_other_file_has_marked_lists():
    found = []
    for folder in (REPO, os.path.join(REPO, "docs")):
        for name in sorted(os.listdir(folder)):
            rel = os.path.relpath(os.path.join(folder, name), REPO)
            if name.endswith(".md") and rel not in MARKED:
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    if marked_lists(f.read()):
                        found.append(rel)
    assert not found, f"marked method lists outside MARKED: {found}"


def test_every_declared_method_has_its_scripts_folder():
    for decl in method_declarations():
        folder = os.path.join(REPO, "scripts", decl["key"])
        assert os.path.isfile(os.path.join(folder, "base2new_train.sh")), f"scripts/{decl['key']}/ is missing"
