"""Kernel sources from git: `REPO@REF`, a commit of a repository (a path or a URL),
fetched shallowly into a bare store shared by every ref of that repository and checked
out once per commit into the cache (source/__init__.py reads the spec and calls _from_git).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from s2fault import cache, hosttools, progress
from s2fault.errors import InfraError, InputError
from s2fault.source import OFFLINE_ENV, Source, _is_url, offline
from s2fault.source.archive import _unpacked_tree

# Protocol v2 lets a client fetch any commit by id; v0 servers only hand out what
# they advertise (the fallback then fetches every branch and tag, not shallow).
GIT_PROTOCOL = "2"
_FULL_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


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
