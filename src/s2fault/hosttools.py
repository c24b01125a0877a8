"""Host binaries the harness needs, and the Debian package that provides each."""

from __future__ import annotations

import shutil

from .errors import InfraError

PACKAGES = {
    "qemu-system-aarch64": "qemu-system-arm",
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
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
}


def require(binary: str) -> str:
    """Return the path of `binary`, or stop naming the package that provides it."""
    path = shutil.which(binary)
    if path is None:
        package = PACKAGES.get(binary, "?")
        raise InfraError(f"missing host tool '{binary}' (Debian package: {package})")
    return path
