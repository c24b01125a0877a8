"""One tuxmake run in a build tree: the config step when it is needed, then the build,
then the artifacts (Image, .config, System.map, build log, tuxmake's metadata, the
reproducer command line) copied where the cache entry is staged.

The command line is pinned for reproducible bytes (REPRODUCIBLE_ENV) and goes through
the ccache wrapper. A failed step keeps its log under the cache and raises BuildError
with the first line that says error.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from s2fault import hosttools, progress
from s2fault.errors import BuildError, InfraError
from s2fault.kernel import buildtree, kconfig

KERNEL_IMAGE = "Image"
BUILD_TARGET = "default"  # builds Image on the way to Image.gz (see run)

# What makes two builds of the same inputs give the same bytes. KBUILD_BUILD_VERSION:
# kbuild otherwise numbers each link of a build directory (#1, #2, ...) into the
# version string, so a tree built twice would differ from a fresh one. KCFLAGS:
# tuxmake's default names the build directory's absolute path, which kbuild records in
# every .cmd file; a tree copied elsewhere (a variant seeded from its base) would then
# rebuild everything. Paths are relative anyway (see buildtree).
REPRODUCIBLE_ENV = {
    "KBUILD_BUILD_TIMESTAMP": "@0",
    "KBUILD_BUILD_USER": "s2fault",
    "KBUILD_BUILD_HOST": "s2fault",
    "KBUILD_BUILD_VERSION": "1",
    "KCFLAGS": "",
}


@dataclass(frozen=True)
class Job:
    """One tuxmake run in a build tree."""

    label: str
    key: str
    fragments: list[Path]
    runtime: str
    jobs: int
    cache_root: Path


def default_jobs() -> int:
    return (os.cpu_count() or 1) + 1


def version() -> str:
    try:
        import tuxmake

        found: str = tuxmake.__version__
        return found
    except (ImportError, AttributeError):
        return "unknown"


def run(tree: buildtree.Tree, job: Job, staged: Path | None, run_config: bool) -> None:
    """Configure `tree` (when `run_config`) and build it; copy the artifacts into
    `staged` when given. Raises BuildError when a step fails or drops a symbol."""
    # The tuxmake of our own environment first: the version that is in the cache key.
    beside = Path(sys.executable).parent / "tuxmake"
    tuxmake = str(beside) if beside.exists() else shutil.which("tuxmake") or str(beside)
    if not Path(tuxmake).exists():
        raise InfraError("missing host tool 'tuxmake' (PyPI package: tuxmake; run 'make setup')")
    hosttools.preflight(*hosttools.KERNEL_BUILD)
    base = [
        tuxmake, "--runtime", job.runtime, "--wrapper", "ccache", "--target-arch", "arm64",
        "--toolchain", "gcc", "--kconfig", "allnoconfig", "--jobs", str(job.jobs),
        "--kernel-image", KERNEL_IMAGE, "--directory", str(tree.src),
        "--build-dir", str(tree.obj),
        # Paths that still are absolute (none that kbuild writes, with this layout)
        # become relative to the cache, so they do not split ccache by tree.
        "--environment", f"CCACHE_BASEDIR={job.cache_root}",
        # ccache's depend mode: a miss compiles once, without running the preprocessor
        # first to hash its output (kbuild's -Wp,-MMD depfile lists the headers
        # instead). A kernel from an empty ccache took 342 s here against 454 s, with
        # the same Image bytes; hits are looked up as before.
        "--environment", "CCACHE_DEPEND=1",
    ]
    for name, value in REPRODUCIBLE_ENV.items():
        base += ["--environment", f"{name}={value}"]
    for frag in job.fragments:
        base += ["--kconfig-add", str(frag)]

    if run_config:
        progress.stage(job.label, "config")
        _run(base + ["--output-dir", str(tree.root / "out-config"), "config"], job, "config")
    config_text = (tree.obj / ".config").read_text()
    missing = kconfig.dropped(job.fragments, config_text)
    if missing:
        raise BuildError(
            f"variant {job.label}: olddefconfig dropped requested symbols: {', '.join(missing)}"
        )
    progress.stage(job.label, "build")
    # tuxmake's `default` target (plain `make`: vmlinux, Image, Image.gz), not `kernel`,
    # which runs `make` and then `make Image`: a second walk of kbuild over a tree where
    # nothing is left to do, measured at 4-5 s of CPU here, a third of an edit's build.
    # The config step of this run finds .config there and does nothing.
    _run(base + ["--output-dir", str(tree.root / "out-kernel"), BUILD_TARGET], job,
         BUILD_TARGET)
    image = tree.obj / "arch" / "arm64" / "boot" / KERNEL_IMAGE
    if not image.is_file():
        raise BuildError(f"kernel build left no {KERNEL_IMAGE} in {image.parent}")
    if staged is None:
        return
    shutil.copy2(image, staged / KERNEL_IMAGE)
    shutil.copy2(tree.obj / ".config", staged / "config")
    system_map = tree.obj / "System.map"
    if system_map.is_file():
        shutil.copy2(system_map, staged / "System.map")
    with open(staged / "build.log", "w") as log:
        for step in ("out-config", "out-kernel"):
            part = tree.root / step / "build.log"
            if part.is_file():
                log.write(part.read_text(errors="replace"))
    meta = tree.root / "out-kernel" / "metadata.json"
    if meta.is_file():
        shutil.copy2(meta, staged / "metadata.json")
    reproducer = " ".join(_quote(a) for a in base + ["config", BUILD_TARGET])
    (staged / "reproducer").write_text(reproducer + "\n")


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def _run(cmd: list[str], job: Job, target: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    outdir = Path(cmd[cmd.index("--output-dir") + 1])
    log = outdir / "build.log"
    if r.returncode != 0 or not _target_passed(outdir, target):
        text = log.read_text(errors="replace") if log.is_file() else r.stdout + r.stderr
        keep = job.cache_root / "logs" / f"{job.key}-{target}.log"
        keep.parent.mkdir(parents=True, exist_ok=True)
        keep.write_text(text)
        what = "configuration" if target == "config" else "build"
        raise BuildError(f"kernel {what} failed: {_first_error(text)} (log: {keep})")


def _target_passed(outdir: Path, target: str) -> bool:
    try:
        meta = json.loads((outdir / "metadata.json").read_text())
        return bool(meta["results"]["targets"][target]["status"] == "PASS")
    except (OSError, ValueError, KeyError):
        return True  # no metadata: trust the exit code


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if re.search(r"\berror\b", line, re.IGNORECASE) and "warning" not in line.lower():
            return line.strip()[:300]
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else "no output"
