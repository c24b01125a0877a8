"""The kernel's own KVM selftests as a workload: built from the same source, run inside.

build() cross-compiles a few tests of `tools/testing/selftests/kvm` statically
from the kernel source s2fault builds from, and packs them with a plan (which
test, which arguments, which timeout) into a second newc cpio. QEMU gets the
base initramfs and this one concatenated: Linux unpacks concatenated archives
in order. In the guest, init starts /bin/s2fault-ksft (guests/ksft.c) instead
of the VMM; it runs the plan and prints one `S2FAULT-RESULT` line, which
parse() turns into metrics and a judgement.

The build happens in a scratch copy of `tools/` (the selftests' makefiles
write generated headers and probe files into the tree they run in) with the
UAPI headers installed out of tree, so the cached source stays pristine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2fault import cache, guest, hosttools, project
from s2fault import source as sources
from s2fault.errors import BuildError
from s2fault.outcome import Outcome

RECIPE = "s2fault-kvm-selftests-2"
CROSS_COMPILE = "aarch64-linux-gnu-"
KSFT_SKIP = 4
CPIO = "kvm-selftests.cpio"

# Guest mode 8 of the KVM selftests is VM_MODE_P40V48_64K: a 40-bit IPA (every
# arm64 KVM host offers it) and 64K guest pages, which keeps the guest's own page
# tables and the number of guest accesses small under TCG.
_MODE = "8"


@dataclass(frozen=True)
class Selftest:
    """One selftest of the plan. `target` is its make target below the kvm folder;
    `args` may hold @VCPUS@ and @HUGEPAGE@, filled in by the runner in the guest."""

    target: str
    args: tuple[str, ...]
    # Seconds of wall time under TCG: about 8x the slowest measured (8 vCPUs on a
    # loaded 2-core host, interval-tree-v1 with its splats: 6 s), and under the
    # machine's no-output timeout, so a stuck test is reported by the runner as a
    # timeout instead of the whole boot ending without a result.
    timeout: int
    why: str

    @property
    def name(self) -> str:
        return Path(self.target).name


# The tests on the stage-2 fault path that build statically with Debian's cross libc
# and run in this lab's kernel config. Left out: aarch64/page_fault_test (its
# userfaultfd cases need CONFIG_USERFAULTFD, off here, and would fail instead of
# skipping), access_tracking_perf_test (needs CONFIG_IDLE_PAGE_TRACKING: it would
# only skip), memslot_perf_test (memslot updates, not faults; minutes under TCG).
SELFTESTS = (
    Selftest(
        "kvm_page_table_test",
        ("-m", _MODE, "-s", "anonymous_hugetlb", "-b", "@HUGEPAGE@", "-v", "@VCPUS@"),
        timeout=45,
        why="one hugetlb block (512M with 64K pages) mapped by stage-2 faults of all "
        "vCPUs at once, then write-protected, split and collapsed again",
    ),
    Selftest(
        "demand_paging_test",
        ("-m", _MODE, "-b", "32M", "-v", "@VCPUS@"),
        timeout=45,
        why="every vCPU faults in fresh pages in parallel (first-touch stage-2 faults, "
        "under the read side of mmu_lock)",
    ),
    Selftest(
        "dirty_log_perf_test",
        ("-m", _MODE, "-b", "32M", "-v", "@VCPUS@", "-i", "2"),
        timeout=45,
        why="dirty logging: write-protection, then parallel permission faults through "
        "kvm_pgtable_stage2_relax_perms(), the walker the exec fault also takes",
    ),
)


def plan_text(tests: tuple[Selftest, ...] = SELFTESTS) -> str:
    """The runner's plan file: `NAME TIMEOUT ARG...` per line (see guests/ksft.c)."""
    lines = ["# s2fault kvm-selftests plan: NAME TIMEOUT_S ARG..."]
    lines += [" ".join([t.name, str(t.timeout), *t.args]) for t in tests]
    return "\n".join(lines) + "\n"


def budget_seconds(tests: tuple[Selftest, ...] = SELFTESTS) -> int:
    """The runner's --timeout (the profile's vmm_timeout) that lets every test use
    its own timeout."""
    return sum(t.timeout for t in tests) + 15


def build(
    src: sources.Source | str | None = None,
    cache_root: Path | None = None,
    tests: tuple[Selftest, ...] = SELFTESTS,
) -> Path:
    """The cpio of the selected selftests and their plan, built once per source,
    toolchain and plan, and cached. `src` is the command's resolved source (the one its
    kernels are built from); a spec string is resolved here."""
    cache_root = cache_root or project.cache_dir()
    src = sources.pin(src, cache_root)
    hosttools.preflight(*hosttools.SELFTESTS)
    gcc = hosttools.require(CROSS_COMPILE + "gcc")
    version = subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout
    toolchain = version.splitlines()[0] if version else ""
    plan = plan_text(tests)
    targets = sorted(t.target for t in tests)
    key = cache.key_of(RECIPE, src.identity, toolchain, plan, *targets)
    entry = cache.Entry("selftests", key, cache_root)
    if entry.verify():
        return entry.dir / CPIO
    with cache.locked(entry.lock_path):
        if entry.verify():
            return entry.dir / CPIO
        sources.check_unchanged(src)
        with entry.staging() as staged:
            started = time.monotonic()
            binaries = _compile(src.tree, staged / "scratch", targets)
            files = {f"ksft/{Path(t).name}": data for t, data in binaries.items()}
            files["ksft/plan"] = plan.encode()
            (staged / CPIO).write_bytes(guest.pack_initramfs(files))
            shutil.rmtree(staged / "scratch")
            (staged / "plan").write_text(plan)
            entry.publish(staged, {
                "source": src.description,
                "source_identity": src.identity,
                "toolchain": toolchain,
                "targets": targets,
                "build_seconds": round(time.monotonic() - started, 1),
            })
    return entry.dir / CPIO


def _compile(tree: Path, scratch: Path, targets: list[str]) -> dict[str, bytes]:
    """Build `targets` from a scratch copy of the tree's tools/; return target -> ELF."""
    src = scratch / "src"
    (src / "scripts").mkdir(parents=True)
    (src / "arch" / "arm64").mkdir(parents=True)
    try:
        shutil.copytree(tree / "tools", src / "tools", symlinks=True)
        shutil.copy2(tree / "scripts" / "subarch.include", src / "scripts")
        # The sysreg table tools/arch/arm64/tools turns into sysreg-defs.h.
        shutil.copytree(tree / "arch" / "arm64" / "tools", src / "arch" / "arm64" / "tools")
    except OSError as e:
        raise BuildError(f"kvm selftests: cannot copy {tree}/tools: {e}") from e
    if not (src / "tools" / "testing" / "selftests" / "kvm" / "Makefile").is_file():
        raise BuildError(f"kvm selftests: {tree} has no tools/testing/selftests/kvm")
    jobs = str(os.cpu_count() or 1)
    cross = ["ARCH=arm64", f"CROSS_COMPILE={CROSS_COMPILE}"]
    # UAPI headers out of tree (O=): nothing is written into the source.
    _make(["-C", str(tree), f"O={scratch / 'kbuild'}", *cross,
           f"INSTALL_HDR_PATH={src / 'usr'}", "headers_install"], "headers_install")
    out = scratch / "out"
    # LDFLAGS on the command line replaces the Makefile's own (-pthread -no-pie).
    # No build id and no scratch paths in the binaries: the same source and
    # toolchain give the same bytes.
    _make(["-C", str(src / "tools" / "testing" / "selftests" / "kvm"), f"-j{jobs}", *cross,
           f"OUTPUT={out}", "LDFLAGS=-static -pthread -no-pie -Wl,--build-id=none",
           f"EXTRA_CFLAGS=-ffile-prefix-map={scratch}=.",
           *[str(out / t) for t in targets]], "kvm selftests")
    strip = hosttools.require(CROSS_COMPILE + "strip")
    binaries = {}
    for t in targets:
        # Debug info is most of each binary and nobody reads it inside the guest.
        subprocess.run([strip, "--strip-debug", str(out / t)], check=True)
        binaries[t] = (out / t).read_bytes()
    return binaries


def _make(args: list[str], what: str) -> None:
    r = subprocess.run(["make", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise BuildError(f"{what} failed: {first_error(r.stdout + r.stderr)}")


def first_error(log: str) -> str:
    """The first compiler or make error of a build log, in one line."""
    lines = log.splitlines()
    for marker in (" error: ", "error:", "*** ", "Error "):
        for line in lines:
            if marker in line:
                return line.strip()[:300]
    return (lines[-1].strip() if lines else "no output")[:300]


def parse(result: dict[str, Any]) -> dict[str, Any]:
    """Metrics of a `kvm-selftests` S2FAULT-RESULT line, and what they say.

    `judgement` is (verdict, reason): fail when a test failed (the kernel
    misbehaved: a selftest's assertion is a statement about KVM) or did not finish
    in its timeout (under TCG the timeouts carry a wide margin, so a test that
    overruns one is stuck, typically in the kernel); error when the runner itself
    could not do its job or a test was never run; pass when every test passed or
    skipped with a reason. A skip without a reason proves nothing, so it is an error.
    """
    tests = list(result.get("selftests") or [])
    counts = {s: 0 for s in ("pass", "fail", "skip", "timeout")}
    for t in tests:
        counts[t.get("status")] = counts.get(t.get("status"), 0) + 1
    metrics = {
        "selftests": [
            {
                "name": t.get("name"),
                "args": list(t.get("args") or []),
                "status": t.get("status"),
                "exit": t.get("exit"),
                "seconds": t.get("seconds"),
                "skip_reason": t.get("skip_reason") or None,
                "assertion": t.get("assertion") or None,
            }
            for t in tests
        ],
        "counts": counts,
        "seconds": round(sum(float(t.get("seconds") or 0) for t in tests), 2),
        "vcpus": result.get("vcpus"),
        "dic": result.get("dic"),
        "ctr_el0": result.get("ctr_el0"),
        "errors": list(result.get("errors") or []),
    }
    metrics["judgement"] = _judge(metrics)
    return metrics


def _judge(m: dict[str, Any]) -> tuple[Outcome, str]:
    tests = m["selftests"]
    failed = [t for t in tests if t["status"] in ("fail", "timeout")]
    if failed:
        t = failed[0]
        what = (f"timed out after {t['seconds']} s" if t["status"] == "timeout"
                else f"exit {t['exit']}" + (f": {t['assertion']}" if t["assertion"] else ""))
        more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
        return Outcome.FAIL, f"selftest {t['name']} {what}{more}"
    if m["errors"]:
        return Outcome.ERROR, f"could not judge: selftests runner: {m['errors'][0]}"
    if not tests:
        return Outcome.ERROR, "could not judge: no selftest ran"
    if m["dic"]:
        return Outcome.SKIP, (f"not applicable: CTR_EL0.DIC=1 (CTR_EL0={m['ctr_el0']}): the "
                        "I-cache invalidation under test never runs")
    bare = [t["name"] for t in tests if t["status"] == "skip" and not t["skip_reason"]]
    if bare:
        return Outcome.ERROR, f"could not judge: selftest {bare[0]} skipped without a reason"
    unknown = [t["name"] for t in tests if t["status"] not in ("pass", "skip")]
    if unknown:
        return Outcome.ERROR, f"could not judge: selftest {unknown[0]} has no known status"
    c = m["counts"]
    skipped = "".join(f"; {t['name']} skipped: {t['skip_reason']}"
                      for t in tests if t["status"] == "skip")
    return Outcome.PASS, f"{c['pass']} selftests passed, {c['skip']} skipped{skipped}"
