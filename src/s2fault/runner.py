"""One judged run: a kernel Image + a profile -> a verdict with its artifacts on disk."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from s2fault import __version__, guest, machine, progress, project
from s2fault.errors import S2Error
from s2fault.judge import lines, stacktrace
from s2fault.judge.measurements import HardwareEquivalent, Measurements
from s2fault.judge.rules import judge
from s2fault.judge.verdict import Verdict
from s2fault.kernel import image
from s2fault.machine import profiles
from s2fault.outcome import Outcome


def new_run_dir(parent: Path | None, label: str) -> Path:
    """A private (0700) directory for one run's console, QMP log and result."""
    parent = parent or (project.cache_dir() / "runs")
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(tempfile.mkdtemp(prefix=f"{stamp}-{label}-", dir=parent))
    os.chmod(path, 0o700)
    return path


def run_kernel(
    kernel_path: Path,
    prof: profiles.Profile,
    outdir: Path,
    label: str = "kernel",
    config: Path | None = None,
    extra_initramfs: list[Path] | None = None,
    vmlinux: Path | None = None,
) -> Verdict:
    """`extra_initramfs`: cpio archives appended to the guest image (e.g. the KVM
    selftests); the kernel unpacks concatenated archives in order. `vmlinux`: the
    kernel's ELF, for gdb and to decode the frames of a splat to file:line."""
    kernel = dataclasses.replace(image.inspect(kernel_path), vmlinux=vmlinux)
    qemu = profiles.qemu_binary()
    profiles.check_host(prof, kernel.block_bytes)
    progress.stage(label, "guest image")
    image_ = guest.build()
    initramfs = image_.initramfs
    if prof.runner == profiles.HOST_RUN:
        # The nested host as an arm64 host with Python and this package installed.
        from s2fault.guest import rootfs

        progress.stage(label, "arm64 python root filesystem")
        extra_initramfs = [*(extra_initramfs or []), rootfs.python_archive(),
                           rootfs.package_archive(outdir / "s2fault-package.cpio",
                                                  image_.bin_dir / "s2fault-vmm")]
    if extra_initramfs:
        initramfs = _concatenated(outdir / "initramfs.cpio", [initramfs, *extra_initramfs])
    progress.stage(label, f"boot ({prof.name}, {prof.vcpus} vCPUs)")
    result = machine.run(kernel, initramfs, prof, outdir)
    text = result.console_log.read_bytes().decode("utf-8", errors="replace")
    if prof.runner == profiles.HOST_RUN:
        v = _host_run_verdict(result, text, prof)
    else:
        v = judge(result, text, lines.parse(text), prof.watchdog_thresh, scale=prof.scale,
                  dilated=prof.dilated)
    if prof.name in profiles.MODELS and v.workload is not None:
        v.workload = dataclasses.replace(v.workload, hardware_equivalent=hardware_equivalent(
            v.workload, profiles.MODELS[prof.name]))
    decode_note = None
    if vmlinux and v.splats:
        decoded, decode_note = stacktrace.decode(vmlinux, text, v.splats)
        if decoded:
            v.splats = [dataclasses.replace(s, decoded=frames)
                        for s, frames in zip(v.splats, decoded, strict=True)]
    v.profile = prof.to_dict() | {
        "cpu": profiles.cpu_model(prof),
        "smp": profiles.smp_for(prof),
        "memory_mb": profiles.memory_for(prof, kernel.block_bytes),
        "page_size": kernel.page_size,
        "model_note": _model_note(prof),
    }
    v.versions = versions(profiles.cpu_model(prof), v.kernel_release or _release_in(text))
    v.artifacts = ({"host_run": v.artifacts} if prof.runner == profiles.HOST_RUN else {}) | {
        "dir": str(outdir),
        "console_log": str(result.console_log),
        "qmp_log": str(result.qmp_log),
        "kernel": str(kernel_path),
        "config": str(_keep_config(config, outdir)) if config else None,
        "initramfs": str(initramfs),
        "extra_initramfs": [str(p) for p in extra_initramfs or []],
        "vmlinux": str(vmlinux) if vmlinux else None,
        "frames_not_decoded": decode_note,
        "reproducer": str(outdir / machine.REPRODUCER),
        "qemu": qemu,
    }
    (outdir / "result.json").write_text(json.dumps(v.to_dict(), indent=2) + "\n")
    return v


HOST_RUN_LINE = "S2FAULT-HOSTRUN"


def _host_run_verdict(result: machine.MachineRun, text: str, prof: profiles.Profile) -> Verdict:
    """The verdict `s2fault host-run` gave inside the nested host (one S2FAULT-HOSTRUN
    line). Without one, the console is judged as any run's: a kernel that failed is
    still a failure; otherwise nobody judged, and that is an error."""
    for line in reversed(text.splitlines()):
        if HOST_RUN_LINE in line:
            obj = lines.json_after(line, HOST_RUN_LINE)
            if obj is not None:
                v = Verdict.from_dict(obj)
                v.machine = result.to_dict() | {"host_run": v.machine}
                return v
    v = judge(result, text, lines.parse(text), prof.watchdog_thresh,
              runner=profiles.HOST_RUN)
    if v.verdict is not Outcome.FAIL:
        errors = "; ".join(lines.parse(text).errors) or result.reason
        v.verdict, v.reason = Outcome.ERROR, (
            f"could not judge: host-run in the nested host printed no verdict ({errors})")
    return v


def versions(cpu: str | None, kernel_release: str | None) -> dict[str, Any]:
    """What a result must name to be compared with another machine's: this tool, the
    emulator, the CPU model it emulated and the kernel that ran."""
    return {"s2fault": __version__, "qemu": qemu_version(), "cpu": cpu,
            "kernel": kernel_release}


def qemu_version() -> str | None:
    """The full version the run's QEMU reports ("7.2.19"), None when it cannot be asked."""
    try:
        return _version_of(profiles.qemu_binary())
    except S2Error:
        return None


@functools.lru_cache(maxsize=4)
def _version_of(qemu: str) -> str | None:
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else None


def _release_in(console: str) -> str | None:
    """The release from the kernel's banner, for a kernel that never reached init."""
    m = re.search(r"Linux version (\S+)", console)
    return m.group(1) if m else None


def hardware_equivalent(measured: Measurements,
                        model: profiles.HardwareModel) -> HardwareEquivalent:
    """A calibrated model's run in the hardware's terms: the worst exec fault times the
    profile's k, and each whole-cache invalidation the guest kernel counted (kprobes,
    see init.c) charged at the hardware's figure, since the model charges it one
    instruction (serially: the contention model's worst case)."""
    from s2fault.machine.calibrate import whole_cache_invalidations

    worst = measured.exec_fault_ms.max
    whole = whole_cache_invalidations(measured.icache)
    base = worst * model.scale if worst is not None else None
    return HardwareEquivalent(
        scale=model.scale,
        worst_fault_ms=round(base, 3) if base is not None else None,
        whole_cache_invalidations=whole,
        whole_cache_ms=round(whole * model.inval_all_us / 1000.0, 3)
        if whole is not None else None,
        worst_fault_priced_ms=round(base + whole * model.inval_all_us / 1000.0, 3)
        if base is not None and whole is not None else None,
    )


def _model_note(prof: profiles.Profile) -> str | None:
    if prof.scale:
        return (f"a model of {prof.name} (time dilation calibrated on one figure, "
                f"k = {prof.scale:g}); not a hardware measurement")
    if prof.dilated:
        return "time dilation models a slow CPU; not a hardware measurement"
    return None


def _keep_config(config: Path, outdir: Path) -> Path:
    """The kernel's .config beside the console: a results directory copied off the
    machine (a CI artifact) keeps what the kernel was built with."""
    kept = outdir / "kernel.config"
    try:
        shutil.copyfile(config, kept)
    except OSError:
        return config  # the cache's copy is still named; the run itself is unaffected
    return kept


def _concatenated(dest: Path, parts: list[Path]) -> Path:
    """One -initrd file of `parts` in order, written beside the run's other files."""
    with open(dest, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)
    return dest
