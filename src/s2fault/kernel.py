"""The kernel stage: source + variant patches + config fragments -> a cached Image.

Builds go through tuxmake (null runtime here, docker/podman where users have
them) with the ccache wrapper, so variants that differ in a few KVM files cost
seconds. Artifacts (Image, .config, tuxmake metadata, build log, reproducer)
land in a content-addressed cache entry keyed by everything that can change
the binary: source identity, patch contents, fragment contents, toolchain.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import cache, hosttools, kconfig, progress, source, variants
from .errors import BuildError, InfraError, S2Error

# Bump when the way a kernel is built changes, so old entries are not reused.
RECIPE = "s2fault-kernel-1"
KERNEL_IMAGE = "Image"


@dataclass(frozen=True)
class KernelBuild:
    variant: str
    key: str
    image: Path
    config: Path
    dir: Path
    cached: bool
    seconds: float
    metadata: dict


def toolchain_id() -> str:
    gcc = hosttools.require("aarch64-linux-gnu-gcc")
    out = subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


def _tuxmake_version() -> str:
    try:
        import tuxmake

        return tuxmake.__version__
    except (ImportError, AttributeError):
        return "unknown"


def build_key(src: source.Source, variant: variants.Variant, fragments: list[Path]) -> str:
    parts: list[str | bytes] = [RECIPE, src.identity, toolchain_id(), _tuxmake_version()]
    for patch in variant.patches:
        parts += [patch.name, patch.read_bytes()]
    for frag in fragments:
        parts += [frag.name, frag.read_bytes()]
    return cache.key_of(*parts)


def build(
    variant_name: str,
    source_spec: str | None = None,
    fragment_names: list[str] | None = None,
    cache_root: Path | None = None,
    runtime: str = "null",
    jobs: int | None = None,
) -> KernelBuild:
    """Return the built kernel for a variant, building it only on a cache miss."""
    from . import project

    cache_root = cache_root or project.cache_dir()
    start = time.monotonic()
    variant = variants.load(variant_name)
    fragments = kconfig.fragment_paths(fragment_names)
    progress.stage(variant_name, "source")
    src = source.resolve(source_spec, cache_root)
    key = build_key(src, variant, fragments)
    entry = cache.Entry("kernels", key, cache_root)

    def done(cached: bool) -> KernelBuild:
        return _result(variant_name, key, entry, cached, start)

    if entry.verify():
        return done(True)
    with cache.locked(entry.lock_path):
        # Another run may have built it while this one waited for the lock.
        if entry.verify():
            return done(True)
        work = cache_root / "work" / key
        shutil.rmtree(work, ignore_errors=True)  # leftovers of an interrupted build
        try:
            with entry.staging() as staged:
                progress.stage(variant_name, "patch")
                source.link_tree(src.tree, work / "src")
                apply_series(variant, work / "src")
                _tuxmake(variant_name, work, fragments, staged, runtime, jobs or _jobs(), key)
                _publish(entry, staged, _metadata(variant, src, fragments, start))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return done(False)


def _result(variant: str, key: str, entry: cache.Entry, cached: bool, start: float
            ) -> KernelBuild:
    return KernelBuild(
        variant=variant, key=key, image=entry.dir / KERNEL_IMAGE,
        config=entry.dir / "config", dir=entry.dir, cached=cached,
        seconds=time.monotonic() - start, metadata=entry.metadata(),
    )


def _metadata(variant: variants.Variant, src: source.Source, fragments: list[Path],
              start: float, **extra: str) -> dict:
    return {
        "variant": variant.name,
        "source": src.spec,
        "source_identity": src.identity,
        "patches": [str(p.relative_to(p.parents[1])) for p in variant.patches],
        "fragments": [f.name for f in fragments],
        "toolchain": toolchain_id(),
        "tuxmake": _tuxmake_version(),
        "build_seconds": round(time.monotonic() - start, 1),
        **extra,
    }


def _publish(entry: cache.Entry, staged: Path, meta: dict) -> None:
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
    """Build `src` with the variant's patches in a persistent build directory.

    For bisection: one build directory serves every commit of a repository, so kbuild
    rebuilds only what changed since the previous step (ccache covers the rest).
    `build_root/build` (kbuild's O=) is kept between calls. The source is `src.tree`
    itself when there are no patches (tuxmake builds out of tree; the tree stays
    clean), else a hard-linked copy at the fixed path `build_root/src`, so kbuild's
    dependency files name the same paths from one step to the next. The kernel is
    published under the same cache key a fresh build gets: a commit visited twice is a
    cache hit. Raises BuildError when a patch does not apply or the kernel does not build.
    `label` names the build in progress output (default: the variant's name).
    """
    from . import project

    label = label or variant.name
    cache_root = cache_root or project.cache_dir()
    start = time.monotonic()
    key = build_key(src, variant, fragments)
    entry = cache.Entry("kernels", key, cache_root)

    def done(cached: bool) -> KernelBuild:
        return _result(variant.name, key, entry, cached, start)

    if entry.verify():
        return done(True)
    with (
        cache.locked(entry.lock_path),
        cache.locked(build_root.parent / f"{build_root.name}.lock"),
    ):
        if entry.verify():
            return done(True)
        build_root.mkdir(parents=True, exist_ok=True)
        # tuxmake keeps an existing .config; a commit may change Kconfig, so each step
        # gets the config a fresh build of it would get (unchanged symbols touch nothing).
        (build_root / "build" / ".config").unlink(missing_ok=True)
        for out in ("out-config", "out-kernel"):
            shutil.rmtree(build_root / out, ignore_errors=True)
        src_dir = src.tree
        if variant.patches:
            src_dir = build_root / "src"
            shutil.rmtree(src_dir, ignore_errors=True)
            progress.stage(label, "patch")
            source.link_tree(src.tree, src_dir)
            apply_series(variant, src_dir)
        with entry.staging() as staged:
            _tuxmake(label, build_root, fragments, staged, runtime, jobs or _jobs(), key,
                     src_dir=src_dir)
            meta = _metadata(variant, src, fragments, start,
                             incremental_build_dir=str(build_root / "build"))
            _publish(entry, staged, meta)
    return done(False)


def _jobs() -> int:
    return (os.cpu_count() or 1) + 1


def apply_series(variant: variants.Variant, tree: Path) -> None:
    """Apply the variant's patch chain; a patch that does not apply names its hunk."""
    patch_bin = hosttools.require("patch")
    for patch in variant.patches:
        r = subprocess.run(
            [patch_bin, "-p1", "--forward", "--batch", "--no-backup-if-mismatch", "-i", str(patch)],
            cwd=tree, capture_output=True, text=True,
        )
        if r.returncode != 0:
            raise BuildError(
                f"patch {patch.parent.name}/{patch.name} does not apply: {_patch_failure(r.stdout)}"
            )


def check_series(variant: variants.Variant, tree: Path) -> None:
    """Check that the variant's whole chain applies to `tree`, without building.

    The same patch(1) run as the build, so fuzz and offsets are judged alike, but on
    copies of only the files the chain touches: milliseconds, not a copy of 80k files.
    A later patch sees what the earlier ones did, as in the build. Raises BuildError
    naming the patch and the hunk."""
    with tempfile.TemporaryDirectory(prefix="s2fault-apply-") as scratch_name:
        scratch = Path(scratch_name)
        for rel in sorted(set().union(*(_touched_files(p) for p in variant.patches))):
            original = tree / rel
            if original.is_file() and not original.is_symlink():
                (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(original, scratch / rel)
        apply_series(variant, scratch)


def _touched_files(patch: Path) -> set[str]:
    """Paths (after -p1) a patch names; a stray match is harmless, it just is not copied."""
    names: set[str] = set()
    for line in patch.read_text(errors="replace").splitlines():
        m = re.match(r"diff --git a/(\S+) b/(\S+)$", line)
        if m:
            names.update(m.groups())
            continue
        m = re.match(r"(?:---|\+\+\+) ([^\t]+)", line)
        if m and m.group(1).strip() != "/dev/null" and "/" in m.group(1):
            names.add(m.group(1).strip().split("/", 1)[1])
            continue
        m = re.match(r"(?:rename|copy) from (\S+)$", line)
        if m:
            names.add(m.group(1))
    # Never outside the tree, whatever a hostile patch says.
    return {n for n in names if not n.startswith("/") and ".." not in Path(n).parts}


def series_problems(names: list[str], source_spec: str | None = None,
                    cache_root: Path | None = None) -> dict[str, str]:
    """Variant name -> why its series does not apply to the source, for those that
    do not. A source that cannot be had is left to the build to report."""
    from . import project

    loaded = [variants.load(name) for name in names]
    if not any(v.patches for v in loaded):
        return {}
    try:
        src = source.resolve(source_spec, cache_root or project.cache_dir())
    except S2Error:
        return {}
    problems = {}
    for var in loaded:
        if not var.patches:
            continue
        progress.stage(var.name, "apply check")
        try:
            check_series(var, src.tree)
        except BuildError as e:
            problems[var.name] = e.message
    return problems


def _patch_failure(output: str) -> str:
    current = "?"
    for line in output.splitlines():
        m = re.match(r"patching file (\S+)", line)
        if m:
            current = m.group(1)
        m = re.match(r"(Hunk #\d+ FAILED at \d+)", line)
        if m:
            return f"{m.group(1)} in {current}"
        if "can't find file to patch" in line or "No file to patch" in line:
            return f"file to patch not found ({line.strip()})"
        if "Reversed (or previously applied) patch detected" in line:
            return f"already applied to {current}"
    tail = [line for line in output.splitlines() if line.strip()]
    return tail[-1] if tail else "patch failed"


def _tuxmake(
    variant: str, work: Path, fragments: list[Path], staged: Path, runtime: str, jobs: int,
    key: str, src_dir: Path | None = None,
) -> None:
    src_dir = src_dir or work / "src"
    # The tuxmake of our own environment first: the version that is in the cache key.
    beside = Path(sys.executable).parent / "tuxmake"
    tuxmake = str(beside) if beside.exists() else shutil.which("tuxmake") or str(beside)
    if not Path(tuxmake).exists():
        raise InfraError("missing host tool 'tuxmake' (PyPI package: tuxmake; run 'make setup')")
    hosttools.preflight(*hosttools.KERNEL_BUILD)
    base = [
        tuxmake, "--runtime", runtime, "--wrapper", "ccache", "--target-arch", "arm64",
        "--toolchain", "gcc", "--kconfig", "allnoconfig", "--jobs", str(jobs),
        "--kernel-image", KERNEL_IMAGE, "--directory", str(src_dir),
        "--build-dir", str(work / "build"),
        # Paths under the work area become relative, so a variant in another work
        # directory still hits the ccache entries of the first build.
        "--environment", f"CCACHE_BASEDIR={work.parent}",
        "--environment", "KBUILD_BUILD_TIMESTAMP=@0",
        "--environment", "KBUILD_BUILD_USER=s2fault",
        "--environment", "KBUILD_BUILD_HOST=s2fault",
    ]
    for frag in fragments:
        base += ["--kconfig-add", str(frag)]

    progress.stage(variant, "config")
    _run_tuxmake(base + ["--output-dir", str(work / "out-config"), "config"], work, "config")
    config_text = (work / "build" / ".config").read_text()
    missing = kconfig.dropped(fragments, config_text)
    if missing:
        raise BuildError(
            f"variant {variant}: olddefconfig dropped requested symbols: {', '.join(missing)}"
        )
    progress.stage(variant, "build")
    _run_tuxmake(base + ["--output-dir", str(work / "out-kernel"), "kernel"], work, "kernel")

    shutil.copy2(work / "build" / "arch" / "arm64" / "boot" / KERNEL_IMAGE, staged / KERNEL_IMAGE)
    shutil.copy2(work / "build" / ".config", staged / "config")
    system_map = work / "build" / "System.map"
    if system_map.is_file():
        shutil.copy2(system_map, staged / "System.map")
    with open(staged / "build.log", "w") as log:
        for step in ("out-config", "out-kernel"):
            part = work / step / "build.log"
            if part.is_file():
                log.write(part.read_text(errors="replace"))
    meta = work / "out-kernel" / "metadata.json"
    if meta.is_file():
        shutil.copy2(meta, staged / "metadata.json")
    reproducer = " ".join(_quote(a) for a in base + ["config", "kernel"])
    (staged / "reproducer").write_text(reproducer + "\n")


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def _run_tuxmake(cmd: list[str], work: Path, target: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    outdir = Path(cmd[cmd.index("--output-dir") + 1])
    log = outdir / "build.log"
    if r.returncode != 0 or not _target_passed(outdir, target):
        text = log.read_text(errors="replace") if log.is_file() else r.stdout + r.stderr
        keep = work.parent.parent / "logs" / f"{work.name}-{target}.log"
        keep.parent.mkdir(parents=True, exist_ok=True)
        keep.write_text(text)
        what = "configuration" if target == "config" else "build"
        raise BuildError(f"kernel {what} failed: {_first_error(text)} (log: {keep})")


def _target_passed(outdir: Path, target: str) -> bool:
    try:
        meta = json.loads((outdir / "metadata.json").read_text())
        return meta["results"]["targets"][target]["status"] == "PASS"
    except (OSError, ValueError, KeyError):
        return True  # no metadata: trust the exit code


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if re.search(r"\berror\b", line, re.IGNORECASE) and "warning" not in line.lower():
            return line.strip()[:300]
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else "no output"
