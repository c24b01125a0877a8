"""Kernel config fragments: which symbols they request, and whether they survived.

Fragments live in kernel_configs/ and are merged onto allnoconfig by
scripts/kconfig/merge_config.sh (through tuxmake). olddefconfig silently drops a
symbol whose dependencies are unmet; a build with a dropped symbol is not the
kernel that was asked for, so it stops and names the symbol.
"""

from __future__ import annotations

import re
from pathlib import Path

from s2fault import project
from s2fault.errors import InputError

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")

# The page size is a fragment: pages-64k (512M PMD blocks) is the default.
DEFAULT_FRAGMENTS = ("pages-64k", "nested-host", "debug")


def parse(text: str) -> dict[str, str]:
    """Symbols of a fragment or .config: name -> value ('n' for "is not set")."""
    symbols: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        m = _SET.match(line)
        if m:
            symbols[m.group(1)] = m.group(2)
            continue
        m = _UNSET.match(line)
        if m:
            symbols[m.group(1)] = "n"
    return symbols


def fragments_for(pages: str | None, extra: list[str] | None = None) -> list[str] | None:
    """The default fragment set with another page size, plus extra fragments."""
    if not pages and not extra:
        return None
    base = [f"pages-{pages}" if pages else DEFAULT_FRAGMENTS[0], *DEFAULT_FRAGMENTS[1:]]
    return base + list(extra or [])


def fragment_paths(names: list[str] | tuple[str, ...] | None = None) -> list[Path]:
    """Resolve fragment names (kernel_configs/<name>.config) or paths, in merge order."""
    paths = []
    for name in names or DEFAULT_FRAGMENTS:
        path = Path(name)
        if not path.is_file():
            path = project.configs_dir() / f"{name}.config"
        if not path.is_file():
            known = sorted(p.stem for p in project.configs_dir().glob("*.config"))
            raise InputError(f"config fragment '{name}' not found (known: {', '.join(known)})")
        paths.append(path)
    return paths


def requested(fragments: list[Path]) -> dict[str, str]:
    """What the fragments ask for, later fragments overriding earlier ones."""
    merged: dict[str, str] = {}
    for path in fragments:
        merged.update(parse(path.read_text()))
    return merged


def dropped(fragments: list[Path], config_text: str) -> list[str]:
    """Requested symbols whose final value differs, as 'CONFIG_X=y (got n)'."""
    final = parse(config_text)
    problems = []
    for name, want in requested(fragments).items():
        got = final.get(name, "n")
        if got != want:
            problems.append(f"{name}={want} (got {got})")
    return problems


def page_size_of(config_text: str) -> int | None:
    symbols = parse(config_text)
    for size, name in ((4096, "4K"), (16384, "16K"), (65536, "64K")):
        if symbols.get(f"CONFIG_ARM64_{name}_PAGES") == "y":
            return size
    return None


# What every booted kernel needs, whoever built it: the nested host and the detectors
# whose reports are the verdict (a build directory's .config is checked against them).
REQUIRED_FRAGMENTS = ("nested-host", "debug")


def missing_required(config_text: str) -> list[str]:
    """The CONFIG_X=y of the required fragments that a .config does not have, as
    'CONFIG_X (is n)'. Values that are not y (NR_CPUS=64) are the lab's choice, not needs."""
    final = parse(config_text)
    return [f"{name} (is {final.get(name, 'n')})"
            for name, want in requested(fragment_paths(REQUIRED_FRAGMENTS)).items()
            if want == "y" and final.get(name, "n") != "y"]
