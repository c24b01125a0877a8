"""The kernel stage: source + variant patches + config fragments -> a cached Image.

Builds go through tuxmake (null runtime here, docker/podman where users have
them) with the ccache wrapper, so variants that differ in a few KVM files cost
seconds. Artifacts (Image, .config, tuxmake metadata, build log, reproducer)
land in a content-addressed cache entry keyed by everything that can change
the binary: source identity, patch contents, fragment contents, toolchain.

Here: which persistent build tree a build happens in (seeded from which other), when
the config step runs, and the cache entry it fills with what metadata. The series is
applied by kernel_series, tuxmake is run by kernel_tuxmake, the keys are kernel_key's.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2fault import cache, progress, source
from s2fault.errors import BuildError, S2Error
from s2fault.kernel import (
    buildtree,
    kconfig,
    variants,
)
from s2fault.kernel import (
    key as kernel_key,
)
from s2fault.kernel import (
    series as kernel_series,
)
from s2fault.kernel import (
    tuxmake as kernel_tuxmake,
)


@dataclass(frozen=True)
class KernelBuild:
    variant: str
    key: str
    image: Path
    config: Path
    dir: Path
    cached: bool
    seconds: float
    metadata: dict[str, Any]


def build(
    variant_name: str,
    src: source.Source | str | None = None,
    fragment_names: list[str] | None = None,
    cache_root: Path | None = None,
    runtime: str = "null",
    jobs: int | None = None,
) -> KernelBuild:
    """Return the built kernel for a variant, building it only on a cache miss.

    A miss builds incrementally: the source as it is has one persistent build tree per
    (source, config), and each variant one of its own, seeded from it and kept between
    builds. Kbuild then recompiles what the series changed since that tree's last build
    (the whole series for a new tree, the edited file for an edited series) and links.
    The result is the same Image bytes as a build from scratch (tests/test_incremental.py).

    `src` is the command's resolved source (source.resolve(), once per command); a spec
    string is resolved here, for one build.
    """
    from s2fault import project

    cache_root = cache_root or project.cache_dir()
    start = time.monotonic()
    variant = variants.load(variant_name)
    fragments = kconfig.fragment_paths(fragment_names)
    progress.stage(variant_name, "source")
    src = source.pin(src, cache_root)
    source.check_unchanged(src)
    key = kernel_key.build_key(src, variant, fragments)
    entry = cache.Entry("kernels", key, cache_root)

    def done(cached: bool) -> KernelBuild:
        return _result(variant_name, key, entry, cached, start)

    if entry.verify():
        return done(True)
    with cache.locked(entry.lock_path):
        # Another run may have built it while this one waited for the lock.
        if entry.verify():
            return done(True)
        job = kernel_tuxmake.Job(variant_name, key, fragments, runtime,
                                 jobs or kernel_tuxmake.default_jobs(), cache_root)
        trees = kernel_key.trees_dir(src, fragments, cache_root)
        base = buildtree.Tree(trees / "base")
        with entry.staging() as staged:
            if not variant.patches:
                with cache.locked(base.lock_path):
                    info = _build_tree(base, src, {}, job, staged)
            else:
                progress.stage(variant_name, "patch")
                overlay = kernel_series.series_overlay(variant, src.tree)
                tree = buildtree.Tree(trees / f"variant-{variant.name}")
                with cache.locked(tree.lock_path):
                    info = {}
                    if not _usable(tree):
                        info |= _seed(tree, _nearest_tree(variant, trees) or base, base,
                                      src, job)
                    info |= _build_tree(tree, src, overlay, job, staged)
            _publish(entry, staged, _metadata(variant, src, fragments, start, **info))
    return done(False)


def _usable(tree: buildtree.Tree) -> bool:
    """A variant tree can be built on when its last build ran to its end, passed or
    failed (make deletes what a failed recipe half wrote). An interrupted one may hold a
    half-written object that looks newer than its source: it is seeded again."""
    return tree.state().get("clean") is True and tree.obj.is_dir()


def _nearest_tree(variant: variants.Variant, trees: Path) -> buildtree.Tree | None:
    """The built tree of the variant's base chain closest to it (fix-reverted for a
    variant on top of it): seeded from there, only the variant's own patches compile."""
    name = variant.base
    while name:
        tree = buildtree.Tree(trees / f"variant-{name}")
        if _usable(tree):
            return tree
        name = variants.load(name).base
    return None


def _seed(tree: buildtree.Tree, origin: buildtree.Tree, base: buildtree.Tree,
          src: source.Source, job: kernel_tuxmake.Job) -> dict[str, Any]:
    """Copy the objects of `origin` (a variant's tree, or the base, built first if it is
    not built yet) into a new variant tree."""
    with cache.locked(origin.lock_path):
        info: dict[str, Any] = {}
        if origin == base and base.state().get("clean") is not True:
            # This variant's build paid for the base tree's: say so in its metadata
            # (`make bench --cold` splits a cold check's time with it).
            built = _build_tree(base, src, {}, job, None)
            info["base_built"] = {k: built[k] for k in ("sync_seconds", "make_seconds")}
        if not _usable(origin):  # a variant tree that went away while this one waited
            return _seed(tree, base, base, src, job) if origin != base else info
        progress.stage(job.label, f"seed from {origin.root.name}")
        start = time.monotonic()
        buildtree.seed(tree, origin)
        return info | {"seeded_from": origin.root.name,
                       "seed_seconds": round(time.monotonic() - start, 1)}


def _build_tree(tree: buildtree.Tree, src: source.Source, overlay: dict[str, bytes | None],
                job: kernel_tuxmake.Job, staged: Path | None, donor_ok: bool = True
                ) -> dict[str, Any]:
    """Bring the tree's source to `src` + `overlay`, build, and copy the artifacts into
    `staged` (when given). Returns what happened, for the build's metadata. A new tree
    starts from a built tree of another source when there is one (`donor_ok`)."""
    if tree.state().get("clean") is False:
        tree.remove()  # interrupted: start again (ccache has what it compiled)
    info: dict[str, Any] = {"build_tree": str(tree.root)}
    if donor_ok and not tree.src.is_dir():
        info |= _seed_from_donor(tree, job)
    t = time.monotonic()
    changed = buildtree.sync(tree, src.tree, src.identity, overlay)
    info["sync_seconds"] = round(time.monotonic() - t, 2)
    info["changed_files"] = len(changed) if changed != ["*"] else "all"
    ckey = kernel_key.config_key(job.fragments)
    config = tree.obj / ".config"
    need_config = (not config.is_file() or tree.state().get("config_key") != ckey
                   or any(_affects_config(rel) for rel in changed))
    tree.save_state(clean=False)
    for out in ("out-config", "out-kernel"):
        shutil.rmtree(tree.root / out, ignore_errors=True)
    t = time.monotonic()
    if need_config:
        config.unlink(missing_ok=True)  # tuxmake keeps an existing .config
    try:
        kernel_tuxmake.run(tree, job, staged, run_config=need_config)
    except BuildError:
        tree.save_state(clean=True)  # a failed build ran to its end: the tree is sound
        raise
    info["config"] = "ran" if need_config else "kept (fragments and Kconfig unchanged)"
    info["make_seconds"] = round(time.monotonic() - t, 1)
    tree.save_state(clean=True, config_key=ckey)
    return info


def _seed_from_donor(tree: buildtree.Tree, job: kernel_tuxmake.Job) -> dict[str, Any]:
    """Start a new tree (another git ref, a bisection) from the newest built base tree
    of the same config. Its sync then compares the two sources file by file: files
    equal in content keep the donor's objects, so kbuild compiles what differs between
    the two sources, not the whole kernel through ccache."""
    ckey = kernel_key.config_key(job.fragments)
    candidates = []
    for state_file in (job.cache_root / "builds").glob("*/base/state.json"):
        donor = buildtree.Tree(state_file.parent)
        if donor != tree and donor.state().get("config_key") == ckey and _usable(donor):
            candidates.append((state_file.stat().st_mtime, str(donor.root), donor))
    if not candidates:
        return {}
    donor = max(candidates)[2]
    with cache.locked(donor.lock_path):
        if not _usable(donor):
            return {}
        progress.stage(job.label, f"seed from {donor.root.parent.name}/{donor.root.name}")
        start = time.monotonic()
        buildtree.seed(tree, donor)
        return {"seeded_from": str(donor.root),
                "seed_seconds": round(time.monotonic() - start, 1)}


def _affects_config(rel: str) -> bool:
    """Could a change of this file change what the config step writes?"""
    return rel == "*" or Path(rel).name.startswith("Kconfig") or rel.startswith("scripts/kconfig/")


def build_from_scratch(variant_name: str, workdir: Path,
                       src: source.Source | str | None = None,
                       fragment_names: list[str] | None = None,
                       cache_root: Path | None = None, jobs: int | None = None) -> Path:
    """Build a variant in a new tree under `workdir`, with no object of an earlier build
    in it, and return its Image (not cached). The reference the incremental path is
    held to. ccache still answers: it returns what the compiler gives for the same
    preprocessed input and command line, whichever tree asks."""
    from s2fault import project

    cache_root = cache_root or project.cache_dir()
    variant = variants.load(variant_name)
    fragments = kconfig.fragment_paths(fragment_names)
    src = source.pin(src, cache_root)
    source.check_unchanged(src)
    tree = buildtree.Tree(workdir / "scratch")
    tree.remove()
    job = kernel_tuxmake.Job(f"{variant_name} (from scratch)",
                             kernel_key.build_key(src, variant, fragments), fragments, "null",
                             jobs or kernel_tuxmake.default_jobs(), cache_root)
    staged = workdir / "artifacts"
    staged.mkdir(parents=True, exist_ok=True)
    overlay = kernel_series.series_overlay(variant, src.tree)
    _build_tree(tree, src, overlay, job, staged, donor_ok=False)
    return staged / kernel_tuxmake.KERNEL_IMAGE


def _result(variant: str, key: str, entry: cache.Entry, cached: bool, start: float
            ) -> KernelBuild:
    return KernelBuild(
        variant=variant, key=key, image=entry.dir / kernel_tuxmake.KERNEL_IMAGE,
        config=entry.dir / "config", dir=entry.dir, cached=cached,
        seconds=time.monotonic() - start, metadata=entry.metadata(),
    )


def _metadata(variant: variants.Variant, src: source.Source, fragments: list[Path],
              start: float, **extra: object) -> dict[str, Any]:
    return {
        "variant": variant.name,
        "source": src.spec,
        "source_identity": src.identity,
        **({"source_commit": src.commit} if src.commit else {}),
        "patches": [str(p.relative_to(p.parents[1])) for p in variant.patches],
        "fragments": [f.name for f in fragments],
        "toolchain": kernel_key.toolchain_id(),
        "tuxmake": kernel_tuxmake.version(),
        "build_seconds": round(time.monotonic() - start, 1),
        **extra,
    }


def _publish(entry: cache.Entry, staged: Path, meta: dict[str, Any]) -> None:
    (staged / "s2fault-build.json").write_text(json.dumps(meta, indent=2) + "\n")
    entry.publish(staged, meta)


def build_incremental(
    src: source.Source,
    variant: variants.Variant,
    fragments: list[Path],
    build_root: Path,
    cache_root: Path | None = None,
    runtime: str = "null",
    jobs: int | None = None,
    label: str | None = None,
) -> KernelBuild:
    """Build `src` with the variant's patches in the persistent build tree `build_root`.

    For bisection: one tree serves every commit of a repository. Each step brings the
    tree's source to the commit (files git did not change keep their inode and mtime)
    plus the series, so kbuild rebuilds only what changed since the previous step; the
    tree has the same relative layout as every other build, so ccache answers for
    files the matrix compiled. The kernel is published under the same cache key a
    fresh build gets: a commit visited twice is a cache hit. Raises BuildError when a
    patch does not apply or the kernel does not build. `label` names the build in
    progress output (default: the variant's name).
    """
    from s2fault import project

    label = label or variant.name
    cache_root = cache_root or project.cache_dir()
    start = time.monotonic()
    key = kernel_key.build_key(src, variant, fragments)
    entry = cache.Entry("kernels", key, cache_root)

    def done(cached: bool) -> KernelBuild:
        return _result(variant.name, key, entry, cached, start)

    if entry.verify():
        return done(True)
    tree = buildtree.Tree(build_root)
    with cache.locked(entry.lock_path), cache.locked(tree.lock_path):
        if entry.verify():
            return done(True)
        build_root.mkdir(parents=True, exist_ok=True)
        progress.stage(label, "patch")
        overlay = kernel_series.series_overlay(variant, src.tree)
        job = kernel_tuxmake.Job(label, key, fragments, runtime,
                                 jobs or kernel_tuxmake.default_jobs(), cache_root)
        with entry.staging() as staged:
            info = _build_tree(tree, src, overlay, job, staged)
            meta = _metadata(variant, src, fragments, start,
                             incremental_build_dir=str(tree.obj), **info)
            _publish(entry, staged, meta)
    return done(False)


def series_problems(names: list[str], src: source.Source | str | None = None,
                    cache_root: Path | None = None) -> dict[str, str]:
    """Variant name -> why its series does not apply to the source (the command's
    resolved one, or a spec resolved here), for those that do not. A source that
    cannot be had is left to the build to report."""
    from s2fault import project

    loaded = [variants.load(name) for name in names]
    if not any(v.patches for v in loaded):
        return {}
    try:
        src = source.pin(src, cache_root or project.cache_dir())
    except S2Error:
        return {}
    problems = {}
    for var in loaded:
        if not var.patches:
            continue
        progress.stage(var.name, "apply check")
        try:
            kernel_series.check_series(var, src.tree)
        except BuildError as e:
            problems[var.name] = e.message
    return problems
