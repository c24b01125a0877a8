"""checkpatch.pl, from the kernel source in the cache, over patches/ and guests/.

Usage: python -m s2fault.lint  (exit 0 when every file is clean)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from s2fault import hosttools, project, source

# Guest C is a userspace program: checkpatch's kernel-only rules do not apply to it
# (execv() wants a char *[] built at run time, hence STATIC_CONST_CHAR_ARRAY).
GUEST_IGNORES = ",".join([
    "STATIC_CONST_CHAR_ARRAY", "SPDX_LICENSE_TAG", "NEW_TYPEDEFS", "CAMELCASE",
    "FILE_PATH_CHANGES", "PREFER_KERNEL_TYPES", "SSCANF_TO_KSTRTO", "AVOID_EXTERNS",
    "CONSTANT_COMPARISON", "PREFER_DEFINED_ATTRIBUTE_MACRO", "STRLCPY", "PREFER_PRINTF",
])


def checkpatch_path() -> Path:
    tree = source.resolve("debian", project.cache_dir()).tree
    return tree / "scripts" / "checkpatch.pl"


def run(paths: list[Path] | None = None) -> list[tuple[Path, str]]:
    """(file, report) for every file checkpatch complains about."""
    perl = hosttools.require("perl")
    script = checkpatch_path()
    problems = []
    patches = sorted(project.patches_dir().glob("*/*.patch"))
    guests = sorted(p for ext in ("*.c", "*.h") for p in project.guests_dir().glob(ext))
    for path in paths or patches + guests:
        # Commit ids cited in messages can only be checked inside a linux.git that has them.
        args = [perl, str(script), "--no-tree", "--terse", "--show-types",
                "--ignore=UNKNOWN_COMMIT_ID"]
        if path.suffix != ".patch":
            args += ["-f", f"--ignore={GUEST_IGNORES}"]
        r = subprocess.run([*args, str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            problems.append((path, (r.stdout + r.stderr).strip()))
    return problems


def main() -> int:
    problems = run()
    for path, text in problems:
        print(f"{path}:\n{text}\n")
    print(f"checkpatch: {len(problems)} file(s) with problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
