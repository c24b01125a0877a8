"""The guest stage: cross-compile guests/ and pack the initramfs.

The initramfs is a cpio (newc) written here rather than by cpio(1), so it is
byte-for-byte reproducible and its cache key is the guest sources' hash.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from s2fault import cache, hosttools, project
from s2fault.errors import BuildError

RECIPE = "s2fault-guest-1"
BINARIES = {"init": "init", "s2fault-vmm": "bin/s2fault-vmm", "s2fault-ksft": "bin/s2fault-ksft",
            "s2fault-host-run": "bin/s2fault-host-run",
            "sh": "bin/sh"}


@dataclass(frozen=True)
class GuestImage:
    initramfs: Path
    key: str
    cached: bool

    @property
    def bin_dir(self) -> Path:
        """The static aarch64 programs themselves, beside the image that holds them."""
        return self.initramfs.parent / "bin"


def _sources(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and "build" not in p.relative_to(folder).parts
    )


def build(cache_root: Path | None = None) -> GuestImage:
    cache_root = cache_root or project.cache_dir()
    folder = project.guests_dir()
    gcc = hosttools.require("aarch64-linux-gnu-gcc")
    version = subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout
    parts: list[str | bytes] = [RECIPE, version.splitlines()[0] if version else ""]
    for path in _sources(folder):
        parts += [str(path.relative_to(folder)), path.read_bytes()]
    key = cache.key_of(*parts)
    entry = cache.Entry("guests", key, cache_root)
    if entry.verify():
        return GuestImage(entry.dir / "initramfs.cpio", key, True)
    with cache.locked(entry.lock_path):
        if entry.verify():
            return GuestImage(entry.dir / "initramfs.cpio", key, True)
        with entry.staging() as staged:
            out = staged / "bin"
            r = subprocess.run(
                ["make", "-C", str(folder), f"O={out}", "CROSS_COMPILE=aarch64-linux-gnu-"],
                capture_output=True, text=True,
            )
            if r.returncode != 0:
                lines = [ln for ln in (r.stderr or r.stdout).splitlines() if "error" in ln]
                first = lines[0] if lines else (r.stderr.strip().splitlines() or ["?"])[-1]
                raise BuildError(f"guest build failed: {first.strip()}")
            files = {dest: (out / name).read_bytes() for name, dest in BINARIES.items()}
            (staged / "initramfs.cpio").write_bytes(pack_initramfs(files))
            entry.publish(staged, {"sources": str(folder)})
    return GuestImage(entry.dir / "initramfs.cpio", key, False)


def _cpio_entry(name: str, mode: int, data: bytes = b"", ino: int = 0,
                rdev: tuple[int, int] = (0, 0)) -> bytes:
    namez = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(namez), 0]
    header = b"070701" + b"".join(f"{v:08X}".encode() for v in fields)
    out = header + namez
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


def pack_initramfs(files: dict[str, bytes]) -> bytes:
    """A newc cpio with the directories init expects, /dev/console, and `files`
    (path -> content, all executable). Timestamps and owners are zero."""
    blob = b""
    ino = 1
    dirs = {"dev", "proc", "sys", "bin", "tmp", "sys/kernel/debug"}
    for path in files:
        parent = Path(path).parent
        while str(parent) not in (".", ""):
            dirs.add(str(parent))
            parent = parent.parent
    for d in sorted(dirs, key=lambda p: (p.count("/"), p)):
        blob += _cpio_entry(d, 0o040755, ino=ino)
        ino += 1
    # The kernel opens /dev/console for init before devtmpfs is mounted.
    blob += _cpio_entry("dev/console", 0o020600, ino=ino, rdev=(5, 1))
    ino += 1
    for path in sorted(files):
        blob += _cpio_entry(path, 0o100755, files[path], ino=ino)
        ino += 1
    blob += _cpio_entry("TRAILER!!!", 0)
    return blob + b"\0" * (-len(blob) % 512)


def pack_tree(root: Path) -> bytes:
    """A newc cpio of the tree under `root` (directories, files with their mode,
    symlinks), to append to the guest image: sorted, timestamps and owners zero."""
    blob = b""
    ino = 1
    for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).parts):
        name = str(path.relative_to(root))
        if path.is_symlink():
            blob += _cpio_entry(name, 0o120777, os.readlink(path).encode(), ino=ino)
        elif path.is_dir():
            blob += _cpio_entry(name, 0o040755, ino=ino)
        else:
            mode = 0o100755 if path.stat().st_mode & 0o111 else 0o100644
            blob += _cpio_entry(name, mode, path.read_bytes(), ino=ino)
        ino += 1
    blob += _cpio_entry("TRAILER!!!", 0)
    return blob + b"\0" * (-len(blob) % 512)
