"""Content-addressed cache entries, published by atomic rename.

An entry is a directory `<cache>/<area>/<key>/` holding artifacts and a
`manifest.json` with the sha256 of each. Work happens in a private temporary
directory beside it; only a complete, checksummed directory is renamed into
place, so an interrupted run never leaves a half-published entry. A lock file
per key keeps two runs from building the same thing twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from s2fault.errors import InfraError

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def key_of(*parts: str | bytes) -> str:
    """A short stable key from ordered parts."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:24]


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock held for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Entry:
    """One cache entry: look it up, verify it, or build and publish it."""

    def __init__(self, area: str, key: str, root: Path):
        self.area = area
        self.key = key
        self.dir = root / area / key
        self.lock_path = root / "locks" / f"{area}-{key}.lock"

    def verify(self) -> bool:
        """True when the entry exists and every artifact matches its checksum."""
        manifest = self.dir / MANIFEST
        try:
            data = json.loads(manifest.read_text())
            files = data["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        for name, digest in files.items():
            path = self.dir / name
            if not path.is_file() or sha256_file(path) != digest:
                return False
        return True

    def metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = json.loads((self.dir / MANIFEST).read_text()).get("metadata", {})
        return metadata

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A private scratch directory that becomes the entry on publish()."""
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{self.key}-", dir=self.dir.parent))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def publish(
        self, staged: Path, metadata: dict[str, Any] | None = None,
        checksum: list[str] | None = None,
    ) -> None:
        """Checksum the files in `staged` (all, or the names in `checksum`) and rename
        the directory into place atomically."""
        if checksum is None:
            names = [
                str(p.relative_to(staged))
                for p in sorted(staged.rglob("*"))
                if p.is_file() and p.name != MANIFEST
            ]
        else:
            names = checksum
        files = {name: sha256_file(staged / name) for name in names}
        manifest = {"key": self.key, "files": files, "metadata": metadata or {}}
        try:
            tmp_manifest = staged / (MANIFEST + ".tmp")
            tmp_manifest.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            os.replace(tmp_manifest, staged / MANIFEST)
            if self.dir.exists():
                # A stale or corrupt entry: move it aside first; rename cannot replace a
                # non-empty directory.
                trash = Path(tempfile.mkdtemp(prefix=f".old-{self.key}-", dir=self.dir.parent))
                os.rename(self.dir, trash / "entry")
                shutil.rmtree(trash, ignore_errors=True)
            os.rename(staged, self.dir)
        except OSError as e:
            raise InfraError(f"cannot publish cache entry {self.dir}: {e.strerror}") from e
