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

S2FAULT_OFFLINE=1 (the CLI's --offline) refuses every network access: what is
not in the cache yet is an error that names the URL and where it would have gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from . import cache, hosttools, progress
from .errors import InfraError, InputError

if TYPE_CHECKING:
    import requests

DEBIAN_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
DEBIAN_PACKAGE = "linux-source-6.12"
OFFLINE_ENV = "S2FAULT_OFFLINE"
TARBALL_SUFFIXES = (".tar.xz", ".tar.gz", ".tgz", ".tar.bz2", ".tar")

# Downloads: seconds to connect, seconds without a byte before giving up on a read.
CONNECT_TIMEOUT = 15
DOWNLOAD_TIMEOUT = 60
DOWNLOAD_ATTEMPTS = 4
RETRY_BACKOFF = 0.5  # seconds before the second attempt, doubled after each failure
# What a dropped connection can lose: requests hands out whole chunks only.
CHUNK = 64 * 1024

# Protocol v2 lets a client fetch any commit by id; v0 servers only hand out what
# they advertise (the fallback then fetches every branch and tag, not shallow).
GIT_PROTOCOL = "2"
_FULL_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


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


# --- tarballs ------------------------------------------------------------------------------


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
        digest: str = memos[stamp]
        return digest
    digest = cache.sha256_file(tarball)
    memos[stamp] = digest
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(memos))
    os.replace(tmp, memo)
    return digest


def _from_tarball(spec: str, tarball: Path, cache_root: Path, digest: str | None = None
                  ) -> Source:
    digest = digest or _tarball_sha256(tarball, cache_root)
    entry = cache.Entry("sources", digest[:24], cache_root)
    with cache.locked(entry.lock_path):
        tree = _unpacked_tree(entry)
        if tree is None:
            with entry.staging() as staged:
                progress.stage("source", f"unpack {tarball.name}")
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


def _from_url(spec: str, url: str, sha256: str, cache_root: Path) -> Source:
    sha256 = sha256.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise InputError(f"'{sha256}' in {spec} is not a sha256 (64 hex digits)")
    # Unpacked before: neither the download nor the network is needed again.
    tree = _unpacked_tree(cache.Entry("sources", sha256[:24], cache_root))
    if tree is not None:
        return Source(spec, f"tarball:sha256:{sha256}", tree, f"{url} ({sha256[:12]})")
    tarball = fetch(url, sha256, cache_root)
    src = _from_tarball(spec, tarball, cache_root, digest=sha256)
    return Source(spec, src.identity, src.tree, f"{url} ({sha256[:12]})")


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
    """Extract safely: members that escape `dest` (absolute paths, '..', links out) are refused.

    xz runs in its own process (threaded where the archive allows it) and feeds the tar
    stream, so decompression and file creation overlap instead of taking turns."""
    dest.mkdir(parents=True, exist_ok=True)
    xz = tarball.name.endswith(".xz") and shutil.which("xz")
    try:
        if xz:
            with subprocess.Popen([xz, "-dc", "-T0", str(tarball)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) as proc:
                assert proc.stdout is not None
                try:
                    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                        _extract_all(tar, dest)
                finally:
                    proc.stdout.close()
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    proc.wait()
                if proc.returncode != 0:
                    raise tarfile.ReadError(f"xz: {err.strip() or f'exit {proc.returncode}'}")
        else:
            with tarfile.open(tarball) as tar:
                _extract_all(tar, dest)
    except _UnsafeMember as e:
        raise InputError(f"tarball {tarball} has an unsafe member: {e}") from e
    except (tarfile.TarError, EOFError) as e:
        if HAVE_TAR_FILTERS and isinstance(e, tarfile.FilterError):
            raise InputError(f"tarball {tarball} has an unsafe member: {e}") from e
        raise InputError(f"tarball {tarball} cannot be read: {e}") from e
    except OSError as e:
        raise InfraError(f"unpacking {tarball} failed: {e.strerror} ({e.filename})") from e


# tarfile's extraction filters arrived in 3.11.4 (and in 3.8-3.10 security releases);
# Debian 12 ships 3.11.2. Where they exist they are used; elsewhere _checked_members
# applies the same rules.
HAVE_TAR_FILTERS = hasattr(tarfile, "data_filter")


class _UnsafeMember(Exception):
    """A member the "data" filter's rules refuse, found by the check for older Pythons."""


def _extract_all(tar: tarfile.TarFile, dest: Path) -> None:
    if HAVE_TAR_FILTERS:
        tar.extractall(dest, filter=_strict_filter)
    else:
        tar.extractall(dest, members=_checked_members(tar, dest))


def _strict_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's "data" filter, except that absolute names are refused, not re-rooted:
    a kernel tarball never has them, so one is a sign of a hostile or broken archive."""
    if member.name.startswith("/"):
        raise tarfile.AbsolutePathError(member)
    return tarfile.data_filter(member, dest)


def _checked_members(tar: tarfile.TarFile, dest: Path) -> Iterator[tarfile.TarInfo]:
    """The rules of tarfile's "data" filter, for Pythons without it: no absolute names,
    nothing outside `dest` (names and link targets), no device files or FIFOs; modes
    lose set-id bits and group/other write; files belong to whoever unpacks them."""
    root = os.path.realpath(dest)

    def inside(path: str) -> bool:
        return os.path.commonpath([root, os.path.realpath(path)]) == root

    for member in tar:
        name = member.name
        if name.startswith("/") or os.path.isabs(name):
            raise _UnsafeMember(f"{name!r} is an absolute path")
        target = os.path.join(root, name)
        if not inside(target):
            raise _UnsafeMember(f"{name!r} would be extracted outside the destination")
        if member.ischr() or member.isblk() or member.isfifo() or not (
            member.isfile() or member.isdir() or member.issym() or member.islnk()
        ):
            raise _UnsafeMember(f"{name!r} is a special file")
        if member.issym():
            if os.path.isabs(member.linkname):
                raise _UnsafeMember(f"{name!r} links to the absolute path {member.linkname!r}")
            if not inside(os.path.join(os.path.dirname(target), member.linkname)):
                raise _UnsafeMember(f"{name!r} links outside the destination")
        elif member.islnk():
            if os.path.isabs(member.linkname) or not inside(os.path.join(root, member.linkname)):
                raise _UnsafeMember(f"{name!r} hard-links outside the destination")
        mode = member.mode
        if member.isfile() or member.islnk():
            mode &= 0o755
            mode |= 0o600
        elif member.isdir():
            mode = (mode & 0o755) | 0o700
        member.mode = mode
        member.uid, member.gid = os.getuid(), os.getgid()
        member.uname = member.gname = ""
        yield member


# --- downloads -----------------------------------------------------------------------------


class _Retry(Exception):
    """One attempt failed in a way another attempt may fix (network, 5xx)."""


def fetch(url: str, sha256: str, cache_root: Path) -> Path:
    """Download `url` once into the cache and return the file, verified by sha256.

    Bytes go to `downloads/<key>.part` first; an interrupted download (a dropped
    connection, a killed run) continues from there with an HTTP Range request. The
    file is hashed before it is published (atomic rename) and before anyone unpacks it.
    """
    sha256 = sha256.lower()
    name = url.rstrip("/").rsplit("/", 1)[-1] or "source.tar"
    entry = cache.Entry("downloads", sha256[:24], cache_root)
    with cache.locked(entry.lock_path):
        if entry.verify() and (entry.dir / name).is_file():
            return entry.dir / name
        if offline():
            raise InfraError(
                f"offline ({OFFLINE_ENV}): {url} is not in the cache; it would be kept at "
                f"{entry.dir / name}"
            )
        part = entry.dir.with_name(f"{entry.key}.part")
        part.parent.mkdir(parents=True, exist_ok=True)
        _download(url, part)
        digest = cache.sha256_file(part)
        if digest != sha256:
            part.unlink()  # a wrong file is not worth resuming
            raise InputError(f"download of {url}: sha256 {digest} does not match {sha256}")
        with entry.staging() as staged:
            os.replace(part, staged / name)
            entry.publish(staged, {"url": url, "sha256": sha256})
    return entry.dir / name


def _download(url: str, part: Path) -> None:
    """Fill `part` with the whole of `url`, resuming and retrying with backoff."""
    import requests

    session = requests.Session()
    why = ""
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        if attempt > 1:
            time.sleep(RETRY_BACKOFF * 2 ** (attempt - 2))
        try:
            _attempt(session, url, part)
            return
        except _Retry as e:
            why = str(e)
        except requests.Timeout as e:
            if isinstance(e, requests.ConnectTimeout):
                why = f"connect timed out (limit {CONNECT_TIMEOUT} s)"
            else:
                why = f"read timed out (no byte for {DOWNLOAD_TIMEOUT} s)"
        except requests.RequestException as e:
            why = _short(e)
        except OSError as e:
            raise InfraError(f"download of {url}: cannot write {part}: {e.strerror}") from e
        if attempt < DOWNLOAD_ATTEMPTS:
            progress.stage("source", f"download of {url}: {why}; retrying")
    raise InfraError(f"download of {url} failed after {DOWNLOAD_ATTEMPTS} attempts: {why}")


def _attempt(session: requests.Session, url: str, part: Path) -> None:
    have = part.stat().st_size if part.exists() else 0
    # The sha256 is of the file as served: no transfer compression for requests to undo.
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    timeout = (CONNECT_TIMEOUT, DOWNLOAD_TIMEOUT)
    with session.get(url, stream=True, timeout=timeout, headers=headers) as r:
        if r.status_code == 416 and have:
            if r.headers.get("Content-Range") == f"bytes */{have}":
                return  # a run killed after the last byte: the file is whole
            part.unlink()  # longer than the file: start again
            raise _Retry("server refused the resume range; starting again")
        if r.status_code >= 500 or r.status_code in (408, 429):
            raise _Retry(f"HTTP {r.status_code} {r.reason}")
        if r.status_code >= 400:
            raise InputError(f"download of {url} failed: HTTP {r.status_code} {r.reason}")
        mode, offset = "wb", 0  # a 200 is the whole file again: the server ignored Range
        if r.status_code == 206:
            if _range_start(r.headers) != have:
                part.unlink(missing_ok=True)
                raise _Retry("server answered another range than asked; starting again")
            mode, offset = "ab", have
        total = _total_size(r.headers, offset)
        with open(part, mode) as f:
            _copy(r, f, offset, total, url)
        got = part.stat().st_size
        if total is not None and got < total:
            raise _Retry(f"connection closed after {got} of {total} bytes")


def _range_start(headers: Mapping[str, str]) -> int | None:
    """The first byte of a 206 answer (Content-Range: bytes START-END/TOTAL)."""
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", headers.get("Content-Range", ""))
    return int(m[1]) if m else None


def _total_size(headers: Mapping[str, str], offset: int) -> int | None:
    m = re.match(r"bytes \d+-\d+/(\d+)", headers.get("Content-Range", ""))
    if m:
        return int(m[1])
    length = headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _copy(r: requests.Response, f: IO[bytes], offset: int, total: int | None,
          url: str) -> None:
    name = url.rsplit("/", 1)[-1]
    tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
    every = 1.0 if tty else 10.0  # CI logs get a line now and then, not a ticker
    start = last = time.monotonic()
    done = offset
    for chunk in r.iter_content(CHUNK):
        f.write(chunk)
        done += len(chunk)
        now = time.monotonic()
        if now - last >= every:
            last = now
            rate = (done - offset) / (now - start) / 1e6
            of = f"/{total / 1e6:.1f}" if total else ""
            progress.stage("source", f"download {name}: {done / 1e6:.1f}{of} MB, {rate:.1f} MB/s")


def _short(e: Exception) -> str:
    """requests wraps urllib3 wraps socket errors; the innermost one says what happened."""
    inner: BaseException = e
    for _ in range(5):
        nested = getattr(inner, "reason", None)
        if not isinstance(nested, BaseException) and inner.args:
            nested = inner.args[0]
        if not isinstance(nested, BaseException):
            break
        inner = nested
    # urllib3 keeps (message, cause) in args; its connection errors start with the object.
    text = inner.args[0] if inner.args and isinstance(inner.args[0], str) else str(inner)
    text = re.sub(r"^<[^>]*>: ", "", text)
    return text[:200]


# --- git ---------------------------------------------------------------------------------


def _git(repo: Path, *args: str, what: type = InputError) -> str:
    hosttools.require("git")
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
            env=os.environ | {"GIT_TERMINAL_PROMPT": "0"},
        )
    except subprocess.CalledProcessError as e:
        msg = (e.stderr or "").strip().splitlines()
        raise what(f"git {' '.join(args)} in {repo}: {msg[-1] if msg else e}") from e
    return out.stdout.strip()


def _git_dir_of(path: Path) -> Path | None:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "--absolute-git-dir"],
                             capture_output=True, text=True, check=False)
    except OSError:
        return None
    return Path(out.stdout.strip()) if out.returncode == 0 else None


@dataclass(frozen=True)
class _Remote:
    """Where commits come from: `url` is what git fetches; `local` the repository path
    when it is on this machine (fetched as file:// so that --depth works)."""

    url: str
    label: str
    local: Path | None

    @property
    def network(self) -> bool:
        return self.local is None and not self.url.startswith("file://")


def _remote(repo: str) -> _Remote:
    if _is_url(repo):
        return _Remote(repo, repo, None)
    path = Path(repo).expanduser()
    if not path.is_dir() or _git_dir_of(path) is None:
        raise InputError(f"git repository '{repo}' does not exist")
    path = path.resolve()
    return _Remote(path.as_uri(), str(path), path)


def git_store(remote_url: str, cache_root: Path) -> Path:
    """The shared bare repository that holds every commit fetched from one remote."""
    key = hashlib.sha256(remote_url.rstrip("/").encode()).hexdigest()[:16]
    base = re.sub(r"[^\w.-]", "_", remote_url.rstrip("/").rsplit("/", 1)[-1]).removesuffix(".git")
    return cache_root / "git" / f"{base or 'repo'}-{key}.git"


def _store_lock(store: Path) -> Path:
    return store.parent.parent / "locks" / f"git-{store.name}.lock"


def _open_store(remote: _Remote, cache_root: Path) -> Path:
    store = git_store(remote.url, cache_root)
    if offline() and remote.network:
        return store  # nothing could be fetched into a new one
    with cache.locked(_store_lock(store)):
        if not (store / "HEAD").is_file():
            tmp = store.with_name(f".tmp-{store.name}-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            _git(cache_root, "init", "-q", "--bare", str(tmp), what=InfraError)
            # Auto gc could repack a kernel's worth of objects in the middle of a run.
            _git(tmp, "config", "gc.auto", "0", what=InfraError)
            # Each fetch stays one pack, however small: objects sent twice would show.
            _git(tmp, "config", "transfer.unpackLimit", "1", what=InfraError)
            (tmp / "s2fault-remote").write_text(remote.url + "\n")
            os.rename(tmp, store)
    return store


def _has_commit(store: Path, commit: str) -> bool:
    return subprocess.run(["git", "-C", str(store), "cat-file", "-e", f"{commit}^{{commit}}"],
                          capture_output=True, check=False).returncode == 0


def _has_path(store: Path, commit: str, path: str) -> bool:
    return subprocess.run(["git", "-C", str(store), "cat-file", "-e", f"{commit}:{path}"],
                          capture_output=True, check=False).returncode == 0


def _known_refs(store: Path) -> dict[str, str]:
    try:
        refs: dict[str, str] = json.loads((store / "s2fault-refs.json").read_text())
        return refs
    except (OSError, ValueError):
        return {}


def _remember_ref(store: Path, ref: str, commit: str) -> None:
    """Which commit a ref named when it was last looked up: what --offline falls back on."""
    with cache.locked(_store_lock(store)):
        refs = _known_refs(store) | {ref: commit}
        tmp = store / f"s2fault-refs.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(refs, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, store / "s2fault-refs.json")


def _commit_of(remote: _Remote, store: Path, ref: str) -> str:
    """The full commit id `ref` names, asking the remote only when it must."""
    if remote.local is not None:
        return _git(remote.local, "rev-parse", "--verify", "--end-of-options", f"{ref}^{{commit}}")
    if _FULL_COMMIT.fullmatch(ref):
        return ref
    if offline() and remote.network:
        commit = _known_refs(store).get(ref)
        if commit:
            return commit
        raise InfraError(
            f"offline ({OFFLINE_ENV}): ref {ref} of {remote.url} was never fetched into {store}"
        )
    out = _git(store, "ls-remote", "--", remote.url, ref, f"refs/heads/{ref}", f"refs/tags/{ref}",
               what=InfraError)
    found = {name: sha for sha, name in
             (line.split("\t", 1) for line in out.splitlines() if "\t" in line)}
    for name in (f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"refs/heads/{ref}", ref):
        if name in found:
            _remember_ref(store, ref, found[name])
            return found[name]
    if re.fullmatch(r"[0-9a-f]{4,63}", ref):
        # An abbreviated id names no ref: only a full fetch can expand it.
        with cache.locked(_store_lock(store)):
            _fetch_all(remote, store)
        return _git(store, "rev-parse", "--verify", "--end-of-options", f"{ref}^{{commit}}")
    raise InputError(f"ref '{ref}' not found in {remote.label}")


def _fetch_commit(remote: _Remote, store: Path, commit: str) -> None:
    """Bring one commit (depth 1) into the store; objects it shares with commits
    fetched before are not sent again. Callers hold the store's lock."""
    if not _has_commit(store, commit):
        if offline() and remote.network:
            raise InfraError(
                f"offline ({OFFLINE_ENV}): commit {commit} of {remote.url} is not in {store}"
            )
        progress.stage("source", f"git fetch {commit[:12]} from {remote.label}")
        r = subprocess.run(
            ["git", "-C", str(store), "-c", f"protocol.version={GIT_PROTOCOL}", "fetch", "-q",
             "--no-tags", "--depth", "1", "--", remote.url, commit],
            capture_output=True, text=True, check=False,
            env=os.environ | {"GIT_TERMINAL_PROMPT": "0"},
        )
        if r.returncode != 0 or not _has_commit(store, commit):
            # A server that only serves advertised tips: take them all (and their history).
            _fetch_all(remote, store)
        if not _has_commit(store, commit):
            raise InputError(f"commit {commit} is not in {remote.label}")
    # A ref per fetched commit: fetch offers refs as what the store already has, so the
    # next commit's pack holds only what changed (without it, a whole kernel tree again),
    # and gc keeps the commit even when its worktree is gone.
    _git(store, "update-ref", f"refs/s2fault/commits/{commit}", commit, what=InfraError)


def _fetch_all(remote: _Remote, store: Path) -> None:
    """Every branch and tag with their history (callers hold the store's lock)."""
    if offline() and remote.network:
        raise InfraError(f"offline ({OFFLINE_ENV}): cannot fetch {remote.url} into {store}")
    progress.stage("source", f"git fetch (all branches and tags) from {remote.label}")
    if (store / "shallow").exists():
        _git(store, "fetch", "-q", "--unshallow", "--", remote.url, what=InfraError)
    _git(store, "fetch", "-q", "--", remote.url,
         "+refs/heads/*:refs/s2fault/heads/*", "+refs/tags/*:refs/tags/*", what=InfraError)


def _from_git(spec: str, repo: str, ref: str, cache_root: Path) -> Source:
    remote = _remote(repo)
    store = _open_store(remote, cache_root)
    commit = _commit_of(remote, store, ref)
    entry = cache.Entry("sources", f"git-{commit[:24]}", cache_root)
    with cache.locked(entry.lock_path):
        tree = _unpacked_tree(entry)
        if tree is None:
            # One lock over fetch, checkout and publish: `worktree prune` (run here, under
            # the same lock) must never see a worktree between its rename and its repair.
            with cache.locked(_store_lock(store)), entry.staging() as staged:
                _fetch_commit(remote, store, commit)
                if not all(_has_path(store, commit, p) for p in ("Makefile", "arch/arm64")):
                    raise InputError(f"{remote.label}@{ref} ({commit[:12]}) is not a kernel "
                                     "tree (no Makefile or arch/arm64)")
                progress.stage("source", f"check out {commit[:12]}")
                _git(store, "worktree", "prune", what=InfraError)
                _git(store, "worktree", "add", "-q", "--detach", str(staged / "tree"), commit,
                     what=InfraError)
                (staged / "SOURCE").write_text(f"{remote.url} {commit}\n")
                entry.publish(staged, {"repo": remote.label, "ref": ref, "commit": commit,
                                       "store": str(store)}, checksum=["SOURCE"])
                # The worktree's own link to the store survives the rename; the
                # store's link back to the worktree is what repair updates.
                _git(store, "worktree", "repair", str(entry.dir / "tree"), what=InfraError)
            tree = _unpacked_tree(entry)
    if tree is None:
        raise InfraError(f"source cache entry {entry.dir} is broken: remove it and retry")
    return Source(spec, f"git:{commit}", tree, f"{remote.label}@{ref} ({commit[:12]})")


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
