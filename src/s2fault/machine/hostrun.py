"""host-run: the workload on the running kernel of an arm64 KVM host (no QEMU).

The same VMM as the nested runs (guests/vmm.c, shipped in the package as bin/s2fault-vmm)
runs on the host's own /dev/kvm; Python plays the part init plays in the guest image:
it reports the preconditions, starts the VMM, and reads the kernel's messages, from
/dev/kmsg and from the start of the workload only. What it collects is one console
text in the nested runs' format, judged by the same analyzer and verdict.

What it changes on the host (HostChanges), each put back on exit, SIGINT and SIGTERM:
  - nr_hugepages of the block size (sysfs), raised only by the pages the workload lacks;
  - the sysctls the VMM may write (watchdog_thresh, soft_watchdog), restored when changed.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import platform
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from s2fault import project
from s2fault.errors import InfraError, InputError, NotApplicable
from s2fault.judge import lines as workload_lines
from s2fault.judge.rules import HOST_DIC as DIC_REASON
from s2fault.judge.rules import NO_LOCKDEP, judge
from s2fault.judge.verdict import HostPreconditions, Verdict
from s2fault.machine import MachineRun, profiles
from s2fault.outcome import Outcome

RUNNER = "host-run"
VMM = "s2fault-vmm"
HUGEPAGES_SYSFS = Path("/sys/kernel/mm/hugepages")
# What the VMM may write (--arm-watchdog), read before it starts and put back after.
SYSCTLS = (Path("/proc/sys/kernel/watchdog_thresh"), Path("/proc/sys/kernel/soft_watchdog"))
# After the VMM's own timeout, how long before host-run kills it (init's VMM_GRACE_S).
VMM_GRACE_S = 30
POLL = 0.2
# Workloads that would change more than hugepages and two sysctls, or need more than
# the VMM: not run on a host someone else owns.
REFUSED = {
    "alloc-failure": "it arms failslab (debugfs) to fail kernel allocations",
    "kvm-selftests": "it needs the KVM selftests built from the running kernel's source",
}


def require_host() -> None:
    """One line, exit 2, anywhere but an arm64 host with /dev/kvm, and without root."""
    machine = platform.machine()
    if machine not in ("aarch64", "arm64") or not os.path.exists("/dev/kvm"):
        where = machine if machine not in ("aarch64", "arm64") else "arm64 without /dev/kvm"
        raise InfraError(
            f"host-run needs an arm64 host with /dev/kvm (this is {where}); "
            "`s2fault run --kernel IMAGE` runs the workload nested under QEMU here")
    if os.geteuid() != 0:
        raise InfraError("host-run needs root: it reserves hugepages through sysfs, "
                         "reads /dev/kmsg and restores what it changed")


def check_workload(name: str) -> None:
    if name in REFUSED:
        raise InputError(f"workload {name} does not run under host-run: {REFUSED[name]}")


def vmm_binary() -> Path:
    """The static aarch64 VMM: package data in an installed package (see setup.py);
    in a checkout, the guest build's own (the same binary the initramfs holds)."""
    packaged = project.PACKAGE / "bin" / VMM
    if packaged.is_file():
        return packaged
    from s2fault import guest

    return guest.build().bin_dir / VMM


@dataclass
class HostFacts:
    """What host-run reads from the host before it changes anything."""

    machine: str
    kernel: str
    page_size: int
    block_bytes: int
    ctr_el0: str
    dic: bool
    debug_locks: int | None  # None: no lockdep (no /proc/lockdep_stats)
    config_source: str | None
    config: dict[str, str] = field(default_factory=dict)
    config_text: str = ""

    @property
    def hugepage_kb(self) -> int:
        return self.block_bytes >> 10

    @property
    def lockdep(self) -> str:
        if self.debug_locks is None:
            return NO_LOCKDEP
        return "on" if self.debug_locks else "off (debug_locks=0 before the workload)"

    def to_dict(self) -> dict[str, Any]:
        wanted = ("CONFIG_KVM", "CONFIG_PROVE_LOCKING", "CONFIG_SOFTLOCKUP_DETECTOR",
                  "CONFIG_HUGETLBFS", "CONFIG_ARM64_64K_PAGES", "CONFIG_ARM64_16K_PAGES",
                  "CONFIG_ARM64_4K_PAGES")
        return {
            "machine": self.machine, "kernel": self.kernel, "page_size": self.page_size,
            "block_bytes": self.block_bytes, "ctr_el0": self.ctr_el0, "dic": self.dic,
            "lockdep": self.lockdep, "config_source": self.config_source,
            "config": {k: self.config.get(k) for k in wanted},
        }


def read_facts(vmm: Path) -> HostFacts:
    r = subprocess.run([str(vmm), "--facts"], capture_output=True, text=True, timeout=30)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("S2FAULT-FACTS ")), None)
    if r.returncode != 0 or line is None:
        why = (r.stderr or r.stdout).strip().splitlines()[-1:] or [f"exit {r.returncode}"]
        raise InfraError(f"{vmm} --facts failed: {why[0]}")
    facts = json.loads(line.split(" ", 1)[1])
    config_source, config_text = kernel_config()
    return HostFacts(
        machine=platform.machine(), kernel=platform.release(),
        page_size=int(facts["page_size"]), block_bytes=int(facts["block_bytes"]),
        ctr_el0=facts["ctr_el0"], dic=bool(facts["dic"]), debug_locks=debug_locks(),
        config_source=config_source, config=parse_config(config_text),
        config_text=config_text,
    )


def cpu_id(machine: str) -> str:
    """The CPU by its MIDR_EL1 (implementer, part: 0x41 0xd0c is a Neoverse N1),
    where the kernel exposes it; else the machine name."""
    path = Path("/sys/devices/system/cpu/cpu0/regs/identification/midr_el1")
    try:
        midr = int(path.read_text(), 16)
    except (OSError, ValueError):
        return machine
    return f"{machine} MIDR {midr:#x} (implementer {midr >> 24:#x}, part {(midr >> 4) & 0xfff:#x})"


def debug_locks() -> int | None:
    try:
        text = Path("/proc/lockdep_stats").read_text()
    except OSError:
        return None
    m = re.search(r"debug_locks:\s*(\d+)", text)
    return int(m.group(1)) if m else None


def kernel_config(release: str | None = None) -> tuple[str | None, str]:
    """The running kernel's config and where it came from: /proc/config.gz, else
    /boot/config-RELEASE; (None, "") when neither is there."""
    release = release or platform.release()
    for path in (Path("/proc/config.gz"), Path(f"/boot/config-{release}")):
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode(errors="replace")
        return str(path), text
    return None, ""


def parse_config(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            out[line[2:-len(" is not set")]] = "n"
    return out


class HostChanges:
    """Every file host-run writes, with what it held before; restore() puts each back,
    last change first. Used as a context manager around the whole run."""

    def __init__(self) -> None:
        self.saved: list[tuple[Path, str]] = []
        self.problems: list[str] = []

    def remember(self, path: Path) -> str | None:
        try:
            value = path.read_text().strip()
        except OSError:
            return None
        if all(p != path for p, _ in self.saved):
            self.saved.append((path, value))
        return value

    def write(self, path: Path, value: str) -> None:
        self.remember(path)
        try:
            path.write_text(value)
        except OSError as e:
            raise InfraError(f"cannot write {value} to {path}: {e.strerror}") from e

    def restore(self) -> None:
        for path, value in reversed(self.saved):
            try:
                if path.read_text().strip() != value:
                    path.write_text(value)
            except OSError as e:
                self.problems.append(f"could not restore {path} to {value}: {e.strerror}")
        self.saved.clear()

    def __enter__(self) -> HostChanges:
        return self

    def __exit__(self, *exc: object) -> None:
        # A second ^C while restoring must not leave the host half put back.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.restore()
        finally:
            signal.signal(signal.SIGINT, old)


def reserve_hugepages(changes: HostChanges, block_bytes: int, count: int) -> dict[str, Any]:
    """At least `count` free hugepages of `block_bytes`, raising nr_hugepages only by
    what is missing. A host that cannot find the memory is a skip, never an error."""
    kb = block_bytes >> 10
    folder = HUGEPAGES_SYSFS / f"hugepages-{kb}kB"
    if not folder.is_dir():
        raise InfraError(f"no {kb} kB hugepages on this kernel ({folder} missing; needs "
                         "CONFIG_HUGETLBFS=y)")
    nr = folder / "nr_hugepages"
    before = int(changes.remember(nr) or 0)
    free = _available(folder)
    if free < count:
        changes.write(nr, str(before + count - free))
        free = _available(folder)
    total = int(nr.read_text())
    if free < count:
        raise NotApplicable(
            f"not applicable: no memory for {count} hugepage(s) of {block_bytes >> 20} MiB "
            f"(nr_hugepages {before} -> {total}, {free} free)")
    return {"hugepages_total": total, "hugepages_free": free, "hugepage_kb": kb,
            "nr_hugepages_before": before}


def _available(folder: Path) -> int:
    """Free pages no mapping has reserved yet (another user's MAP_HUGETLB counts
    against free_hugepages only once it touches its pages)."""
    free = int((folder / "free_hugepages").read_text())
    return free - int((folder / "resv_hugepages").read_text())


class Kmsg:
    """/dev/kmsg from now on: records written before open() are skipped (SEEK_END)."""

    def __init__(self) -> None:
        try:
            self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise InfraError(f"cannot read /dev/kmsg: {e.strerror}") from e
        os.lseek(self.fd, 0, os.SEEK_END)
        self.lines: list[str] = []
        self.lost = 0

    def drain(self) -> None:
        while True:
            try:
                record = os.read(self.fd, 8192)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.EPIPE:  # overwritten before we read them
                    self.lost += 1
                    continue
                raise
            if not record:
                return
            self.lines.append(console_line(record.decode("utf-8", errors="replace")))

    def close(self) -> None:
        os.close(self.fd)


def console_line(record: str) -> str:
    """One /dev/kmsg record ("prio,seq,usec,flags;text" then " KEY=value" lines) as the
    serial console prints it with CONFIG_PRINTK_TIME: "[   12.345678] text"."""
    head, _, rest = record.partition(";")
    text = rest.split("\n", 1)[0]
    # /dev/kmsg escapes non-printable bytes as \xNN; a tab is the only one splats use.
    text = text.replace("\\x09", "\t")
    fields = head.split(",")
    try:
        usec = int(fields[2])
    except (IndexError, ValueError):
        return text
    return f"[{usec // 1_000_000:5d}.{usec % 1_000_000:06d}] {text}"


def vmm_argv(vmm: Path, prof: profiles.Profile) -> list[str]:
    """The VMM's arguments, as init passes them in the nested runs (guests/init.c)."""
    argv = [str(vmm), "--vcpus", str(prof.vcpus), "--rounds", str(prof.rounds),
            "--timeout", str(prof.vmm_timeout),
            "--arm-watchdog", str(prof.watchdog_thresh or 0)]
    plain = profiles.Profile()
    for key in ("vms", "blocks", "storm", "remap", "first_touch"):
        value = getattr(prof, key)
        if value != getattr(plain, key):
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def _marker(name: str, obj: dict[str, Any]) -> str:
    return f"S2FAULT-{name} {json.dumps(obj, separators=(',', ':'))}"


def run(prof: profiles.Profile, outdir: Path) -> Verdict:
    """Run the workload of `prof` on this host and judge it; the host is left as found."""
    require_host()
    check_workload(prof.workload)
    vmm = vmm_binary()
    facts = read_facts(vmm)
    outdir.mkdir(parents=True, exist_ok=True)
    if facts.dic:
        # Nothing is reserved or run: the path under test does not exist on this CPU.
        return _finish(Verdict(Outcome.SKIP, DIC_REASON), facts, prof, outdir, None)
    with HostChanges() as changes:
        for path in SYSCTLS:
            changes.remember(path)
        try:
            pages = reserve_hugepages(changes, facts.block_bytes, prof.hugepages)
        except NotApplicable as e:
            return _finish(Verdict(Outcome.SKIP, e.message), facts, prof, outdir, None)
        saved = list(changes.saved)
        v = _run_vmm(vmm, prof, facts, pages, outdir)
    # What the host holds now, beside what it held: the evidence that it was put back.
    if v.host_preconditions is not None:
        v.host_preconditions = replace(v.host_preconditions, restored={
            str(path): {"before": value, "after": _read_text(path)} for path, value in saved})
    if changes.problems:
        v.reason += "; " + "; ".join(changes.problems)
        v.verdict = Outcome.ERROR if v.verdict is Outcome.PASS else v.verdict
    (outdir / "result.json").write_text(json.dumps(v.to_dict(), indent=2) + "\n")
    return v


def _run_vmm(vmm: Path, prof: profiles.Profile, facts: HostFacts, pages: dict[str, Any],
             outdir: Path) -> Verdict:
    console = outdir / "console.log"
    out_path, err_path = outdir / "vmm-stdout.log", outdir / "vmm-stderr.log"
    argv = vmm_argv(vmm, prof)
    init = {"kernel": facts.kernel, "page_size": facts.page_size, "kvm": True,
            "debug_locks": facts.debug_locks, **pages}
    kmsg = Kmsg()
    start = time.monotonic()
    outcome, reason = "exited", ""
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            # A session of its own: a multi-VM VMM's processes are killed together.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True)
        try:
            deadline = start + prof.vmm_timeout + VMM_GRACE_S
            while proc.poll() is None:
                kmsg.drain()
                if time.monotonic() > deadline:
                    outcome = "timeout"
                    reason = (f"{VMM} did not exit {VMM_GRACE_S} s after its "
                              f"{prof.vmm_timeout} s timeout; killed")
                    break
                time.sleep(POLL)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            _killpg_quietly(proc.pid)
        kmsg.drain()
    finally:
        kmsg.close()
    seconds = time.monotonic() - start
    if outcome == "exited":
        reason = f"{VMM} exited with {proc.returncode}"
    post = {"vmm_exit": proc.returncode, "debug_locks": debug_locks(),
            "hugepages_free": _free_hugepages(facts), "run": 1,
            "watchdog_thresh": _read_int(SYSCTLS[0]), "soft_watchdog": _read_int(SYSCTLS[1])}
    text = "\n".join([
        _marker("INIT", init), *kmsg.lines,
        *out_path.read_text(errors="replace").splitlines(),
        _marker("POST", post), "S2FAULT-DONE", ""])
    console.write_text(text)
    machine = MachineRun(outcome=outcome, reason=reason, exit_code=proc.returncode,
                         seconds=seconds, console_log=console, qmp_log=out_path,
                         stderr_log=err_path, argv=argv)
    v = judge(machine, text, workload_lines.parse(text), prof.watchdog_thresh, runner=RUNNER)
    v.machine = {"outcome": outcome, "reason": reason, "exit_code": proc.returncode,
                 "seconds": round(seconds, 2), "console_log": str(console),
                 "vmm_stdout": str(out_path), "vmm_stderr": str(err_path), "argv": argv,
                 "kmsg_records_lost": kmsg.lost}
    return _finish(v, facts, prof, outdir, console)


def _killpg_quietly(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _free_hugepages(facts: HostFacts) -> int | None:
    return _read_int(HUGEPAGES_SYSFS / f"hugepages-{facts.hugepage_kb}kB" / "free_hugepages")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _finish(v: Verdict, facts: HostFacts, prof: profiles.Profile, outdir: Path,
            console: Path | None) -> Verdict:
    from s2fault import __version__

    v.runner = RUNNER
    v.host_preconditions = HostPreconditions(facts.to_dict(), facts.lockdep, facts.dic)
    v.profile = prof.to_dict() | {"page_size": facts.page_size, "runner": RUNNER}
    v.versions = {"s2fault": __version__, "qemu": None, "cpu": cpu_id(facts.machine),
                  "kernel": facts.kernel}
    config = None
    if facts.config_text:
        # Beside the console, as the nested runs keep the kernel's .config.
        config = outdir / "kernel.config"
        config.write_text(facts.config_text)
    v.artifacts = v.artifacts | {"dir": str(outdir),
                                 "console_log": str(console) if console else None,
                                 "config": str(config) if config else None,
                                 "config_source": facts.config_source}
    (outdir / "result.json").write_text(json.dumps(v.to_dict(), indent=2) + "\n")
    return v
