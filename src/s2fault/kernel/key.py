"""What a built kernel is keyed by in the cache: everything that can change the binary
(the recipe, the source's identity, the cross compiler, tuxmake's version, the series
and the fragments), and what the config step and the build trees are keyed by.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from s2fault import cache, hosttools, source
from s2fault.kernel import tuxmake as kernel_tuxmake
from s2fault.kernel import variants

# Bump when the way a kernel is built changes, so old entries are not reused.
# 2: persistent build trees (source + objects inside it), KBUILD_BUILD_VERSION pinned.
RECIPE = "s2fault-kernel-2"


@functools.cache  # asked for by every key and metadata record: one gcc run per process
def toolchain_id() -> str:
    gcc = hosttools.require("aarch64-linux-gnu-gcc")
    out = subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


def build_key(src: source.Source, variant: variants.Variant, fragments: list[Path]) -> str:
    parts: list[str | bytes] = [RECIPE, src.identity, toolchain_id(), kernel_tuxmake.version()]
    for patch in variant.patches:
        parts += [patch.name, patch.read_bytes()]
    for frag in fragments:
        parts += [frag.name, frag.read_bytes()]
    return cache.key_of(*parts)


def config_key(fragments: list[Path]) -> str:
    """What the config step depends on besides the source's Kconfig files."""
    parts: list[str | bytes] = [RECIPE, toolchain_id()]
    for frag in fragments:
        parts += [frag.name, frag.read_bytes()]
    return cache.key_of(*parts)


def trees_dir(src: source.Source, fragments: list[Path], cache_root: Path) -> Path:
    """The build trees of one (source, config): `base` (the source as it is) and one
    per variant, seeded from the base."""
    key = cache.key_of(RECIPE, src.identity, config_key(fragments), kernel_tuxmake.version())
    return cache_root / "builds" / key
