"""The source stage: turn a source spec into an unpacked kernel tree and an identity.

Specs:
  debian (default)      Debian's linux-source-6.12 tarball under /usr/src
  PATH.tar.{xz,gz,bz2}  a local tarball
  URL#sha256=HEX        a tarball downloaded over HTTP(S), verified by sha256
  PATH                  a kernel tree or git checkout, used as it is
  PATH@REF              a ref of a local git repository, exported with git archive

The identity is what the kernel cache key is made of: a tarball's sha256, a
commit id (plus a hash of uncommitted changes), never a path or a timestamp.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import cache, hosttools
from .errors import InfraError, InputError

DEBIAN_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
DEBIAN_PACKAGE = "linux-source-6.12"
DOWNLOAD_TIMEOUT = 60


@dataclass(frozen=True)
class Source:
    spec: str
    identity: str
    tree: Path
    description: str


def resolve(spec: str | None, cache_root: Path) -> Source:
    """Return an unpacked tree for `spec`, unpacking or downloading it once into the cache."""
    spec = spec or "debian"
    if spec == "debian":
        if not DEBIAN_TARBALL.is_file():
            raise InfraError(
                f"default kernel source {DEBIAN_TARBALL} missing "
                f"(Debian package: {DEBIAN_PACKAGE})"
            )
        return _from_tarball(spec, DEBIAN_TARBALL, cache_root)
    if spec.startswith(("http://", "https://")):
        url, _, frag = spec.partition("#")
        if not frag.startswith("sha256="):
            raise InputError(f"source URL needs '#sha256=<hex>' to be verified: {spec}")
        tarball = fetch(url, frag.removeprefix("sha256="), cache_root)
        return _from_tarball(spec, tarball, cache_root)
    if "@" in spec and not Path(spec).exists():
        repo, _, ref = spec.rpartition("@")
        return _from_git_ref(spec, Path(repo), ref, cache_root)
    path = Path(spec)
    if not path.exists():
        raise InputError(f"kernel source '{spec}' does not exist")
    if path.is_file():
        if not any(spec.endswith(s) for s in (".tar.xz", ".tar.gz", ".tgz", ".tar.bz2", ".tar")):
            raise InputError(f"kernel source '{spec}' is a file but not a tarball")
        return _from_tarball(spec, path, cache_root)
    if not (path / "Makefile").is_file() or not (path / "arch" / "arm64").is_dir():
        raise InputError(f"'{spec}' is not a kernel tree (no Makefile or arch/arm64)")
    return Source(spec, _tree_identity(path), path.resolve(), f"tree {path}")


def _tarball_sha256(tarball: Path, cache_root: Path) -> str:
    """sha256 of a tarball, memoised by (path, size, mtime): hashing 150 MB each run is waste."""
    st = tarball.stat()
    memo = cache_root / "sources" / "sha256-memo.json"
    stamp = f"{tarball.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    try:
        memos = json.loads(memo.read_text())
    except (OSError, ValueError):
        memos = {}
    if stamp in memos:
        return memos[stamp]
    digest = cache.sha256_file(tarball)
    memos[stamp] = digest
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(memos))
    os.replace(tmp, memo)
    return digest


def _from_tarball(spec: str, tarball: Path, cache_root: Path) -> Source:
    digest = _tarball_sha256(tarball, cache_root)
    entry = cache.Entry("sources", digest[:24], cache_root)
    with cache.locked(entry.lock_path):
        tree = _unpacked_tree(entry)
        if tree is None:
            with entry.staging() as staged:
                unpack(tarball, staged / "tree")
                # The manifest checksums files; a kernel tree has 80k of them, so the
                # entry records only a stamp file and relies on the atomic rename.
                (staged / "SOURCE").write_text(f"{tarball}\nsha256 {digest}\n")
                entry.publish(
                    staged, {"tarball": str(tarball), "sha256": digest}, checksum=["SOURCE"]
                )
            tree = _unpacked_tree(entry)
    assert tree is not None
    return Source(spec, f"tarball:sha256:{digest}", tree, f"{tarball.name} ({digest[:12]})")


def _unpacked_tree(entry: cache.Entry) -> Path | None:
    if not entry.verify():
        return None
    tops = [p for p in (entry.dir / "tree").iterdir() if p.is_dir()]
    if len(tops) == 1 and (tops[0] / "Makefile").is_file():
        return tops[0]
    if (entry.dir / "tree" / "Makefile").is_file():
        return entry.dir / "tree"
    return None


def unpack(tarball: Path, dest: Path) -> None:
    """Extract safely: members that escape `dest` (absolute paths, '..', links out) are refused."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tarball) as tar:
            tar.extractall(dest, filter=_strict_filter)
    except tarfile.FilterError as e:
        raise InputError(f"tarball {tarball} has an unsafe member: {e}") from e
    except (tarfile.TarError, EOFError) as e:
        raise InputError(f"tarball {tarball} cannot be read: {e}") from e
    except OSError as e:
        raise InfraError(f"unpacking {tarball} failed: {e.strerror} ({e.filename})") from e


def _strict_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's "data" filter, except that absolute names are refused, not re-rooted:
    a kernel tarball never has them, so one is a sign of a hostile or broken archive."""
    if member.name.startswith("/"):
        raise tarfile.AbsolutePathError(member)
    return tarfile.data_filter(member, dest)


def fetch(url: str, sha256: str, cache_root: Path) -> Path:
    """Download `url` once into the cache, verified by sha256, with a timeout."""
    import requests

    sha256 = sha256.lower()
    name = url.rstrip("/").rsplit("/", 1)[-1] or "source.tar"
    entry = cache.Entry("downloads", sha256[:24], cache_root)
    with cache.locked(entry.lock_path):
        if entry.verify() and (entry.dir / name).is_file():
            return entry.dir / name
        with entry.staging() as staged:
            digest = hashlib.sha256()
            try:
                with requests.get(url, stream=True, timeout=DOWNLOAD_TIMEOUT) as r:
                    r.raise_for_status()
                    with open(staged / name, "wb") as f:
                        for chunk in r.iter_content(1 << 20):
                            digest.update(chunk)
                            f.write(chunk)
            except requests.RequestException as e:
                raise InfraError(f"download of {url} failed: {e}") from e
            if digest.hexdigest() != sha256:
                raise InputError(
                    f"download of {url}: sha256 {digest.hexdigest()} does not match {sha256}"
                )
            entry.publish(staged, {"url": url})
    return entry.dir / name


def _git(repo: Path, *args: str) -> str:
    hosttools.require("git")
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
        )
    except subprocess.CalledProcessError as e:
        msg = (e.stderr or "").strip().splitlines()
        raise InputError(f"git {' '.join(args)} in {repo}: {msg[-1] if msg else e}") from e
    return out.stdout.strip()


def _from_git_ref(spec: str, repo: Path, ref: str, cache_root: Path) -> Source:
    if not repo.is_dir():
        raise InputError(f"git repository '{repo}' does not exist")
    commit = _git(repo, "rev-parse", "--verify", f"{ref}^{{commit}}")
    entry = cache.Entry("sources", f"git-{commit[:24]}", cache_root)
    with cache.locked(entry.lock_path):
        tree = _unpacked_tree(entry)
        if tree is None:
            with entry.staging() as staged:
                (staged / "tree").mkdir()
                with tempfile.TemporaryFile() as tar:
                    subprocess.run(
                        ["git", "-C", str(repo), "archive", "--format=tar", commit],
                        stdout=tar, check=True,
                    )
                    tar.seek(0)
                    with tarfile.open(fileobj=tar) as t:
                        t.extractall(staged / "tree", filter=_strict_filter)
                (staged / "SOURCE").write_text(f"{repo} {commit}\n")
                entry.publish(staged, {"repo": str(repo), "commit": commit}, checksum=["SOURCE"])
            tree = _unpacked_tree(entry)
    assert tree is not None
    return Source(spec, f"git:{commit}", tree, f"{repo}@{ref} ({commit[:12]})")


def _tree_identity(path: Path) -> str:
    """A git checkout is its commit plus a hash of uncommitted changes; a plain tree is
    a hash of its file list with sizes and mtimes (cheap, and changes when files do)."""
    if (path / ".git").exists():
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


def link_tree(src: Path, dst: Path) -> None:
    """A writable copy of `src` that costs little: hard links (patch(1) replaces files
    instead of writing through links, so the original stays pristine); a real copy
    when the cache is on another filesystem."""
    dst.mkdir(parents=True, exist_ok=True)
    entries = [str(p) for p in src.iterdir() if p.name != ".git"]
    if not entries:
        raise InputError(f"kernel source tree {src} is empty")
    cmd = ["cp", "-al", *entries, str(dst)]
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir(parents=True)
        r = subprocess.run(["cp", "-a", *entries, str(dst)], capture_output=True, text=True)
        if r.returncode != 0:
            raise InfraError(f"copying kernel tree {src}: {r.stderr.strip()}")
