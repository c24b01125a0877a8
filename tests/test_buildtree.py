"""The build tree's source sync: what kbuild's dependency tracking relies on (mtimes of
unchanged files kept, changed files always newer), on small trees (no build)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from s2fault.kernel import buildtree


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _old(path: Path, seconds: float = 3600) -> None:
    """Age a file, as a source file older than the objects built from it is."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_a_new_tree_is_hard_links_with_the_overlay_on_top(tmp_path):
    pristine = _tree(tmp_path / "p", {"Makefile": "all:\n", "kvm/mmu.c": "a\n", "kvm/arm.c": "b\n"})
    tree = buildtree.Tree(tmp_path / "t")
    changed = buildtree.sync(tree, pristine, "id1", {"kvm/mmu.c": b"patched\n", "new.h": b"n\n"})
    assert changed == ["*"]
    assert (tree.src / "kvm/arm.c").stat().st_ino == (pristine / "kvm/arm.c").stat().st_ino
    assert (tree.src / "kvm/mmu.c").read_text() == "patched\n"
    assert (pristine / "kvm/mmu.c").read_text() == "a\n"  # never written through a link
    assert (tree.src / "new.h").read_text() == "n\n"
    assert tree.obj == tree.src / buildtree.OBJ_DIR


def test_same_pristine_only_the_overlay_paths_are_touched(tmp_path):
    pristine = _tree(tmp_path / "p", {"a.c": "a\n", "b.c": "b\n", "c.c": "c\n"})
    tree = buildtree.Tree(tmp_path / "t")
    buildtree.sync(tree, pristine, "id1", {"a.c": b"A1\n", "b.c": b"B\n"})
    for rel in ("a.c", "b.c", "c.c"):
        _old(tree.src / rel)
    before = {rel: (tree.src / rel).stat().st_mtime_ns for rel in ("a.c", "b.c", "c.c")}
    # The series changes a.c again, no longer touches b.c, and leaves c.c alone.
    changed = buildtree.sync(tree, pristine, "id1", {"a.c": b"A2\n"})
    assert changed == ["a.c", "b.c"]
    assert (tree.src / "a.c").read_text() == "A2\n"
    assert (tree.src / "b.c").read_text() == "b\n"
    # b.c went back to the pristine content with a fresh mtime, not the pristine file's
    # older one: kbuild must rebuild what was built from "B".
    assert (tree.src / "b.c").stat().st_mtime_ns > before["b.c"]
    assert (tree.src / "b.c").stat().st_ino != (pristine / "b.c").stat().st_ino
    assert (tree.src / "c.c").stat().st_mtime_ns == before["c.c"]
    # Nothing changed: nothing is touched.
    assert buildtree.sync(tree, pristine, "id1", {"a.c": b"A2\n"}) == []


def test_a_new_commit_is_walked_and_only_its_changes_are_new_files(tmp_path):
    """A bisection step: git checkout replaced some files of the work tree (new inodes),
    added one and deleted one; the tree follows, the rest keeps its inodes."""
    pristine = _tree(tmp_path / "p", {"a.c": "a\n", "d/b.c": "b\n", "d/gone.c": "g\n",
                                      "same.c": "s\n"})
    tree = buildtree.Tree(tmp_path / "t")
    buildtree.sync(tree, pristine, "c1", {})
    (tree.obj / "a.o").parent.mkdir(parents=True)
    (tree.obj / "a.o").write_text("object\n")
    for path, text in (("a.c", "a2\n"), ("same.c", "s\n")):  # rewritten, same.c identically
        (pristine / path).unlink()
        (pristine / path).write_text(text)
    (pristine / "d/gone.c").unlink()
    (pristine / "d/new.c").write_text("new\n")
    os.symlink("a.c", pristine / "link.c")
    (pristine / ".git").write_text("gitdir: /somewhere/worktrees/x\n")  # a worktree's
    changed = buildtree.sync(tree, pristine, "c2", {"d/b.c": b"patched\n"})
    assert not (tree.src / ".git").exists()
    assert sorted(changed) == ["a.c", "d/b.c", "d/gone.c", "d/new.c", "link.c"]
    assert (tree.src / "a.c").read_text() == "a2\n"
    assert not (tree.src / "d/gone.c").exists()
    assert (tree.src / "d/new.c").read_text() == "new\n"
    assert os.readlink(tree.src / "link.c") == "a.c"
    assert (tree.src / "d/b.c").read_text() == "patched\n"
    # Identical content, but a newer file: it stays (kbuild would rebuild from it), and
    # the walk remembers that it is equal.
    assert (tree.src / "same.c").stat().st_ino != (pristine / "same.c").stat().st_ino
    assert "same.c" in tree.state()["kept"]
    assert (tree.obj / "a.o").read_text() == "object\n"  # the objects are never touched
    # The next commit drops the series: d/b.c comes back with the pristine content.
    assert buildtree.sync(tree, pristine, "c3", {}) == ["d/b.c"]
    assert (tree.src / "d/b.c").read_text() == "b\n"


def test_seed_copies_objects_and_links_sources(tmp_path):
    pristine = _tree(tmp_path / "p", {"a.c": "a\n"})
    base = buildtree.Tree(tmp_path / "base")
    buildtree.sync(base, pristine, "id1", {})
    (base.obj / "a.o").parent.mkdir(parents=True)
    (base.obj / "a.o").write_text("object\n")
    _old(base.obj / "a.o", 60)
    variant = buildtree.Tree(tmp_path / "variant")
    buildtree.seed(variant, base)
    assert (variant.src / "a.c").stat().st_ino == (pristine / "a.c").stat().st_ino
    o = variant.obj / "a.o"
    assert o.read_text() == "object\n"
    assert o.stat().st_ino != (base.obj / "a.o").stat().st_ino  # a copy: written in place
    assert o.stat().st_mtime_ns == (base.obj / "a.o").stat().st_mtime_ns
    # The seeded tree knows its pristine tree: the next sync takes the quick path.
    assert buildtree.sync(variant, pristine, "id1", {"a.c": b"A\n"}) == ["a.c"]


def test_a_tree_of_another_source_keeps_the_mtimes_of_what_is_equal(tmp_path):
    """A tree seeded from another source's tree (a git checkout of the same kernel):
    files equal in content keep their older mtimes, or kbuild would rebuild them all;
    only the files that differ are new, and the next walk does not read them again."""
    old_src = _tree(tmp_path / "tarball", {"a.c": "a\n", "b.c": "b\n"})
    for rel in ("a.c", "b.c"):
        _old(old_src / rel)
    base = buildtree.Tree(tmp_path / "base")
    buildtree.sync(base, old_src, "tarball", {})
    base.obj.mkdir()
    checkout = _tree(tmp_path / "checkout", {"a.c": "a\n", "b.c": "B\n"})  # newer mtimes
    tree = buildtree.Tree(tmp_path / "tree")
    buildtree.seed(tree, base)
    before = (tree.src / "a.c").stat().st_mtime_ns
    assert buildtree.sync(tree, checkout, "git:1", {}) == ["b.c"]
    assert (tree.src / "a.c").stat().st_mtime_ns == before
    assert (tree.src / "b.c").read_text() == "B\n"
    # The next commit changes nothing: the equal file is known, not compared again.
    (tree.src / "a.c").unlink()
    (tree.src / "a.c").write_text("x\n")  # (were it read, it would differ)
    os.utime(tree.src / "a.c", ns=(before, before))
    assert buildtree.sync(tree, checkout, "git:2", {}) == []
