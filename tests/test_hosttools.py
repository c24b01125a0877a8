"""Host tools are checked before any work: a missing one is one line naming the binary
and its Debian package, exit 2 (never an Error 127 from inside make)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from conftest import s2fault
from s2fault import hosttools
from s2fault.errors import EXIT_ERROR


def _path_without(tmp_path: Path, *absent: str) -> str:
    """A PATH directory holding every host tool the harness knows except `absent`."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in hosttools.PACKAGES:
        found = shutil.which(tool)
        if found and tool not in absent:
            (bindir / tool).symlink_to(found)
    python = Path(sys.executable)
    return f"{bindir}:{python.parent}"


@pytest.mark.parametrize("command,tool,package", [
    (("build", "--variant", "upstream"), "gcc", "gcc"),
    (("build", "--variant", "upstream"), "bison", "bison"),
    (("check", "--variant", "upstream", "--mode", "functional"), "qemu-system-aarch64",
     "qemu-system-arm"),
    (("check", "--variant", "upstream", "--mode", "functional", "--workload", "kvm-selftests"),
     "rsync", "rsync"),
])
def test_a_missing_host_tool_is_named_with_its_package_before_any_work(
        tmp_path, command, tool, package):
    present = [t for t in hosttools.PACKAGES if t != tool and shutil.which(t)]
    if len(present) < len(hosttools.PACKAGES) - 1:
        pytest.skip("this machine lacks other host tools; `make setup` installs them")
    env = {"PATH": _path_without(tmp_path, tool), "S2FAULT_CACHE": str(tmp_path / "cache")}
    res = s2fault(*command, "--results", str(tmp_path / "r"), env=env) if command[0] == "check" \
        else s2fault(*command, env=env)
    assert res.returncode == EXIT_ERROR, res.stdout + res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == [f"s2fault: error: missing host tool '{tool}' (Debian package: {package})"]
    assert "Traceback" not in res.stderr
    # Nothing was started: no source unpacked, no build directory.
    assert not (tmp_path / "cache" / "sources").exists()
    assert not (tmp_path / "cache" / "work").exists()


def test_several_missing_tools_and_headers_are_named_together(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _path_without(tmp_path, "gcc", "rsync"))
    absent = hosttools.missing("gcc", "rsync", "make", Path("/nonexistent/stdio.h"))
    assert absent == ["'gcc' (Debian package: gcc)", "'rsync' (Debian package: rsync)",
                      "/nonexistent/stdio.h (Debian package: ?)"]
    with pytest.raises(Exception, match="missing host tools: 'gcc'"):
        hosttools.preflight("gcc", "rsync")


def test_the_setup_installs_every_package_a_tool_check_names():
    """A package named by the check that the set-up does not install is a trap for the
    next fresh machine."""
    setup = (Path(__file__).parents[1] / "ci" / "setup-host.sh").read_text()
    named = set(hosttools.PACKAGES.values()) | set(hosttools.FILES.values())
    # binutils comes with the cross compiler; tar with every Debian.
    named -= {"binutils-aarch64-linux-gnu", "tar"}
    missing = sorted(p for p in named if p not in setup.split())
    assert missing == []
