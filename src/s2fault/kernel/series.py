"""A variant's series against a source tree: does it apply, and what does it make of
the files it touches.

patch(1) applies the series, as it always did, but to copies of only the files the
series names: the source tree stays pristine, and a check costs milliseconds, not a
copy of 80k files. A patch that does not apply raises BuildError naming its hunk.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from s2fault import hosttools
from s2fault.errors import BuildError
from s2fault.kernel import variants


def series_overlay(variant: variants.Variant, tree: Path) -> dict[str, bytes | None]:
    """The content of every file the variant's series touches, once applied to `tree`
    (None: the series deletes it). The series is applied with patch(1), as it always
    was, to copies of only those files: `tree` stays pristine. Raises BuildError
    naming the patch and hunk that does not apply."""
    if not variant.patches:
        return {}
    touched = sorted(set().union(*(_touched_files(p) for p in variant.patches)))
    with tempfile.TemporaryDirectory(prefix="s2fault-apply-") as scratch_name:
        scratch = Path(scratch_name)
        for rel in touched:
            original = tree / rel
            if original.is_file() and not original.is_symlink():
                (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(original, scratch / rel)
        apply_series(variant, scratch)
        return {rel: (scratch / rel).read_bytes() if (scratch / rel).is_file() else None
                for rel in touched}


def apply_series(variant: variants.Variant, tree: Path) -> None:
    """Apply the variant's patch chain; a patch that does not apply names its hunk."""
    patch_bin = hosttools.require("patch")
    for patch in variant.patches:
        r = subprocess.run(
            [patch_bin, "-p1", "--forward", "--batch", "--no-backup-if-mismatch", "-i", str(patch)],
            cwd=tree, capture_output=True, text=True,
        )
        if r.returncode != 0:
            raise BuildError(
                f"patch {patch.parent.name}/{patch.name} does not apply: {_patch_failure(r.stdout)}"
            )


def check_series(variant: variants.Variant, tree: Path) -> None:
    """Check that the variant's whole chain applies to `tree`, without building.

    The same patch(1) run as the build, so fuzz and offsets are judged alike, but on
    copies of only the files the chain touches: milliseconds, not a copy of 80k files.
    A later patch sees what the earlier ones did, as in the build. Raises BuildError
    naming the patch and the hunk."""
    series_overlay(variant, tree)


def _touched_files(patch: Path) -> set[str]:
    """Paths (after -p1) a patch names; a stray match is harmless, it just is not copied."""
    names: set[str] = set()
    for line in patch.read_text(errors="replace").splitlines():
        m = re.match(r"diff --git a/(\S+) b/(\S+)$", line)
        if m:
            names.update(m.groups())
            continue
        m = re.match(r"(?:---|\+\+\+) ([^\t]+)", line)
        if m and m.group(1).strip() != "/dev/null" and "/" in m.group(1):
            names.add(m.group(1).strip().split("/", 1)[1])
            continue
        m = re.match(r"(?:rename|copy) from (\S+)$", line)
        if m:
            names.add(m.group(1))
    # Never outside the tree, whatever a hostile patch says.
    return {n for n in names if not n.startswith("/") and ".." not in Path(n).parts}


def _patch_failure(output: str) -> str:
    current = "?"
    for line in output.splitlines():
        m = re.match(r"patching file (\S+)", line)
        if m:
            current = m.group(1)
        m = re.match(r"(Hunk #\d+ FAILED at \d+)", line)
        if m:
            return f"{m.group(1)} in {current}"
        if "can't find file to patch" in line or "No file to patch" in line:
            return f"file to patch not found ({line.strip()})"
        if "Reversed (or previously applied) patch detected" in line:
            return f"already applied to {current}"
    tail = [line for line in output.splitlines() if line.strip()]
    return tail[-1] if tail else "patch failed"
