"""The root filesystem of `--via host-run`: an arm64 Python and this package, for the
nested host to run `s2fault host-run` as a real arm64 host would.

Debian's arm64 packages are fetched by a private apt (its own lists, cache and empty
dpkg status under the cache; the host's sources, proxies and keys), extracted with
`dpkg-deb -x` and never configured, so nothing arm64 runs on this machine. The result
is an initramfs archive appended to the guest image: the cached kernels have no
virtio or 9p, and an initramfs needs nothing the kernel lacks. Pruned of what Python
does not need here (gconv, docs, the test suite), byte-compiled with this machine's
Python 3.11 (same version, same bytecode) so the nested host does not compile the
standard library under TCG at every start. Cached by content: the key is the recipe
and each package's name, version and sha256 from the index.
"""

from __future__ import annotations

import compileall
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from s2fault import cache, guest, hosttools, progress, project, source
from s2fault.errors import InfraError
from s2fault.machine import profiles

RECIPE = "s2fault-rootfs-1"
# python3.11-minimal's closure (apt-cache depends --recurse), plus the rest of the
# standard library (json, gzip, statistics, dataclasses are not in -minimal).
PACKAGES = ("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6",
            "libgcc-s1", "gcc-12-base", "zlib1g", "libexpat1", "libssl3")
PRUNE = ("usr/share", "usr/lib/aarch64-linux-gnu/gconv", "usr/lib/python3.11/test",
         "usr/lib/python3.11/idlelib", "usr/lib/python3.11/ensurepip",
         "usr/lib/python3.11/lib2to3", "usr/lib/python3.11/tkinter",
         "usr/lib/python3.11/pydoc_data", "usr/lib/python3.11/turtledemo",
         "usr/lib/python3.11/config-3.11-aarch64-linux-gnu", "usr/lib/python3.11/unittest",
         "usr/lib/python3.11/distutils", "usr/lib/python3.11/venv")
SITE = "usr/lib/python3/dist-packages"


def _apt(root: Path) -> list[str]:
    """apt options for a private arm64 apt under `root`: it never touches the host's
    dpkg database, lists or archive cache."""
    return ["-o", "APT::Architecture=arm64", "-o", "APT::Architectures::=arm64",
            "-o", f"Dir::State::Lists={root / 'lists'}",
            "-o", f"Dir::State::status={root / 'status'}",
            "-o", f"Dir::Cache={root / 'cache'}", "-o", "Debug::NoLocking=1",
            "-o", "APT::Sandbox::User=root", "-q"]


def _index(root: Path) -> list[tuple[str, str, str]]:
    """(package, version, sha256) of each of PACKAGES in the private index, updating
    the index first if it was never fetched."""
    for d in ("lists/partial", "cache/archives/partial"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "status").touch()
    if not any((root / "lists").glob("*Packages*")):
        if source.offline():
            raise InfraError(f"offline: no arm64 package index cached in {root / 'lists'}")
        _run([hosttools.require("apt-get"), *_apt(root), "update"], "apt-get update (arm64)")
    out = _run([hosttools.require("apt-cache"), *_apt(root), "show", "--no-all-versions",
                *PACKAGES], "apt-cache show (arm64)")
    found: list[tuple[str, str, str]] = []
    fields: dict[str, str] = {}
    for line in [*out.splitlines(), ""]:
        if not line.strip():
            if fields.get("Package"):
                found.append((fields["Package"], fields.get("Version", ""),
                              fields.get("SHA256", "")))
            fields = {}
        elif ":" in line and not line.startswith(" "):
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    missing = set(PACKAGES) - {p for p, _, _ in found}
    if missing:
        raise InfraError(f"arm64 packages not in the index: {', '.join(sorted(missing))}")
    return sorted(found)


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    if r.returncode != 0:
        err = (r.stderr or r.stdout).strip().splitlines()
        raise InfraError(f"{what} failed: {err[-1] if err else f'exit {r.returncode}'}")
    return r.stdout


def python_archive(cache_root: Path | None = None) -> Path:
    """The cached initramfs archive of Debian's arm64 Python (built on first use)."""
    cache_root = cache_root or project.cache_dir()
    hosttools.preflight(*hosttools.ROOTFS)
    apt_root = cache_root / "rootfs-apt"
    with cache.locked(cache_root / "locks" / "rootfs-apt.lock"):
        index = _index(apt_root)
    key = cache.key_of(RECIPE, sys.version, *(f"{p} {v} {s}" for p, v, s in index),
                       *PRUNE)
    entry = cache.Entry("rootfs", key, cache_root)
    if entry.verify():
        return entry.dir / "python.cpio"
    with cache.locked(entry.lock_path):
        if entry.verify():
            return entry.dir / "python.cpio"
        progress.stage("rootfs", "arm64 python from Debian")
        with entry.staging() as staged:
            debs = staged / "debs"
            debs.mkdir()
            if source.offline():
                raise InfraError(f"offline: the arm64 Python root filesystem is not cached "
                                 f"({entry.dir})")
            _run([hosttools.require("apt-get"), *_apt(apt_root), "download", *PACKAGES],
                 "apt-get download (arm64)", cwd=debs)
            tree = staged / "root"
            for deb in sorted(debs.glob("*.deb")):
                _run([hosttools.require("dpkg-deb"), "-x", str(deb), str(tree)],
                     f"dpkg-deb -x {deb.name}")
            for rel in PRUNE:
                shutil.rmtree(tree / rel, ignore_errors=True)
            (tree / "usr/bin/python3").symlink_to("python3.11")
            _byte_compile(tree / "usr/lib/python3.11", "/usr/lib/python3.11")
            (staged / "python.cpio").write_bytes(guest.pack_tree(tree))
            shutil.rmtree(debs)
            shutil.rmtree(tree)
            entry.publish(staged, {"packages": [list(x) for x in index]})
    return entry.dir / "python.cpio"


def _byte_compile(folder: Path, as_path: str) -> None:
    """Bytecode the nested host's Python can use as it is: same version, and
    unchecked-hash pycs (the archive's timestamps are zero)."""
    if sys.version_info[:2] != (3, 11):
        return  # another version's bytecode would be ignored: the guest compiles
    compileall.compile_dir(str(folder), ddir=as_path, quiet=2, workers=1,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)


def package_archive(dest: Path, vmm: Path) -> Path:
    """This package as installed in the nested host's root: its Python modules, and as
    package data the static VMM (s2fault/bin/s2fault-vmm) and the modes' profiles
    (s2fault/profiles/), as a wheel ships them."""
    package = project.PACKAGE
    with tempfile.TemporaryDirectory(prefix="s2fault-pkg-") as tmp:
        tree = Path(tmp)
        target = tree / SITE / "s2fault"
        shutil.copytree(package, target,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "bin"))
        # The modes' profiles, as setup.py puts them in a wheel: no checkout there.
        shutil.copytree(profiles.profiles_dir(), target / "profiles",
                        ignore=shutil.ignore_patterns("*~", ".*"))
        (target / "bin").mkdir()
        shutil.copyfile(vmm, target / "bin" / hostrun_vmm_name())
        os.chmod(target / "bin" / hostrun_vmm_name(), 0o755)
        _byte_compile(tree / SITE, "/" + SITE)
        dest.write_bytes(guest.pack_tree(tree))
    return dest


def hostrun_vmm_name() -> str:
    from s2fault.machine import hostrun

    return hostrun.VMM
