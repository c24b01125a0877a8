"""Machine profiles: what QEMU emulates, how the workload is sized, how long to wait.

Everything that varies between runs is a field here, with the two modes as
named presets; the kernel command line and the timeout table live here too,
so no other module holds a literal for them.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import subprocess
from dataclasses import dataclass

from . import hosttools
from .errors import InfraError, InputError

QEMU = "qemu-system-aarch64"
RUNNERS = ("qemu", "host-run")
HOST_RUN = "host-run"
HOST_RUN_PROGRAM = "s2fault-host-run"  # guests/host_run.c


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `no_output`: console silent that long means the guest is stuck;
    `after_splat`: the same once the kernel has dumped a stack (it already misbehaved,
    and a kernel that then hangs need not be waited for as long); `total`: a whole
    boot + workload + power-off."""

    no_output: float
    total: float
    after_splat: float
    qmp_connect: float = 20.0


# One table, scaled by accelerator and dilation (TCG is slower than KVM; dilation
# runs single-threaded TCG and stretches everything).
TIMEOUTS = {
    ("kvm", False): Timeouts(no_output=30, total=120, after_splat=10),
    ("tcg", False): Timeouts(no_output=60, total=300, after_splat=20),
    ("tcg", True): Timeouts(no_output=120, total=900, after_splat=60),
}


@dataclass(frozen=True)
class Profile:
    name: str = "functional"
    accel: str = "tcg"
    cpu: str | None = None  # None: chosen from the QEMU version (see cpu_model())
    smp: int | None = None  # None: chosen from the vCPU count
    memory_mb: int | None = None  # None: chosen from the block size
    vcpus: int = 8
    rounds: int = 5  # exec-fault rounds per boot; round 0 is a warm-up (see workload.py)
    icount_shift: int | None = None  # dilation: every instruction costs 2^N ns
    watchdog_thresh: int | None = None  # armed by the VMM just before the exec phase
    kvm_mode: str | None = None  # kvm-arm.mode= (e.g. nvhe); None: the kernel's default
    vmm_timeout: int = 60
    no_output_timeout: float | None = None  # override of the table, for tests
    # The workload's shape (see workloads.py, which names the combinations):
    workload: str = "exec-fault"
    vms: int = 1  # VMs (VMM processes) released together
    blocks: int = 1  # huge blocks per VM, exec-faulted in turn
    storm: int = 0  # of the vCPUs, how many run I-cache maintenance instead of faulting
    remap: str = "memslot"  # how a round forgets the block: memslot | dontneed
    first_touch: str = "data"  # the block's first access: data (then exec) | exec
    fail_alloc: int = 0  # slab allocations under the KVM fault handler to fail (failslab)
    program: str = "s2fault-vmm"  # what init runs (/bin/<program>)
    # qemu: init runs the VMM; host-run (`--via host-run`): init runs `s2fault host-run`
    # from an arm64 Python root filesystem, which reserves the hugepages itself.
    runner: str = "qemu"

    @property
    def hugepages(self) -> int:
        """Boot-time huge pages the workload needs: one per block per VM."""
        return self.vms * self.blocks

    @property
    def dilated(self) -> bool:
        return self.icount_shift is not None

    def timeouts(self) -> Timeouts:
        t = TIMEOUTS[(self.accel, self.dilated)]
        if self.no_output_timeout is not None:
            t = dataclasses.replace(t, no_output=self.no_output_timeout,
                                    after_splat=min(t.after_splat, self.no_output_timeout))
        if self.fail_alloc:
            # failslab dumps a stack by design; whether the vCPUs come back after it is
            # the VMM's to say (it lists the stuck ones at its timeout), so the machine
            # waits past that timeout instead of ending the run at the quiet console.
            t = dataclasses.replace(t, after_splat=max(t.after_splat, self.vmm_timeout + 10),
                                    no_output=max(t.no_output, self.vmm_timeout + 10))
        return t

    def with_(self, **changes) -> Profile:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The two modes of the matrix. Dilation recipe (DESIGN.md): -icount shift=7, boot
# with the soft-lockup detector off, lower watchdog_thresh to 1 s only when the
# workload starts. It models a slow CPU; it is not a hardware measurement.
MODES = {
    "functional": Profile(name="functional"),
    # vmm_timeout is guest time: under dilation the fix-reverted exec fault alone takes
    # ~55 s of it, and zeroing the 512M page ~18 s.
    # watchdog_thresh 2 (a report after 4 s stuck): with 1 (2 s) the shipped kernel
    # sometimes showed a 3 s stall of migration/0 in lockdep code during the exec phase
    # (measured twice); the line-by-line invalidation of 512M stalls a CPU for 5-15 s
    # (measured: 5.2-6.7 s in the interval-tree variants, 13-15 s in fix-reverted).
    "dilated": Profile(name="dilated", vcpus=2, rounds=1, icount_shift=7, watchdog_thresh=2,
                       vmm_timeout=600),
}


def mode(name: str) -> Profile:
    if name not in MODES:
        raise InputError(f"unknown mode '{name}' (valid: {', '.join(MODES)})")
    return MODES[name]


def qemu_version() -> tuple[int, int]:
    qemu = hosttools.require(QEMU)
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"version (\d+)\.(\d+)", out)
    if not m:
        raise InfraError(f"cannot read the version of {qemu}: {out.strip()[:80]}")
    return int(m.group(1)), int(m.group(2))


def cpu_model(profile: Profile, version: tuple[int, int] | None = None) -> str:
    """QEMU 9.0+ reports CTR_EL0.DIC=1 for `max` under TCG, which hides the I-cache
    path under test; neoverse-n1 keeps DIC=0 and VHE. A user's choice always wins."""
    if profile.cpu:
        return profile.cpu
    if profile.accel == "kvm":
        return "host"
    version = version or qemu_version()
    return "max" if version < (9, 0) else "neoverse-n1"


def smp_for(profile: Profile) -> int:
    if profile.smp:
        return profile.smp
    return 2 if profile.vcpus <= 8 else 4


def memory_needed_mb(block_bytes: int, hugepages: int = 1) -> int:
    """Guest RAM for `hugepages` boot-time hugepages of `block_bytes`. With 64K pages
    one 512M page needs 3G: under 2G the boot-time reservation fails; from two pages
    on, 3G + 512M per page (measured: 4096 MB reserved 2 of 3, 4608 MB 3 of 4,
    5120 MB 4 of 4)."""
    block_mb = block_bytes >> 20
    if block_mb < 512:
        return 1024 + block_mb * hugepages
    return (2560 if hugepages == 1 else 3072) + block_mb * hugepages


def memory_for(profile: Profile, block_bytes: int) -> int:
    return profile.memory_mb or memory_needed_mb(block_bytes, profile.hugepages)


def check_host(profile: Profile, block_bytes: int) -> None:
    """Refuse, with the reason, what this host cannot run."""
    need = memory_for(profile, block_bytes)
    least = memory_needed_mb(block_bytes, profile.hugepages)
    if profile.memory_mb and profile.memory_mb < least:
        pages = ("one" if profile.hugepages == 1 else f"{profile.hugepages} x")
        plural = "s" if profile.hugepages > 1 else ""
        raise InputError(
            f"-m {profile.memory_mb}M is too small for {pages} {block_bytes >> 20} MiB "
            f"hugepage{plural}: need at least {least} MiB"
        )
    avail = _mem_available_mb()
    if avail is not None and avail < need:
        raise InfraError(
            f"not enough host memory for the guest: need {need} MiB, {avail} MiB available"
        )
    if profile.accel == "kvm":
        if platform.machine() != "aarch64":
            raise InputError("accel kvm needs an arm64 host; use the tcg profile here")
        if not os.path.exists("/dev/kvm"):
            raise InfraError("accel kvm: /dev/kvm missing on this host")
        with open("/proc/cmdline") as f:
            if "kvm-arm.mode=nested" not in f.read():
                raise InfraError(
                    "accel kvm: nested KVM needs FEAT_NV2 hardware and a host booted with "
                    "kvm-arm.mode=nested; this host was not"
                )
    if profile.icount_shift is not None and profile.accel != "tcg":
        raise InputError("dilation (-icount) needs the tcg accelerator")


def _mem_available_mb() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None


def kernel_cmdline(profile: Profile, block_bytes: int) -> str:
    """The one place that knows the kernel command line."""
    args = [
        "console=ttyAMA0",
        "earlycon",
        "panic=-1",  # a panic reboots at once, and -no-reboot turns that into QEMU exiting
        "rdinit=/init",
        f"hugepagesz={_size(block_bytes)}",
        # host-run reserves its hugepages through sysfs, as on a real host.
        f"hugepages={0 if profile.runner == HOST_RUN else profile.hugepages}",
        f"default_hugepagesz={_size(block_bytes)}",
        f"s2fault.vcpus={profile.vcpus}",
        f"s2fault.rounds={profile.rounds}",
        f"s2fault.timeout={profile.vmm_timeout}",
    ]
    if profile.dilated:
        # Under dilation long initcalls look like stalls: keep the detector off until
        # init lowers the threshold at workload start.
        args.append("nosoftlockup")
    if profile.watchdog_thresh:
        args.append(f"s2fault.watchdog_thresh={profile.watchdog_thresh}")
    if profile.kvm_mode:
        args.append(f"kvm-arm.mode={profile.kvm_mode}")
    if profile.runner == HOST_RUN:
        # The host-run command line, word by word; the workload's shape is host-run's
        # to derive from its name, as on a real host.
        words = ["--workload", profile.workload, "--vcpus", str(profile.vcpus),
                 "--rounds", str(profile.rounds)]
        args += [f"s2fault.program={HOST_RUN_PROGRAM}", "s2fault.host_run=" + ",".join(words)]
        return " ".join(args)
    # The workload's shape, only where it differs from the plain exec-fault run (so
    # the command lines of earlier results stay what they were).
    plain = Profile()
    for key in ("vms", "blocks", "storm", "remap", "first_touch", "fail_alloc", "program"):
        value = getattr(profile, key)
        if value != getattr(plain, key):
            args.append(f"s2fault.{key}={value}")
    return " ".join(args)


def _size(n: int) -> str:
    return f"{n >> 30}G" if n >= 1 << 30 and n % (1 << 30) == 0 else f"{n >> 20}M"
