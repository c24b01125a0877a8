"""The arm64 Image header (Documentation/arch/arm64/booting.rst).

The header says the kernel's page size, which decides the PMD block size under
test (4K -> 2M, 16K -> 32M, 64K -> 512M) and so the hugepage command line.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from s2fault.errors import InputError

ARM64_MAGIC = 0x644D5241  # "ARM\x64"
PAGE_SIZES = {1: 4096, 2: 16384, 3: 65536}
PMD_BLOCK = {4096: 2 << 20, 16384: 32 << 20, 65536: 512 << 20}


@dataclass(frozen=True)
class KernelImage:
    path: Path
    page_size: int
    compressed: bool
    image_size: int
    # The ELF the Image was made from, when known (run --build-dir): symbols for gdb and
    # file:line for the frames of a splat.
    vmlinux: Path | None = None

    @property
    def block_bytes(self) -> int:
        return PMD_BLOCK[self.page_size]


def inspect(path: Path) -> KernelImage:
    """Read the header of an arm64 Image or Image.gz; refuse anything else by name."""
    if not path.exists():
        raise InputError(f"kernel '{path}' does not exist")
    if not path.is_file():
        raise InputError(f"kernel '{path}' is not a file")
    with open(path, "rb") as f:
        head = f.read(64)
    compressed = head[:2] == b"\x1f\x8b"
    if compressed:
        try:
            with gzip.open(path, "rb") as f:
                head = f.read(64)
        except (OSError, EOFError, zlib.error) as e:
            raise InputError(f"kernel '{path}' is a gzip file that cannot be read: {e}") from e
    if len(head) < 64:
        raise InputError(f"kernel '{path}' is not an arm64 Image (file too short)")
    (image_size, flags) = struct.unpack_from("<QQ", head, 16)
    (magic,) = struct.unpack_from("<I", head, 56)
    if magic != ARM64_MAGIC:
        raise InputError(f"kernel '{path}' is not an arm64 Image (no ARM\\x64 magic at 0x38)")
    if flags & 1:
        raise InputError(f"kernel '{path}' is a big-endian arm64 Image; only little-endian runs")
    page_code = (flags >> 1) & 3
    if page_code not in PAGE_SIZES:
        raise InputError(f"kernel '{path}' does not declare its page size in the Image header")
    return KernelImage(path, PAGE_SIZES[page_code], compressed, image_size)
