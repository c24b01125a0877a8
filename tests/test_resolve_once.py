"""Resolve once: a command turns its --source spec into one source.Source and every
variant and cell below it uses that object. Real git (a repository made here with
`git init`), the real matrix path (the series check, the build that takes the source);
no kernel is compiled: the tree is kernel-shaped, not a kernel."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import project_home
from s2fault import kernel, matrix, source
from s2fault.errors import InputError
from s2fault.kernel import kconfig, key, variants

MMU = "arch/arm64/kvm/mmu.c"
_GIT_ENV = {"GIT_AUTHOR_NAME": "s2fault", "GIT_AUTHOR_EMAIL": "s2fault@example.invalid",
            "GIT_COMMITTER_NAME": "s2fault", "GIT_COMMITTER_EMAIL": "s2fault@example.invalid"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=os.environ | _GIT_ENV).stdout.strip()


def _variant(home: Path, name: str, old: str = "", new: str = "") -> None:
    """A variant whose one patch turns line `old` of mmu.c into `new` (none: no patch)."""
    folder = home / "patches" / name
    folder.mkdir(parents=True)
    series = ""
    if old:
        (folder / f"0001-{name}.patch").write_text(
            f"From: t <t@localhost>\nSubject: [PATCH] {name}\n\nwhy\n---\n"
            f"--- a/{MMU}\n+++ b/{MMU}\n@@ -1 +1 @@\n-{old}\n+{new}\n")
        series = f"0001-{name}.patch\n"
    (folder / "series").write_text(series)
    (folder / "variant.toml").write_text("[expect.functional]\nclean = true\n")


@pytest.fixture
def lab(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(repository, cache): a git repository of a kernel-shaped tree with a branch
    `topic` at its first commit, a checkout of our own (S2FAULT_HOME) with variants
    `plain` (no patch), `on-first` (applies to the first commit only) and `on-second`
    (applies to the commit the branch moves to in the tests only), and a cache of
    our own."""
    repo = tmp_path / "linux"
    (repo / "arch" / "arm64" / "kvm").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "Makefile").write_text("all:\n")
    (repo / MMU).write_text("int first;\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    git(repo, "branch", "topic")
    home = project_home(tmp_path / "home")
    _variant(home, "plain")
    _variant(home, "on-first", "int first;", "int first_patched;")
    _variant(home, "on-second", "int second;", "int second_patched;")
    cache = tmp_path / "cache"
    monkeypatch.setenv("S2FAULT_HOME", str(home))
    monkeypatch.setenv("S2FAULT_CACHE", str(cache))
    return repo, cache


def _move_topic(repo: Path) -> str:
    """A new commit on `topic` (mmu.c: `int second;`): what a push during a run does."""
    git(repo, "checkout", "-q", "topic")
    (repo / MMU).write_text("int second;\n")
    git(repo, "commit", "-q", "-am", "second")
    git(repo, "checkout", "-q", "main")
    return git(repo, "rev-parse", "topic")


def test_a_branch_that_moves_does_not_move_a_command_that_resolved_it(lab):
    repo, cache = lab
    spec = f"{repo}@topic"
    first = git(repo, "rev-parse", "topic")
    src = source.resolve(spec, cache)  # what `check --source REPO --ref topic` does, once
    assert src.commit == first and src.identity == f"git:{first}"
    options, unbuildable = matrix.pinned(matrix.RunOptions(source=src))
    assert unbuildable is None and options.source is src

    second = _move_topic(repo)
    assert second != first

    # Everything below the command still sees the first commit: the source each
    # variant's build is handed, the tree the series are checked against...
    built_from = source.pin(options.source, cache)
    assert built_from is src and built_from.commit == first
    assert (built_from.tree / MMU).read_text() == "int first;\n"
    assert kernel.series_problems(["on-first", "on-second"], options.source) == {
        "on-second": f"patch on-second/0001-on-second.patch does not apply: "
                     f"Hunk #1 FAILED at 1 in {MMU}"}
    # ...and the matrix itself: on-second (which the moved branch would take) is not
    # built, the first commit's tree being the one it is checked against.
    cells = matrix.run_matrix(["on-second"], ["functional"], cache / "results", options)
    assert [(c.variant, c.build) for c in cells] == [("on-second", {})]
    assert cells[0].why.startswith("could not judge: patch on-second/0001-on-second.patch "
                                   "does not apply")
    # What a build records about its source: the spec, and the commit it was pinned to.
    meta = kernel._metadata(variants.load("plain"), src, [], 0.0)
    assert (meta["source"], meta["source_identity"], meta["source_commit"]) == (
        spec, f"git:{first}", first)

    # A new command resolves again and sees the new commit; the first stays whole.
    again = source.resolve(spec, cache)
    assert again.commit == second and again.tree != src.tree
    assert (again.tree / MMU).read_text() == "int second;\n"
    assert (src.tree / MMU).read_text() == "int first;\n"
    assert kernel.series_problems(["on-first", "on-second"], again) == {
        "on-first": f"patch on-first/0001-on-first.patch does not apply: "
                    f"Hunk #1 FAILED at 1 in {MMU}"}
    assert matrix.pinned(matrix.RunOptions(source=spec))[0].source.commit == second


def test_one_check_plan_resolves_its_source_once(lab, monkeypatch):
    """run_matrix as `check` calls it, with a spec: two variants (one patched, so the
    series check runs), in two modes, twice each; each variant goes on to kernel.build,
    which fails on this kernel-shaped tree after it has taken the source. The spec is
    resolved once, and every build started from the one commit."""
    repo, cache = lab
    spec = f"{repo}@topic"
    asked: list[str | None] = []
    real = source.resolve

    def counting(spec: str | None, cache_root: Path) -> source.Source:
        asked.append(spec)
        return real(spec, cache_root)

    monkeypatch.setattr(source, "resolve", counting)
    options = matrix.RunOptions(source=spec, repeat=2)
    cells = matrix.run_matrix(["plain", "on-first"], ["functional", "dilated"],
                              cache / "results", options)
    assert asked == [spec]
    assert sorted((c.variant, c.mode) for c in cells) == [
        ("on-first", "dilated"), ("on-first", "functional"),
        ("plain", "dilated"), ("plain", "functional")]
    # Each variant got as far as building (the tree is no kernel): none was refused
    # before, and none saw another source.
    assert all(c.why.startswith("build: ") for c in cells), [c.why for c in cells]
    pinned = real(spec, cache)
    assert pinned.commit == git(repo, "rev-parse", "topic")
    fragments = kconfig.fragment_paths()
    assert [p.name for p in (cache / "builds").iterdir()] == [
        key.trees_dir(pinned, fragments, cache).name]


def test_a_tree_edited_after_it_was_resolved_is_not_built(lab):
    """A tree used in place can change under a command; its variants would not be
    built from the same files, and the kernel cache would file them under the
    identity of the files as they were. The build refuses; the cell says why."""
    repo, cache = lab
    src = source.resolve(str(repo), cache)
    assert src.live and src.commit == git(repo, "rev-parse", "HEAD")
    source.check_unchanged(src)  # as it was: fine
    (repo / MMU).write_text("int edited;\n")
    with pytest.raises(InputError, match="changed while this command ran"):
        source.check_unchanged(src)
    cells = matrix.run_matrix(["plain"], ["functional"], cache / "results",
                              matrix.RunOptions(source=src))
    assert len(cells) == 1 and "changed while this command ran" in cells[0].why
    assert not (cache / "builds").exists()
    # Cached sources cannot change: a commit's checkout is not checked.
    assert not source.resolve(f"{repo}@topic", cache).live
