"""Every option value of the command line, checked before anything is built or booted.

A value outside what KVM, QEMU or the workload accept used to boot a kernel and come
back as a puzzle ("the guest never reached init", "unreadable S2FAULT-RESULT line",
a QMP error wrapping QEMU's refusal). Here it is one line naming the option, the
value and the valid range, and exit 2. The ranges come from the parts that enforce
them, named beside each limit.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import subprocess
from pathlib import Path

from s2fault.errors import InputError
from s2fault.guest import workloads
from s2fault.kernel import image
from s2fault.machine import profiles

# KVM on arm64 with GICv3: KVM_CAP_MAX_VCPUS is VGIC_V3_MAX_CPUS (Linux 6.12).
KVM_MAX_VCPUS = 512
# QEMU's mach-virt with GICv3 (hw/arm/virt.c: max_cpus 512).
VIRT_MAX_CPUS = 512
# guests/vmm.h MAX_ROUNDS.
MAX_ROUNDS = 1000
# QEMU refuses -icount shift above 10 (MAX_ICOUNT_SHIFT).
MAX_ICOUNT_SHIFT = 10
MAX_MEMORY_MB = 1 << 20  # 1 TiB: far above any host here; the host's free memory is checked later
MAX_REPEAT = 1000
MAX_RETRIES = 10
# check's runs again after a starved model (starved_model.MODEL_STARVED): at 64 vCPUs it is
# not rare (one run in two or three in CI), and independent between boots.
DEFAULT_RETRIES = 2
MAX_TIMEOUT_S = profiles.MAX_TIMEOUT_S
# kvm-arm.mode= values Linux 6.12 parses (arch/arm64/kvm/arm.c early_kvm_mode_cfg).
KVM_MODES = ["none", "nvhe", "protected", "nested"]
# CPU models mach-virt runs as an arm64 host (EL2, AArch64), as far as QEMU 7.2-9.x
# name them; `host` only with KVM. 32-bit models (cortex-a7, -a15) boot mach-virt but
# not an arm64 kernel; cortex-a8/a9 mach-virt refuses.
ARM64_HOST_CPUS = ("max", "neoverse-n1", "neoverse-n2", "neoverse-v1", "cortex-a35",
                   "cortex-a53", "cortex-a55", "cortex-a57", "cortex-a72", "cortex-a76",
                   "cortex-a710", "a64fx")
BLOCK_BYTES = {"4k": 2 << 20, "16k": 32 << 20, "64k": 512 << 20}


def _out_of_range(option: str, value: object, low: object, high: object, why: str) -> InputError:
    return InputError(f"--{option} {value}: out of range; valid: {low} to {high} ({why})")


def _int_in(args: argparse.Namespace, name: str, low: int, high: int, why: str) -> None:
    value = getattr(args, name, None)
    if value is not None and not low <= value <= high:
        raise _out_of_range(name.replace("_", "-"), value, low, high, why)


def _positive_float(args: argparse.Namespace, name: str, high: float, why: str) -> None:
    value = getattr(args, name, None)
    if value is None:
        return
    if not (math.isfinite(value) and 0 < value <= high):
        option = name.replace("_", "-")
        raise InputError(f"--{option} {value}: out of range; valid: more than 0, at most "
                         f"{high:g} ({why})")


def _modes(args: argparse.Namespace) -> list[str]:
    mode = getattr(args, "mode", None)
    if mode is None:
        return list(profiles.MODES)
    return [mode] if isinstance(mode, str) else list(mode)


def _workloads(args: argparse.Namespace) -> list[workloads.Workload]:
    wl = getattr(args, "workload", None)
    if wl is None:
        return [workloads.get(workloads.DEFAULT)]
    return workloads.select([wl] if isinstance(wl, str) else wl)


def _shapes(args: argparse.Namespace) -> list[profiles.Profile]:
    """The profile of each (workload, mode) the command will run, before overrides."""
    return [profiles.mode(m).with_(**w.profile_changes(m)) for w in _workloads(args)
            for m in _modes(args) if m in w.modes]


def min_rounds(shape: profiles.Profile) -> int:
    """A latency is judged over measured rounds after a warm-up (judge/lines.py), so a
    functional run needs 2; a dilated run is judged by the lockup detector, and the
    selftests runner runs once."""
    if shape.dilated or shape.program != profiles.Profile().program:
        return 1
    return 2


def validate(args: argparse.Namespace) -> None:
    """Raise InputError for the first option outside its range (see the module doc)."""
    _int_in(args, "vcpus", 1, KVM_MAX_VCPUS, "KVM's vCPU limit on arm64 with GICv3")
    _int_in(args, "smp", 1, VIRT_MAX_CPUS, "QEMU mach-virt with GICv3")
    _int_in(args, "icount_shift", 0, MAX_ICOUNT_SHIFT, "QEMU -icount shift")
    _int_in(args, "repeat", 1, MAX_REPEAT, "runs per cell")
    _int_in(args, "retries", 0, MAX_RETRIES, "runs again after a model that starved")
    _positive_float(args, "no_output_timeout", MAX_TIMEOUT_S, "seconds")
    _positive_float(args, "reference_ms", MAX_TIMEOUT_S * 1000, "milliseconds")
    _check_dev_loop(args)
    if not hasattr(args, "rounds") and not hasattr(args, "vcpus"):
        return
    shapes = _shapes(args)
    if getattr(args, "rounds", None) is not None and shapes:
        low = max(min_rounds(s) for s in shapes)
        why = ("a warm-up round and a measured one" if low > 1
               else "the VMM's limit")
        _int_in(args, "rounds", low, MAX_ROUNDS, why)
    vcpus = getattr(args, "vcpus", None)
    storm = max((s.storm for s in shapes), default=0)
    if vcpus is not None and storm and vcpus <= storm:
        raise _out_of_range("vcpus", vcpus, storm + 1, KVM_MAX_VCPUS,
                            f"{storm} of them run the I-cache storm, at least one must fault")
    _check_memory(args, shapes)
    if getattr(args, "cpu", None):
        _check_cpu(args.cpu, getattr(args, "accel", None))


def _check_dev_loop(args: argparse.Namespace) -> None:
    """run's options of the kernel developer's loop (README "In the edit-build-boot loop")."""
    profiles.parse_timeouts(getattr(args, "timeouts", None))
    qemu = getattr(args, "qemu", None)
    if qemu is not None:
        path = Path(qemu)
        if not path.is_file() or not os.access(path, os.X_OK):
            raise InputError(f"--qemu {qemu}: not an executable file")
    append = getattr(args, "append", None)
    if append is not None and ("\n" in append or not append.strip()):
        raise InputError(f"--append {append!r}: one line of kernel parameters")
    _int_in(args, "gdb", 1, 65535, "a TCP port")
    if (getattr(args, "shell", False) or getattr(args, "gdb", None) is not None) \
            and getattr(args, "repeat", 1) != 1:
        raise InputError("--repeat: --shell and --gdb are interactive, one run at a time")


def _block_bytes(args: argparse.Namespace) -> int:
    """The huge block the run will use: from --pages, or a --kernel's Image header."""
    pages = getattr(args, "pages", None)
    if pages:
        return BLOCK_BYTES[pages]
    kernel = getattr(args, "kernel", None)
    build_dir = getattr(args, "build_dir", None)
    if build_dir and not kernel:
        from s2fault.kernel import builddir

        found = [Path(build_dir) / n for n in builddir.IMAGES if (Path(build_dir) / n).is_file()]
        kernel = str(found[0]) if found else None
    if kernel:
        try:
            return image.inspect(Path(kernel)).block_bytes
        except InputError:
            # The run names what is wrong with the kernel itself; meanwhile, less
            # than the smallest block needs is wrong for any kernel.
            return min(BLOCK_BYTES.values())
    return BLOCK_BYTES["64k"]


def _check_memory(args: argparse.Namespace, shapes: list[profiles.Profile]) -> None:
    memory = getattr(args, "memory", None)
    if memory is None:
        return
    block = _block_bytes(args)
    hugepages = max((s.hugepages for s in shapes), default=1)
    low = profiles.memory_needed_mb(block, hugepages)
    pages = "one" if hugepages == 1 else f"{hugepages} x"
    why = (f"MiB; {pages} {block >> 20} MiB hugepage{'s' if hugepages > 1 else ''} "
           f"need{'s' if hugepages == 1 else ''} at least {low} MiB")
    _int_in(args, "memory", low, MAX_MEMORY_MB, why)


@functools.lru_cache(maxsize=1)
def _qemu_cpus() -> frozenset[str] | None:
    """The CPU models this QEMU knows (None when QEMU cannot be asked: the host-tool
    check names it)."""
    try:
        out = subprocess.run([profiles.QEMU, "-M", "virt", "-cpu", "help"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return frozenset(line.split()[0] for line in out.splitlines()[1:] if line.strip())


def _check_cpu(cpu: str, accel: str | None) -> None:
    known = _qemu_cpus()
    usable = [c for c in ARM64_HOST_CPUS if known is None or c in known]
    if accel == "kvm":
        usable.append("host")
    if cpu not in usable:
        raise InputError(f"--cpu {cpu}: not a CPU model mach-virt runs as an arm64 KVM host "
                         f"here; valid: {', '.join(usable)}")
