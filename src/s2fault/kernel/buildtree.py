"""A persistent kernel build tree: a source tree and kbuild's output directory inside it.

    <root>/linux/                 the source: hard links to a pristine tree, and copies of
                                  the files a patch series (or a new commit) changed
    <root>/linux/s2fault-build/   kbuild's O=, a direct child of the source

Why the output directory sits inside the source: kbuild then sets srctree to `..`, so
every path in the compiler's command lines and in kbuild's .cmd dependency files is
relative. A tree can be copied to another root and kbuild finds its objects up to date
(a variant's tree is seeded from the base build that way), and ccache sees the same
command lines whatever the root, so builds in different roots (the matrix's variants,
a bisection's steps) hit each other's objects.

`sync()` brings the source to a wanted state and keeps every file whose content did not
change, with its mtime: kbuild's own dependency tracking then rebuilds what changed and
nothing else. A changed file is written as a new file with a fresh mtime, so it is always
newer than the objects built from its previous content (a file put back to its pristine
content gets a fresh copy too, never the pristine file's older mtime).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2fault import source
from s2fault.errors import InfraError

SOURCE_DIR = "linux"
OBJ_DIR = "s2fault-build"
STATE = "state.json"


@dataclass(frozen=True)
class Tree:
    root: Path

    @property
    def src(self) -> Path:
        return self.root / SOURCE_DIR

    @property
    def obj(self) -> Path:
        return self.src / OBJ_DIR

    @property
    def lock_path(self) -> Path:
        return self.root.parent / f"{self.root.name}.lock"

    def state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / STATE).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save_state(self, **changes: object) -> None:
        data = self.state() | changes
        tmp = self.root / f".{STATE}.{os.getpid()}"
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.root / STATE)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def sync(tree: Tree, pristine: Path, pristine_id: str, overlay: dict[str, bytes | None]
         ) -> list[str]:
    """Make `tree.src` equal to `pristine` with `overlay` (path -> content, None: absent)
    on top; return the paths whose content changed (all of them for a new tree).

    When the pristine tree is the one of the last sync, only the paths of this overlay
    and of the last one can differ: milliseconds. Otherwise every file is compared by
    inode (hard links to an unchanged file are the file) and, when that differs, by
    content: about a second for a kernel tree."""
    state = tree.state()
    previous = set(state.get("overlay", []))
    if not tree.src.is_dir():
        tree.root.mkdir(parents=True, exist_ok=True)
        source.link_tree(pristine, tree.src)
        changed = ["*"]
    elif state.get("pristine") == pristine_id and state.get("pristine_path") == str(pristine):
        changed = [rel for rel in sorted(previous | set(overlay))
                   if _settle(tree.src / rel, pristine / rel, overlay, rel)]
        if os.path.lexists(tree.src / ".git"):  # left by an earlier walk that copied it
            _settle(tree.src / ".git", pristine / ".git", {".git": None}, ".git")
            changed.append(".git")
    else:
        kept: dict[str, list[int]] = {}
        changed = _walk(tree.src, pristine, set(overlay) | previous, state.get("kept", {}), kept)
        changed += [rel for rel in sorted(previous | set(overlay))
                    if _settle(tree.src / rel, pristine / rel, overlay, rel)]
        tree.save_state(kept=kept)
    if changed == ["*"]:
        for rel in sorted(overlay):
            _settle(tree.src / rel, pristine / rel, overlay, rel)
    tree.save_state(pristine=pristine_id, pristine_path=str(pristine), overlay=sorted(overlay))
    return changed


def _settle(dst: Path, pristine: Path, overlay: dict[str, bytes | None], rel: str) -> bool:
    """Give `dst` its wanted content (the overlay's, else the pristine file's); True if it
    changed."""
    if rel in overlay:
        want = overlay[rel]
    else:
        want = pristine.read_bytes() if pristine.is_file() else None
    have = dst.read_bytes() if dst.is_file() and not dst.is_symlink() else None
    if have == want and not (want is None and os.path.lexists(dst)):
        return False
    if want is None:
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        else:
            dst.unlink(missing_ok=True)
        return True
    _write_new(dst, want, pristine if rel not in overlay else None)
    return True


def _write_new(dst: Path, data: bytes, mode_from: Path | None) -> None:
    """A new file with a fresh mtime, renamed into place (never written through a hard
    link: the pristine tree shares the old inode)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".s2fault-", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        mode = 0o644
        for candidate in (mode_from, dst):
            if candidate is not None and candidate.is_file():
                mode = candidate.stat().st_mode & 0o7777
                break
        os.chmod(tmp, mode)
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _walk(dst_root: Path, pristine: Path, skip: set[str], known: dict[str, list[int]],
          kept: dict[str, list[int]]) -> list[str]:
    """Bring every path outside `skip` to the pristine tree's content; the changed ones.

    `kept` receives the files whose content equals the pristine file's but which stay
    as they are (see _refresh); `known` is that record from the last walk."""
    changed: list[str] = []
    for dirpath, dirnames, filenames in os.walk(pristine):
        rel_dir = os.path.relpath(dirpath, pristine)
        rel_dir = "" if rel_dir == "." else rel_dir
        if not rel_dir:
            # Never a repository's .git (a directory, or a worktree's .git file): as
            # link_tree() leaves it out. A build tree that looked like a git checkout
            # would get setlocalversion's scm suffix in its kernel release.
            dirnames[:] = [d for d in dirnames if d not in (".git", OBJ_DIR)]
            filenames = [f for f in filenames if f != ".git"]
        dst_dir = dst_root / rel_dir
        wanted = set(filenames) | set(dirnames)
        # Symlinks to directories come in dirnames; os.walk does not follow them.
        for name in list(dirnames):
            if os.path.islink(os.path.join(dirpath, name)):
                dirnames.remove(name)
                filenames.append(name)
        try:
            present = {e.name: e for e in os.scandir(dst_dir)}
        except FileNotFoundError:
            dst_dir.mkdir(parents=True)
            present = {}
        for name, entry in present.items():
            rel = os.path.join(rel_dir, name)
            if name in wanted or rel in skip or (not rel_dir and name == OBJ_DIR):
                continue
            changed.append(rel)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        for name in filenames:
            rel = os.path.join(rel_dir, name)
            if rel in skip:
                continue
            if _refresh(Path(dirpath) / name, dst_dir / name, present.get(name),
                        known.get(rel), kept, rel):
                changed.append(rel)
        for name in dirnames:
            old = present.get(name)
            if old is not None and not old.is_dir(follow_symlinks=False):
                os.unlink(old.path)
                changed.append(os.path.join(rel_dir, name))
    return changed


def _refresh(want: Path, dst: Path, entry: os.DirEntry[str] | None, known: list[int] | None,
             kept: dict[str, list[int]], rel: str) -> bool:
    """One file of the walk; True if its content changed."""
    ws = want.lstat()
    if entry is not None:
        ds = entry.stat(follow_symlinks=False)
        if (ds.st_ino, ds.st_dev) == (ws.st_ino, ws.st_dev):
            return False
        stamp = [ws.st_ino, ws.st_mtime_ns, ws.st_size]
        if known == stamp:  # found equal by the last walk, and untouched since
            kept[rel] = stamp
            return False
        # A real copy (the pristine tree on another filesystem) keeps size and mtime:
        # rsync's quick check, rather than reading 80k files at every step.
        if (ds.st_size, ds.st_mtime_ns) == (ws.st_size, ws.st_mtime_ns) \
                and entry.is_file(follow_symlinks=False) and not os.path.islink(want):
            return False
        if os.path.islink(want):
            if entry.is_symlink() and os.readlink(dst) == os.readlink(want):
                return False
        elif entry.is_file(follow_symlinks=False) and ds.st_size == ws.st_size \
                and _same_bytes(want, dst):
            # Same content. An older pristine file takes its place (the next walk sees
            # the same inode); a newer one would make kbuild rebuild what is up to date
            # (a tree seeded from another source's tree: every file checked out later),
            # so the file stays, and the walk remembers it was equal.
            if ws.st_mtime_ns <= ds.st_mtime_ns:
                _link_into_place(want, dst)
            else:
                kept[rel] = stamp
            return False
    if os.path.islink(want):
        if entry is not None and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(dst)
        tmp = dst.with_name(f".s2fault-link-{os.getpid()}-{dst.name}")
        tmp.unlink(missing_ok=True)
        os.symlink(os.readlink(want), tmp)
        os.replace(tmp, dst)
    else:
        if entry is not None and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(dst)
        _write_new(dst, want.read_bytes(), want)
    return True


def _same_bytes(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def _link_into_place(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".s2fault-ln-{os.getpid()}-{dst.name}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        return  # another filesystem: keep the equal copy that is there
    os.replace(tmp, dst)


def seed(tree: Tree, base: Tree) -> None:
    """Start `tree` from `base`: its source as hard links and a real copy of its objects
    (kbuild rewrites objects in place, which must never reach the base through a link).
    The copy keeps mtimes, so kbuild finds the base's objects up to date here too."""
    tree.remove()
    tree.root.mkdir(parents=True)
    source.link_tree(base.src, tree.src, exclude=(OBJ_DIR,))
    r = subprocess.run(["cp", "-a", "--reflink=auto", str(base.obj), str(tree.obj)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise InfraError(f"copying build directory {base.obj}: {r.stderr.strip()}")
    tree.save_state(**{k: v for k, v in base.state().items() if k != "clean"})
