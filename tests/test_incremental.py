"""Incremental variant builds, for real: a variant's tree is seeded from the base build,
an edit of its series rebuilds what changed, and the Image is the one a build from
scratch gives (build timestamp, user, host and version pinned)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from conftest import mmu_line_variant_home
from s2fault import kernel, project, source
from s2fault.kernel import kconfig, key, variants
from s2fault.kernel import series as kernel_series

# Link products and what kbuild regenerates on every link; anything else compiled by a
# build is a file that the change reached.
_LINK_OBJECTS = {"init/version-timestamp.o", "vmlinux.o"}


def _home(tmp: Path, tag: str) -> Path:
    """A checkout of its own with one variant whose patch adds a tagged constant to
    arch/arm64/kvm/mmu.c: the tag changes the object code, so a build that missed the
    edit gives other Image bytes."""
    return mmu_line_variant_home(
        tmp / f"home-{tag}", "tagged",
        f'static const char s2fault_tag[] __attribute__((used)) = "{tag}";',
        "a tagged build")


def _objects_newer_than(obj: Path, t: float) -> set[str]:
    return {str(p.relative_to(obj)) for p in obj.rglob("*.o")
            if p.stat().st_mtime > t and not p.name.startswith(".tmp_")}


@pytest.mark.slow
def test_an_edited_series_rebuilds_one_file_and_matches_a_build_from_scratch(
        tmp_path, monkeypatch):
    stamp = f"{os.getpid()}-{time.time_ns()}"
    monkeypatch.setenv("S2FAULT_HOME", str(_home(tmp_path, f"a-{stamp}")))
    first = kernel.build("tagged")
    assert not first.cached
    meta = first.metadata
    tree = Path(meta["build_tree"])
    assert meta["changed_files"] in (1, "all"), meta  # "all": a new tree, seeded
    assert meta["config"].startswith("kept"), meta  # the base's .config: no Kconfig edit
    assert f"a-{stamp}".encode() in first.image.read_bytes()

    # The edit: a new tag. Only mmu.c is compiled again, then the kernel is linked.
    monkeypatch.setenv("S2FAULT_HOME", str(_home(tmp_path, f"b-{stamp}")))
    before = time.time()
    time.sleep(1.1)  # mtimes on this filesystem are fine-grained; this makes it certain
    second = kernel.build("tagged")
    assert not second.cached and Path(second.metadata["build_tree"]) == tree
    assert second.metadata["changed_files"] == 1 and "seed_seconds" not in second.metadata
    compiled = _objects_newer_than(tree / "linux" / "s2fault-build", before)
    assert "arch/arm64/kvm/mmu.o" in compiled
    assert compiled - {"arch/arm64/kvm/mmu.o"} <= _LINK_OBJECTS, compiled
    data = second.image.read_bytes()
    assert f"b-{stamp}".encode() in data and f"a-{stamp}".encode() not in data

    # The same variant from scratch: a new tree, no object of an earlier build.
    scratch = kernel.build_from_scratch("tagged", tmp_path / "scratch")
    try:
        assert scratch.read_bytes() == data, "incremental and from-scratch Images differ"
    finally:
        shutil.rmtree(tmp_path / "scratch", ignore_errors=True)


@pytest.mark.slow
def test_the_base_tree_of_a_source_is_shared_by_its_variants(upstream_build):
    """upstream (no patches) is the base build itself; a variant's tree is its own."""
    src = source.resolve(None, project.cache_dir())
    trees = key.trees_dir(src, kconfig.fragment_paths(), project.cache_dir())
    assert Path(upstream_build.metadata["build_tree"]) == trees / "base"
    fix = kernel.build("fix-reverted")
    assert Path(fix.metadata["build_tree"]) == trees / "variant-fix-reverted"
    overlay = kernel_series.series_overlay(variants.load("fix-reverted"), src.tree)
    assert set(overlay) == {"arch/arm64/include/asm/kvm_mmu.h"}
    text = (trees / "variant-fix-reverted" / "linux" / "arch/arm64/include/asm/kvm_mmu.h")
    assert text.read_bytes() == overlay["arch/arm64/include/asm/kvm_mmu.h"]
    # The base's source is untouched by any variant.
    pristine = src.tree / "arch/arm64/include/asm/kvm_mmu.h"
    assert (trees / "base" / "linux" / "arch/arm64/include/asm/kvm_mmu.h").read_bytes() == \
        pristine.read_bytes() != overlay["arch/arm64/include/asm/kvm_mmu.h"]
