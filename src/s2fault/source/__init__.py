"""The source stage: turn a source spec into an unpacked kernel tree and an identity.

Specs (the CLI's --source, with --ref for git):
  debian (default)      Debian's linux-source-6.12 tarball under /usr/src
  PATH.tar.{xz,gz,bz2}  a local tarball
  URL#sha256=HEX        a tarball downloaded over HTTP(S), verified by sha256
  PATH                  a kernel tree or git checkout, used as it is
  REPO@REF              a commit of a git repository (a path or a URL): fetched
                        shallowly into a shared bare store, checked out once per commit

The identity is what the kernel cache key is made of: a tarball's sha256, a
commit id (plus a hash of uncommitted changes), never a path or a timestamp.

The fetchers live beside this module: source/archive.py (tarballs, local or
downloaded) and source/git.py (REPO@REF through a shared bare store); this one
reads the spec, names the result (Source) and keeps trees in place (link_tree).

S2FAULT_OFFLINE=1 (the CLI's --offline) refuses every network access: what is
not in the cache yet is an error that names the URL and where it would have gone.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from s2fault.errors import InfraError, InputError

DEBIAN_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
DEBIAN_PACKAGE = "linux-source-6.12"
OFFLINE_ENV = "S2FAULT_OFFLINE"
TARBALL_SUFFIXES = (".tar.xz", ".tar.gz", ".tgz", ".tar.bz2", ".tar")


@dataclass(frozen=True)
class Source:
    """A resolved spec: what one command builds, for every variant and cell it has.

    A command resolves its spec once (resolve()) and hands this object down; nothing
    below resolves the string again. A `REPO@branch` is then pinned to the commit it
    named at that moment: `tree` is that commit's checkout in the cache and `identity`
    names it, however the branch moves while the command runs. `live` marks a tree
    used where it is (a path), whose files can still change: see check_unchanged()."""

    spec: str
    identity: str
    tree: Path
    description: str
    live: bool = False

    @property
    def commit(self) -> str | None:
        """The commit id a git source (a REPO@REF or a git checkout) was pinned to."""
        kind, _, rest = self.identity.partition(":")
        return rest.split(":")[0] if kind == "git" else None


def pin(src: Source | str | None, cache_root: Path) -> Source:
    """`src` itself when it is resolved already, else resolve(src): the library's entry
    points take either, so that a command's one Source passes through them untouched."""
    return src if isinstance(src, Source) else resolve(src, cache_root)


def check_unchanged(src: Source) -> None:
    """Refuse a tree used in place whose files changed since it was resolved: its builds
    would be cached under the identity of other files, and the variants of one command
    would compare different kernels. Cached trees (tarballs, commits) cannot change."""
    if not src.live:
        return
    now = _tree_identity(src.tree)
    if now != src.identity:
        raise InputError(
            f"kernel tree {src.spec} changed while this command ran ({src.identity[:24]}... "
            f"when it started, now {now[:24]}...); its variants would not be built from "
            "the same source: run it again"
        )


def offline() -> bool:
    """True when S2FAULT_OFFLINE (or --offline) forbids network access."""
    return os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0")


def with_ref(spec: str | None, ref: str | None) -> str | None:
    """The spec for `--source SPEC --ref REF`: `REPO@REF`, the one form resolve() reads."""
    if not ref:
        return spec
    if not spec or spec == "debian":
        raise InputError(f"--ref {ref} needs a git repository as --source (a path or a URL)")
    if "#sha256=" in spec or spec.endswith(TARBALL_SUFFIXES):
        raise InputError(f"--ref {ref} does not apply to a tarball source ({spec})")
    if _split_ref(spec) is not None and not Path(spec).exists():
        raise InputError(f"--source {spec} already names a ref; drop --ref {ref} or the @REF")
    return f"{spec}@{ref}"


def _split_ref(spec: str) -> tuple[str, str] | None:
    """(repository, ref) of `REPO@REF`. A ref never holds ':', which keeps the user
    part of `git@host:path` from being read as a ref."""
    repo, at, ref = spec.rpartition("@")
    if not at or not repo or not ref or ":" in ref:
        return None
    return repo, ref


def _is_url(spec: str) -> bool:
    return "://" in spec or re.match(r"^[\w.-]+@[\w.-]+:", spec) is not None


def resolve(spec: str | None, cache_root: Path) -> Source:
    """Return an unpacked tree for `spec`, unpacking or downloading it once into the cache."""
    # Here, not at the top: the fetchers build the Source this module defines.
    from s2fault.source.archive import _from_tarball, _from_url
    from s2fault.source.git import _from_git, _git_dir_of

    spec = spec or "debian"
    if spec == "debian":
        if not DEBIAN_TARBALL.is_file():
            raise InfraError(
                f"default kernel source {DEBIAN_TARBALL} missing "
                f"(Debian package: {DEBIAN_PACKAGE})"
            )
        return _from_tarball(spec, DEBIAN_TARBALL, cache_root)
    if spec.startswith(("http://", "https://")) and "#" in spec:
        url, _, frag = spec.partition("#")
        if not frag.startswith("sha256="):
            raise InputError(f"source URL needs '#sha256=<hex>' to be verified: {spec}")
        return _from_url(spec, url, frag.removeprefix("sha256="), cache_root)
    split = None if Path(spec).exists() else _split_ref(spec)
    if split is not None:
        return _from_git(spec, split[0], split[1], cache_root)
    if _is_url(spec):
        raise InputError(
            f"source URL {spec} needs '#sha256=<hex>' (a tarball) or --ref (a git repository)"
        )
    path = Path(spec)
    if not path.exists():
        raise InputError(f"kernel source '{spec}' does not exist")
    if path.is_file():
        if not spec.endswith(TARBALL_SUFFIXES):
            raise InputError(f"kernel source '{spec}' is a file but not a tarball")
        return _from_tarball(spec, path, cache_root)
    if not (path / "Makefile").is_file() or not (path / "arch" / "arm64").is_dir():
        if _git_dir_of(path) is not None:
            raise InputError(f"git repository '{spec}' has no work tree: give a --ref")
        raise InputError(f"'{spec}' is not a kernel tree (no Makefile or arch/arm64)")
    return Source(spec, _tree_identity(path), path.resolve(), f"tree {path}", live=True)


def _tree_identity(path: Path) -> str:
    """A git checkout is its commit plus a hash of uncommitted changes; a plain tree is
    a hash of its file list with sizes and mtimes (cheap, and changes when files do)."""
    if (path / ".git").exists():
        from s2fault.source.git import _git

        commit = _git(path, "rev-parse", "HEAD")
        diff = subprocess.run(
            ["git", "-C", str(path), "diff", "HEAD", "--binary"],
            capture_output=True, check=False,
        ).stdout
        dirty = hashlib.sha256(diff).hexdigest()[:16] if diff else "clean"
        return f"git:{commit}:{dirty}"
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            digest.update(f"{os.path.relpath(p, path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return f"tree:{digest.hexdigest()}"


def link_tree(src: Path, dst: Path, exclude: tuple[str, ...] = ()) -> None:
    """A writable copy of `src` that costs little: hard links (patch(1) replaces files
    instead of writing through links, so the original stays pristine); a real copy
    when the cache is on another filesystem. `.git` and the top-level names in
    `exclude` are left out."""
    dst.mkdir(parents=True, exist_ok=True)
    entries = [str(p) for p in src.iterdir() if p.name not in (".git", *exclude)]
    if not entries:
        raise InputError(f"kernel source tree {src} is empty")
    cmd = ["cp", "-al", *entries, str(dst)]
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir(parents=True)
        r = subprocess.run(["cp", "-a", *entries, str(dst)], capture_output=True, text=True)
        if r.returncode != 0:
            raise InfraError(f"copying kernel tree {src}: {r.stderr.strip()}")
