"""A kernel developer's own build directory (`run --build-dir DIR`, kbuild's O=): the
Image it made, its .config, and vmlinux when it is there.

The .config is checked before anything boots: a kernel without KVM, the PL011 console
or lockdep cannot be judged, and the options it lacks are named, all of them at once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from s2fault.errors import InputError
from s2fault.kernel import image, kconfig

IMAGES = ("arch/arm64/boot/Image", "arch/arm64/boot/Image.gz")


@dataclass(frozen=True)
class BuildDir:
    path: Path
    kernel: image.KernelImage  # with .vmlinux when the directory has one
    config: Path


def open_build_dir(path: Path) -> BuildDir:
    """Resolve DIR to its Image, .config and vmlinux; InputError naming what is missing."""
    if not path.is_dir():
        raise InputError(f"--build-dir {path}: not a directory")
    found = [path / name for name in IMAGES if (path / name).is_file()]
    if not found:
        raise InputError(f"--build-dir {path}: no {' or '.join(IMAGES)} (run make Image first)")
    config = path / ".config"
    if not config.is_file():
        raise InputError(f"--build-dir {path}: no .config")
    missing = kconfig.missing_required(config.read_text(errors="replace"))
    if missing:
        raise InputError(f"--build-dir {path}: .config lacks options the lab needs: "
                         f"{', '.join(missing)} (see kernel_configs/"
                         f"{{{','.join(kconfig.REQUIRED_FRAGMENTS)}}}.config)")
    vmlinux = path / "vmlinux"
    kernel = dataclasses.replace(image.inspect(found[0]),
                                 vmlinux=vmlinux if vmlinux.is_file() else None)
    return BuildDir(path, kernel, config)
