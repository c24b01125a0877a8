"""Kernel sources, for real: tarballs served by an HTTP server on 127.0.0.1 (good,
corrupted, cut off mid-download, slow, busy), a local bare git repository with two
refs fetched into the shared store, and one end-to-end check at two commits of the
Debian tree's git history."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import loopback_http, s2fault
from s2fault import source
from s2fault.errors import InfraError, InputError
from s2fault.source import archive
from s2fault.source import git as source_git

# --- a tarball server -----------------------------------------------------------------------


def kernel_like_tarball() -> bytes:
    """A small tree that passes for a kernel source (Makefile, arch/arm64/), padded with
    incompressible bytes so that a download can be cut off halfway through."""
    rng = random.Random(9)
    files = {
        "linux-s2fault/Makefile": b"VERSION = 6\nPATCHLEVEL = 12\n",
        "linux-s2fault/arch/arm64/Kconfig": b"config ARM64\n\tdef_bool y\n",
        "linux-s2fault/arch/arm64/kvm/mmu.c": b"/* stage-2 faults */\n",
        "linux-s2fault/firmware.bin": rng.randbytes(256 * 1024),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1700000000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


TARBALL = kernel_like_tarball()
SHA256 = hashlib.sha256(TARBALL).hexdigest()


class TarballHandler(http.server.BaseHTTPRequestHandler):
    """Serves `payload` at /<behaviour>/NAME; records every request it answers."""

    log: list[dict]
    payload: bytes
    lock = threading.Lock()

    def do_GET(self):  # noqa: N802 - the http.server API
        behaviour = self.path.strip("/").split("/")[0]
        with self.lock:
            seen = [e for e in self.log if e["path"] == self.path]
            entry = {"path": self.path, "range": self.headers.get("Range"), "status": 0,
                     "sent": 0}
            self.log.append(entry)
        first = not seen
        payload = self.payload
        if behaviour == "missing":
            return self._status(entry, 404)
        if behaviour == "busy" and first:
            return self._status(entry, 503)
        if behaviour == "slow":
            time.sleep(2)
        if behaviour == "corrupt":
            mid = len(payload) // 2
            payload = payload[:mid] + bytes([payload[mid] ^ 0xFF]) + payload[mid + 1:]
        honour_range = behaviour != "norange"
        start = 0
        if honour_range and entry["range"]:
            start = int(entry["range"].removeprefix("bytes=").split("-")[0])
        if start >= len(payload):
            entry["status"] = 416
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(payload)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        entry["status"] = 206 if start else 200
        self.send_response(entry["status"])
        self.send_header("Content-Length", str(len(payload) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        self.end_headers()
        body = payload[start:]
        if behaviour in ("truncated", "norange") and first:
            body = body[: len(body) // 2]  # then the connection drops
        # Recorded before writing: the client may be done (and asserting) before the
        # write call returns here.
        entry["sent"] = len(body)
        self.wfile.write(body)

    def _status(self, entry: dict, code: int) -> None:
        entry["status"] = code
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(payload: bytes) -> Iterator[tuple[str, list[dict]]]:
    """(base URL, request log) of a loopback server handing out `payload`."""
    log: list[dict] = []
    handler = type("Handler", (TarballHandler,), {"log": log, "payload": payload})
    with loopback_http(handler) as base:
        yield base, log


@pytest.fixture
def server():
    with serving(TARBALL) as base_and_log:
        yield base_and_log


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(archive, "RETRY_BACKOFF", 0.01)
    monkeypatch.delenv(source.OFFLINE_ENV, raising=False)


def leftovers(cache_root: Path) -> list[str]:
    return [str(p.relative_to(cache_root)) for area in ("sources", "downloads")
            if (cache_root / area).is_dir()
            for p in (cache_root / area).iterdir() if p.name.startswith(".tmp-")]


def published(cache_root: Path, area: str) -> list[str]:
    d = cache_root / area
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if d.is_dir() else []


# --- tarballs over HTTP ------------------------------------------------------------------


def test_tarball_url_is_verified_unpacked_and_cached(server, tmp_path, monkeypatch):
    base, log = server
    spec = f"{base}/good/linux.tar.gz#sha256={SHA256}"
    src = source.resolve(spec, tmp_path)
    assert src.identity == f"tarball:sha256:{SHA256}"
    assert (src.tree / "Makefile").read_bytes().startswith(b"VERSION = 6")
    assert (src.tree / "arch" / "arm64" / "kvm" / "mmu.c").is_file()
    assert len(log) == 1 and log[0]["range"] is None
    # Unpacked once: the next run needs neither the server nor the network.
    monkeypatch.setenv(source.OFFLINE_ENV, "1")
    assert source.resolve(spec, tmp_path).tree == src.tree
    assert len(log) == 1
    assert leftovers(tmp_path) == []


def test_wrong_sha256_stops_before_unpacking(server, tmp_path):
    base, _ = server
    wrong = hashlib.sha256(b"another tarball").hexdigest()
    with pytest.raises(InputError, match=f"sha256 {SHA256} does not match {wrong}"):
        source.resolve(f"{base}/good/linux.tar.gz#sha256={wrong}", tmp_path)
    assert published(tmp_path, "sources") == [] and published(tmp_path, "downloads") == []
    assert not list((tmp_path / "downloads").glob("*.part")) and leftovers(tmp_path) == []


def test_corrupted_bytes_are_refused(server, tmp_path):
    base, _ = server
    with pytest.raises(InputError, match="does not match"):
        archive.fetch(f"{base}/corrupt/linux.tar.gz", SHA256, tmp_path)
    assert published(tmp_path, "downloads") == []


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    base, log = server
    path = archive.fetch(f"{base}/truncated/linux.tar.gz", SHA256, tmp_path)
    assert path.read_bytes() == TARBALL
    assert [(e["range"] is None, e["status"]) for e in log] == [(True, 200), (False, 206)]
    # It resumed where the first attempt's last whole chunk ended (requests hands out
    # whole chunks), so the second sent only what was missing, not the whole file again.
    kept = int(log[1]["range"].removeprefix("bytes=").rstrip("-"))
    assert len(TARBALL) // 2 - archive.CHUNK < kept <= len(TARBALL) // 2
    assert log[1]["sent"] == len(TARBALL) - kept


def test_server_ignoring_the_range_means_starting_again(server, tmp_path):
    base, log = server
    path = archive.fetch(f"{base}/norange/linux.tar.gz", SHA256, tmp_path)
    assert path.read_bytes() == TARBALL
    assert [(bool(e["range"]), e["status"]) for e in log] == [(False, 200), (True, 200)]


def test_partial_file_of_a_killed_run_resumes(server, tmp_path):
    base, log = server
    url = f"{base}/good/linux.tar.gz"
    part = tmp_path / "downloads" / f"{SHA256[:24]}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(TARBALL[:1000])
    assert archive.fetch(url, SHA256, tmp_path).read_bytes() == TARBALL
    assert [e["range"] for e in log] == ["bytes=1000-"]
    assert not part.exists()


def test_whole_partial_file_is_not_downloaded_again(server, tmp_path):
    """A run killed between the last byte and the publish: the server says 416."""
    base, log = server
    part = tmp_path / "downloads" / f"{SHA256[:24]}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(TARBALL)
    path = archive.fetch(f"{base}/good/linux.tar.gz", SHA256, tmp_path)
    assert path.read_bytes() == TARBALL
    assert [(e["range"], e["status"]) for e in log] == [(f"bytes={len(TARBALL)}-", 416)]


def test_busy_server_is_retried(server, tmp_path):
    base, log = server
    path = archive.fetch(f"{base}/busy/linux.tar.gz", SHA256, tmp_path)
    assert path.read_bytes() == TARBALL
    assert [e["status"] for e in log] == [503, 200]


def test_missing_file_is_not_retried(server, tmp_path):
    base, log = server
    with pytest.raises(InputError, match="HTTP 404"):
        archive.fetch(f"{base}/missing/linux.tar.gz", SHA256, tmp_path)
    assert len(log) == 1


def test_slow_server_is_a_clear_infrastructure_error(server, tmp_path, monkeypatch):
    base, log = server
    monkeypatch.setattr(archive, "DOWNLOAD_TIMEOUT", 0.3)
    monkeypatch.setattr(archive, "DOWNLOAD_ATTEMPTS", 2)
    with pytest.raises(InfraError, match=r"slow/linux.tar.gz failed after 2 attempts: "
                                         r"read timed out"):
        archive.fetch(f"{base}/slow/linux.tar.gz", SHA256, tmp_path)
    assert len(log) == 2 and published(tmp_path, "downloads") == []


def test_refused_connection_is_retried_then_named(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    attempts = archive.DOWNLOAD_ATTEMPTS
    with pytest.raises(InfraError, match=f"failed after {attempts} attempts: "
                                         ".*Connection refused"):
        archive.fetch(f"http://127.0.0.1:{port}/linux.tar.gz", SHA256, tmp_path)


def test_offline_refuses_and_names_what_is_missing(server, tmp_path, monkeypatch):
    base, log = server
    monkeypatch.setenv(source.OFFLINE_ENV, "1")
    url = f"{base}/good/linux.tar.gz"
    with pytest.raises(InfraError) as e:
        source.resolve(f"{url}#sha256={SHA256}", tmp_path)
    assert url in e.value.message
    assert str(tmp_path / "downloads" / SHA256[:24] / "linux.tar.gz") in e.value.message
    assert log == []


def test_cli_stops_on_a_bad_tarball_with_one_line(server, tmp_path):
    base, log = server
    env = {"S2FAULT_CACHE": str(tmp_path)}
    wrong = "0" * 64
    r = s2fault("build", "--source", f"{base}/good/linux.tar.gz#sha256={wrong}", env=env)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"s2fault: error: download of {base}/good/linux.tar.gz: sha256 {SHA256} "
        f"does not match {wrong}"]
    r = s2fault("check", "--offline", "--variant", "upstream", "--mode", "functional",
                "--results", str(tmp_path / "results"),
                "--source", f"{base}/other/linux.tar.gz#sha256={SHA256}", env=env)
    assert r.returncode == 2 and "offline" in r.stderr and "Traceback" not in r.stderr
    assert len(log) == 1


# --- specs -------------------------------------------------------------------------------


def test_ref_joins_the_source_spec():
    assert source.with_ref("/src/linux", "v6.12") == "/src/linux@v6.12"
    assert source.with_ref("https://git.kernel.org/x/linux.git", "v6.12") == \
        "https://git.kernel.org/x/linux.git@v6.12"
    assert source.with_ref("git@host:linux.git", "main") == "git@host:linux.git@main"
    assert source.with_ref("/src/linux", None) == "/src/linux"
    for spec in (None, "debian", "linux.tar.xz", "https://h/l.tar.xz#sha256=ab", "/l@v1"):
        with pytest.raises(InputError, match="--ref"):
            source.with_ref(spec, "v1")


def test_url_without_sha256_or_ref_is_refused(tmp_path):
    with pytest.raises(InputError, match="needs '#sha256=<hex>'"):
        source.resolve("https://cdn.kernel.org/pub/linux/kernel/v6.x/linux-6.12.tar.xz",
                       tmp_path)
    with pytest.raises(InputError, match="not a sha256"):
        source.resolve("https://cdn.kernel.org/linux-6.12.tar.xz#sha256=abc", tmp_path)


# --- git: a bare repository with two refs ---------------------------------------------------

_GIT_ENV = {"GIT_AUTHOR_NAME": "s2fault", "GIT_AUTHOR_EMAIL": "s2fault@example.invalid",
            "GIT_COMMITTER_NAME": "s2fault", "GIT_COMMITTER_EMAIL": "s2fault@example.invalid",
            "GIT_AUTHOR_DATE": "2024-11-17T12:00:00Z", "GIT_COMMITTER_DATE": "2024-11-17T12:00:00Z"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=os.environ | _GIT_ENV).stdout.strip()


@pytest.fixture(scope="module")
def bare_repo(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A bare repository: tag v1 (the fix), branch topic two commits later (the fix
    reverted, then a note). `mid` is the revert: reachable, but no ref points at it."""
    work = tmp_path_factory.mktemp("work")
    git(work, "init", "-q", "-b", "main")
    (work / "arch" / "arm64" / "kvm").mkdir(parents=True)
    (work / "Makefile").write_text("VERSION = 6\n")
    mmu = work / "arch" / "arm64" / "kvm" / "mmu.c"
    mmu.write_text("icache_inval_all_pou();\n")
    git(work, "add", ".")
    git(work, "commit", "-q", "-m", "v1")
    git(work, "tag", "v1")
    git(work, "checkout", "-q", "-b", "topic")
    mmu.write_text("icache_inval_pou(va, size);\n")
    git(work, "commit", "-q", "-am", "revert the fix")
    (work / "NOTE").write_text("note\n")
    git(work, "add", "NOTE")
    git(work, "commit", "-q", "-m", "a note")
    bare = tmp_path_factory.mktemp("remote") / "linux.git"
    git(work, "clone", "-q", "--bare", str(work), str(bare))
    commits = {name: git(bare, "rev-parse", f"{name}^{{commit}}")
               for name in ("v1", "topic", "topic~1")}
    return bare, commits


def packed_objects(store: Path) -> int:
    """Objects in the store's packs, counting one sent twice (in two packs) twice."""
    counts = dict(line.split(": ") for line in git(store, "count-objects", "-v").splitlines())
    assert counts["count"] == "0"  # every fetch stays a pack (transfer.unpackLimit=1)
    return int(counts["in-pack"])


def distinct_objects(store: Path) -> int:
    return len(git(store, "cat-file", "--batch-all-objects", "--batch-check").splitlines())


def test_two_refs_two_worktrees_one_store(bare_repo, tmp_path):
    bare, commits = bare_repo
    one = source.resolve(f"{bare}@v1", tmp_path)
    two = source.resolve(source.with_ref(str(bare), "topic"), tmp_path)
    assert one.identity == f"git:{commits['v1']}" and two.identity == f"git:{commits['topic']}"
    assert one.tree != two.tree
    assert (one.tree / "arch/arm64/kvm/mmu.c").read_text() == "icache_inval_all_pou();\n"
    assert (two.tree / "NOTE").is_file()
    stores = list((tmp_path / "git").iterdir())
    assert len(stores) == 1
    store = stores[0]
    for src in (one, two):
        assert Path(git(src.tree, "rev-parse", "--path-format=absolute", "--git-common-dir")) \
            == store
    assert git(store, "rev-parse", "--is-shallow-repository") == "true"
    listed = git(store, "worktree", "list", "--porcelain")
    assert f"worktree {one.tree}" in listed and f"worktree {two.tree}" in listed
    assert "prunable" not in listed
    # Shallow: only the two commits asked for, not the history between them.
    assert git(store, "rev-list", "--count", commits["v1"], commits["topic"]) == "2"
    # The second fetch sent only what the first had not: no object is stored twice.
    assert packed_objects(store) == distinct_objects(store)
    assert leftovers(tmp_path) == []


def test_two_runs_at_two_refs_at_once(bare_repo, tmp_path):
    """Two processes share the store: one fetches and checks out while the other waits."""
    bare, commits = bare_repo
    code = ("import sys; from pathlib import Path; from s2fault import source; "
            "print(source.resolve(sys.argv[1], Path(sys.argv[2])).identity)")
    procs = [subprocess.Popen([sys.executable, "-c", code, f"{bare}@{ref}", str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for ref in ("v1", "topic")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [o[0].strip() for o in outs] == [f"git:{commits['v1']}", f"git:{commits['topic']}"]
    store = next((tmp_path / "git").iterdir())
    listed = git(store, "worktree", "list", "--porcelain")
    assert listed.count("\nworktree ") == 2 and "prunable" not in listed
    assert leftovers(tmp_path) == []


def test_a_ref_seen_before_is_reused_without_fetching(bare_repo, tmp_path):
    bare, _ = bare_repo
    first = source.resolve(f"{bare}@topic", tmp_path)
    fetch_head = next((tmp_path / "git").iterdir()) / "FETCH_HEAD"
    stamp = fetch_head.stat().st_mtime_ns
    time.sleep(0.01)
    assert source.resolve(f"{bare}@topic", tmp_path).tree == first.tree
    assert fetch_head.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("protocol", ["2", "0"])
def test_a_full_commit_id_no_ref_points_at(bare_repo, tmp_path, monkeypatch, protocol):
    """Protocol v2 fetches any commit by id; a v0 server refuses one it does not
    advertise, and the store falls back to fetching every branch and tag."""
    bare, commits = bare_repo
    monkeypatch.setattr(source_git, "GIT_PROTOCOL", protocol)
    src = source.resolve(f"{bare}@{commits['topic~1']}", tmp_path)
    assert src.identity == f"git:{commits['topic~1']}"
    assert (src.tree / "arch/arm64/kvm/mmu.c").read_text() == "icache_inval_pou(va, size);\n"
    store = next((tmp_path / "git").iterdir())
    shallow = "true" if protocol == "2" else "false"
    assert git(store, "rev-parse", "--is-shallow-repository") == shallow


def test_a_url_remote_resolves_refs_and_abbreviations(bare_repo, tmp_path):
    bare, commits = bare_repo
    url = bare.as_uri()
    assert source.resolve(f"{url}@v1", tmp_path).identity == f"git:{commits['v1']}"
    short = commits["topic~1"][:10]
    assert source.resolve(f"{url}@{short}", tmp_path).identity == f"git:{commits['topic~1']}"


def test_bad_refs_and_repositories_are_named(bare_repo, tmp_path):
    bare, _ = bare_repo
    with pytest.raises(InputError, match="nosuchref"):
        source.resolve(f"{bare}@nosuchref", tmp_path)
    with pytest.raises(InputError, match="ref 'nosuchref' not found"):
        source.resolve(f"{bare.as_uri()}@nosuchref", tmp_path)
    with pytest.raises(InputError, match="git repository '/no/such/repo' does not exist"):
        source.resolve("/no/such/repo@v1", tmp_path)
    with pytest.raises(InputError, match="has no work tree: give a --ref"):
        source.resolve(str(bare), tmp_path)
    notes = tmp_path / "notes"
    git(tmp_path, "init", "-q", str(notes))
    (notes / "README").write_text("not a kernel\n")
    git(notes, "add", "README")
    git(notes, "commit", "-q", "-m", "notes")
    git(notes, "tag", "v1")
    git(notes, "clone", "-q", "--bare", str(notes), str(tmp_path / "remote.git"))
    with pytest.raises(InputError, match=r"@v1 \(\w+\) is not a kernel tree"):
        source.resolve(f"{tmp_path / 'remote.git'}@v1", tmp_path)
    assert published(tmp_path, "sources") == []  # refused before any checkout


def test_offline_git_uses_what_the_store_has(bare_repo, tmp_path, monkeypatch):
    bare, commits = bare_repo
    # A local repository is not the network: offline changes nothing.
    monkeypatch.setenv(source.OFFLINE_ENV, "1")
    assert source.resolve(f"{bare}@v1", tmp_path).identity == f"git:{commits['v1']}"
    remote = "https://git.invalid/linux.git"
    with pytest.raises(InfraError, match=f"ref v1 of {remote} was never fetched into "):
        source.resolve(f"{remote}@v1", tmp_path)
    with pytest.raises(InfraError, match=f"commit {commits['topic']} of {remote} is not in "):
        source.resolve(f"{remote}@{commits['topic']}", tmp_path)
    # A commit already checked out is there whatever remote it is asked from.
    assert source.resolve(f"{remote}@{commits['v1']}", tmp_path).identity.endswith(commits["v1"])


# --- end to end: `s2fault check` at two commits of a kernel repository ----------------------


def _stats_log_counts(path: Path) -> dict[str, int]:
    """ccache's stats log: one counter name per line for each compilation."""
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        if line and not line.startswith("#"):
            counts[line.strip()] = counts.get(line.strip(), 0) + 1
    return counts


@pytest.mark.slow
def test_check_at_two_commits_shares_the_store_and_the_build(tmp_path):
    from test_bisect import fixture_repo, harmless, make_history

    from s2fault import project
    from s2fault.kernel import kconfig, variants
    from s2fault.kernel import key as kernel_key

    repo = fixture_repo()
    base = git(repo, "rev-parse", "base^{commit}")
    # A second commit that only adds a comment to arch/arm64/kvm/arm.c (fixed dates:
    # the same id every session, so its worktree is reused like a user's would be).
    other = make_history(repo, "s2fault-sources", [harmless(7, "-sources")])[-1]
    cache_root = project.cache_dir()
    # The second commit's kernel is dropped first, so it is built (with the same config
    # as the first: the case of a user trying a new ref) and ccache has something to show.
    # Only this test builds that commit. The first commit's kernel may come from the cache.
    key = kernel_key.build_key(source.Source("", f"git:{other}", repo, ""),
                               variants.load("upstream"), kconfig.fragment_paths())
    shutil.rmtree(cache_root / "kernels" / key, ignore_errors=True)
    runs = []
    for commit in (base, other):
        stats = tmp_path / f"ccache-{commit[:12]}.log"
        results = tmp_path / f"check-{commit[:12]}"
        r = s2fault("check", "--source", str(repo), "--ref", commit, "--variant", "upstream",
                    "--mode", "functional", "--results", str(results),
                    env={"CCACHE_STATSLOG": str(stats)}, timeout=1800)
        assert r.returncode == 0, r.stdout + r.stderr
        rows = json.loads((results / "check.json").read_text())["cells"]
        assert [(c["variant"], c["mode"], c["match"]) for c in rows] == [
            ("upstream", "functional", True)]
        runs.append((rows[0], _stats_log_counts(stats)))
    # One bare store for the repository: both worktrees are linked to it.
    store = source_git.git_store(repo.resolve().as_uri(), cache_root)
    for commit in (base, other):
        tree = source.resolve(f"{repo}@{commit}", cache_root).tree
        assert Path(git(tree, "rev-parse", "--path-format=absolute", "--git-common-dir")) \
            == store
    # No second clone: the second commit's pack held what changed. (A thin pack is
    # completed with copies of its delta bases: a handful of objects stored twice,
    # where a second clone would be the whole tree, ~90k.)
    distinct = distinct_objects(store)
    assert packed_objects(store) - distinct < distinct // 100
    kernels = [json.loads((Path(row["build"]["image"]).parent / "s2fault-build.json")
                          .read_text()) for row, _ in runs]
    assert [k["source_identity"] for k in kernels] == [f"git:{base}", f"git:{other}"]
    row, counts = runs[1]
    assert row["build"]["key"] == key and row["build"]["cached"] is False
    compiled = _compiled_sources(tmp_path / f"ccache-{other[:12]}.log")
    meta = kernels[1]
    print(f"second ref: {len(compiled)} sources compiled {sorted(compiled)} ({counts}), "
          f"{meta['changed_files']} changed file(s), seeded from {meta.get('seeded_from')}, "
          f"build {row['build']['seconds']} s")
    # Its build tree was built before: its own (an earlier session) or a new one seeded
    # from the first commit's (or the tarball's) tree of the same config. Either way
    # kbuild compiles what differs between the commits (a comment in arm.c), the link's
    # version stamp and kallsyms, and in a new tree the vDSO and what includes its
    # offsets (lib/vdso/Makefile names its files by absolute path, so their command
    # lines change with the tree): a dozen files, not a kernel's worth (~1000).
    assert len(compiled) < 40, sorted(compiled)
    if meta.get("seeded_from"):
        assert meta["changed_files"] == 1, meta
        assert "../arch/arm64/kvm/arm.c" in compiled, sorted(compiled)


def _compiled_sources(path: Path) -> set[str]:
    """The source files of ccache's stats log (a "# FILE" line per compilation), without
    the compiler probes of kbuild's cc-option checks (/dev/null)."""
    names = set()
    for line in path.read_text().splitlines() if path.is_file() else []:
        name = line.removeprefix("# ").strip() if line.startswith("#") else ""
        if name and name != "/dev/null":
            names.add(name)
    return names


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("S2FAULT_TEST_DEBIAN_DOWNLOAD"),
                    reason="opt-in (S2FAULT_TEST_DEBIAN_DOWNLOAD=1): downloads, unpacks and "
                    "builds the 153 MB Debian tarball in a cache of its own, ~2.5 min")
def test_debian_tarball_over_http_builds_the_same_kernel(tmp_path, upstream_build):
    """The real tarball from 127.0.0.1, cut off halfway once, into an empty s2fault cache
    (ccache shared): it resumes, builds, and its key is the one the local tarball gets."""
    payload = source.DEBIAN_TARBALL.read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    with serving(payload) as (base, log):
        url = f"{base}/truncated/{source.DEBIAN_TARBALL.name}"
        start = time.monotonic()
        r = s2fault("build", "--variant", "upstream", "--source", f"{url}#sha256={digest}",
                    env={"S2FAULT_CACHE": str(tmp_path / "cache")}, timeout=3600)
        seconds = time.monotonic() - start
    assert r.returncode == 0, r.stdout + r.stderr
    assert "upstream: built" in r.stdout
    assert f"key:    {upstream_build.key}" in r.stdout
    assert [e["status"] for e in log] == [200, 206]
    assert sum(e["sent"] for e in log) <= len(payload) + archive.CHUNK
    print(f"download + unpack + build: {seconds:.0f} s")
