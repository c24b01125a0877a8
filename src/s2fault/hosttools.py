"""Host binaries the harness needs, and the Debian package that provides each.

Commands check the whole set they will need before they start (`preflight`), so a
missing tool is one line naming it and its package, not an Error 127 from deep inside
make or a ccache error from the config step."""

from __future__ import annotations

import shutil
from pathlib import Path

from s2fault.errors import InfraError

PACKAGES = {
    "qemu-system-aarch64": "qemu-system-arm",
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
    "aarch64-linux-gnu-strip": "binutils-aarch64-linux-gnu",
    # Kbuild compiles its host programs (fixdep, kconfig) with the native compiler.
    "gcc": "gcc",
    "ccache": "ccache",
    "make": "make",
    "flex": "flex",
    "bison": "bison",
    "bc": "bc",
    "patch": "patch",
    "git": "git",
    "perl": "perl",
    "tar": "tar",
    "xz": "xz-utils",
    # The kernel's headers_install (kvm-selftests) copies with rsync.
    "rsync": "rsync",
    # --via host-run: Debian's arm64 Python, fetched by a private apt and extracted.
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    # run --build-dir decodes splat frames with the vmlinux; run --gdb prints a gdb
    # command line that should work as printed.
    "aarch64-linux-gnu-addr2line": "binutils-aarch64-linux-gnu",
    "gdb-multiarch": "gdb-multiarch",
}

# Files that are not binaries but without which a stage fails in a confusing way.
FILES = {
    # Host programs include <stdio.h>; gcc without libc6-dev fails in the config step.
    Path("/usr/include/stdio.h"): "libc6-dev",
}

KERNEL_BUILD = ("aarch64-linux-gnu-gcc", "gcc", "ccache", "make", "flex", "bison", "bc",
                "perl", "patch", Path("/usr/include/stdio.h"))
GUEST = ("aarch64-linux-gnu-gcc",)
BOOT = ("qemu-system-aarch64",)
ROOTFS = ("apt-get", "apt-cache", "dpkg-deb")
GDB = ("gdb-multiarch",)
SELFTESTS = ("rsync", "make", "aarch64-linux-gnu-gcc", "aarch64-linux-gnu-strip")


def require(binary: str) -> str:
    """Return the path of `binary`, or stop naming the package that provides it."""
    path = shutil.which(binary)
    if path is None:
        package = PACKAGES.get(binary, "?")
        raise InfraError(f"missing host tool '{binary}' (Debian package: {package})")
    return path


def missing(*needs: str | Path) -> list[str]:
    """'NAME (Debian package: PKG)' for each binary or file of `needs` that is absent."""
    out = []
    for need in dict.fromkeys(needs):
        if isinstance(need, Path):
            if not need.exists():
                out.append(f"{need} (Debian package: {FILES.get(need, '?')})")
        elif shutil.which(need) is None:
            out.append(f"'{need}' (Debian package: {PACKAGES.get(need, '?')})")
    return out


def preflight(*needs: str | Path) -> None:
    """Stop before any work when a tool of `needs` is missing, naming all of them."""
    absent = missing(*needs)
    if len(absent) == 1:
        raise InfraError(f"missing host tool {absent[0]}")
    if absent:
        raise InfraError(f"missing host tools: {', '.join(absent)}")
