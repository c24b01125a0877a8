"""Kernel sources from tarballs: a local one, or one downloaded over HTTP(S) and
verified by its sha256 (`URL#sha256=HEX`), unpacked once into the cache (source/__init__.py
reads the spec and calls these).

Downloads resume where a dropped connection stopped and retry with a backoff;
unpacking refuses members that would land outside the tree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

from s2fault import cache, progress
from s2fault.errors import InfraError, InputError
from s2fault.source import OFFLINE_ENV, Source, offline

if TYPE_CHECKING:
    import requests

# Downloads: seconds to connect, seconds without a byte before giving up on a read.
CONNECT_TIMEOUT = 15
DOWNLOAD_TIMEOUT = 60
DOWNLOAD_ATTEMPTS = 4
RETRY_BACKOFF = 0.5  # seconds before the second attempt, doubled after each failure
# What a dropped connection can lose: requests hands out whole chunks only.
CHUNK = 64 * 1024


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
                start = time.monotonic()
                unpack(tarball, staged / "tree")
                seconds = round(time.monotonic() - start, 1)
                # The manifest checksums files; a kernel tree has 80k of them, so the
                # entry records only a stamp file and relies on the atomic rename.
                (staged / "SOURCE").write_text(f"{tarball}\nsha256 {digest}\n")
                entry.publish(
                    staged, {"tarball": str(tarball), "sha256": digest,
                             "unpack_seconds": seconds}, checksum=["SOURCE"]
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
