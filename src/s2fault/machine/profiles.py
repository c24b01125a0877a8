"""Machine profiles: what QEMU emulates, how the workload is sized, how long to wait.

Everything that varies between runs is a field here. The modes are data: one TOML
file per mode in profiles/ (`[profile]` sets the fields below; a mode that models
hardware also holds the figures it is calibrated on, `[hardware]`, its time scale,
`[model]`, and the kernel thresholds it scales, `[thresholds]`). The kernel command
line and the timeout table live here too, so no other module holds a literal for them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2fault import hosttools, project
from s2fault.errors import InfraError, InputError

QEMU = "qemu-system-aarch64"
RUNNERS = ("qemu", "host-run")
HOST_RUN = "host-run"
HOST_RUN_PROGRAM = "s2fault-host-run"  # guests/host_run.c
# Another QEMU than the one on PATH (run --qemu sets it, so bisect steps and other
# child processes boot the same one).
QEMU_ENV = "S2FAULT_QEMU"


def qemu_binary() -> str:
    """The QEMU every stage runs: $S2FAULT_QEMU when set, else qemu-system-aarch64 on PATH."""
    chosen = os.environ.get(QEMU_ENV)
    if not chosen:
        return hosttools.require(QEMU)
    path = os.path.abspath(chosen)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise InputError(f"QEMU '{chosen}' (--qemu / ${QEMU_ENV}) is not an executable file")
    return path


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
    after_done: float = 15.0  # the guest said it is done, but QEMU has not exited


# What --timeouts may set, by the name a user types.
TIMEOUT_KEYS = {"no-output": "no_output", "total": "total", "after-splat": "after_splat",
                "qmp-connect": "qmp_connect", "after-done": "after_done"}
MAX_TIMEOUT_S = 86400.0


def parse_timeouts(text: str | None) -> tuple[tuple[str, float], ...]:
    """`no-output=90,total=600` -> (("no_output", 90.0), ("total", 600.0)); a bad key or
    value is an InputError naming it and what is valid."""
    if not text:
        return ()
    out = []
    for item in text.replace(" ", ",").split(","):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if key not in TIMEOUT_KEYS or not sep:
            raise InputError(f"--timeouts {item}: use KEY=SECONDS with KEY one of "
                             f"{', '.join(TIMEOUT_KEYS)}")
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT_S):
            raise InputError(f"--timeouts {item}: out of range; valid: more than 0, at most "
                             f"{MAX_TIMEOUT_S:g} (seconds)")
        out.append((TIMEOUT_KEYS[key], seconds))
    return tuple(out)


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
    rounds: int = 5  # exec-fault rounds per boot; round 0 is a warm-up (see judge/lines.py)
    icount_shift: int | None = None  # dilation: every instruction costs 2^N ns
    watchdog_thresh: int | None = None  # armed by the VMM just before the exec phase
    kvm_mode: str | None = None  # kvm-arm.mode= (e.g. nvhe); None: the kernel's default
    vmm_timeout: int = 60
    no_output_timeout: float | None = None  # override of the table, for tests
    # The workload's shape (see guest/workloads.py, which names the combinations):
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
    sweep: str = ""  # "1,8,64": one VMM run per vCPU count in one boot (calibrate)
    kernel_args: str = ""  # appended to the kernel command line (a mode's own needs)
    # A calibrated model (see HardwareModel): hardware-equivalent seconds per model
    # second, and the kernel thresholds it scales, in model seconds.
    scale: float | None = None
    rcu_stall_timeout: int | None = None
    hung_task_timeout: int | None = None
    count_icache: bool = False  # count I-cache invalidations with kprobes (init.c)
    # The table's row times this: a mode whose run executes many more guest
    # instructions than its row was measured with (single-threaded TCG pays for each).
    timeout_scale: float = 1.0
    # The kernel developer's loop (see README "In the edit-build-boot loop"):
    append: str | None = None  # more kernel command line, after s2fault's own
    timeout_overrides: tuple[tuple[str, float], ...] = ()  # --timeouts, parsed
    shell: bool = False  # a shell on the console after the workload or at the first splat
    gdb_port: int | None = None  # QEMU's gdbstub on 127.0.0.1:PORT, halted at start

    @property
    def hugepages(self) -> int:
        """Boot-time huge pages the workload needs: one per block per VM."""
        return self.vms * self.blocks

    @property
    def dilated(self) -> bool:
        return self.icount_shift is not None

    def timeouts(self) -> Timeouts:
        t = TIMEOUTS[(self.accel, self.dilated)]
        if self.timeout_scale != 1.0:
            t = dataclasses.replace(t, no_output=t.no_output * self.timeout_scale,
                                    total=t.total * self.timeout_scale,
                                    after_splat=t.after_splat * self.timeout_scale)
        if self.no_output_timeout is not None:
            t = dataclasses.replace(t, no_output=self.no_output_timeout,
                                    after_splat=min(t.after_splat, self.no_output_timeout))
        if self.fail_alloc:
            # failslab dumps a stack by design; whether the vCPUs come back after it is
            # the VMM's to say (it lists the stuck ones at its timeout), so the machine
            # waits past that timeout instead of ending the run at the quiet console.
            t = dataclasses.replace(t, after_splat=max(t.after_splat, self.vmm_timeout + 10),
                                    no_output=max(t.no_output, self.vmm_timeout + 10))
        if self.timeout_overrides:
            t = dataclasses.replace(t, **dict(self.timeout_overrides))
        if self.interactive:
            # Someone is at the console or in gdb: the machine waits for them.
            t = dataclasses.replace(t, no_output=math.inf, total=math.inf,
                                    after_splat=math.inf, after_done=math.inf)
        return t

    @property
    def interactive(self) -> bool:
        return self.shell or self.gdb_port is not None

    def with_(self, **changes: Any) -> Profile:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Thresholds:
    """The kernel's lockup thresholds, in seconds of the machine they apply to."""

    watchdog_thresh: int
    rcu_cpu_stall_timeout: int
    hung_task_timeout: int

    def in_model(self, scale: float) -> Thresholds:
        """Hardware seconds -> model seconds (model = hardware / k), whole seconds as
        the kernel takes them, at least 1."""
        def conv(seconds: int) -> int:
            return max(1, round(seconds / scale))

        return Thresholds(conv(self.watchdog_thresh), conv(self.rcu_cpu_stall_timeout),
                          conv(self.hung_task_timeout))

    @property
    def soft_lockup_after(self) -> int:
        """The soft-lockup detector reports a CPU stuck for more than 2 x watchdog_thresh."""
        return 2 * self.watchdog_thresh


@dataclass(frozen=True)
class HardwareModel:
    """A mode that models a machine: the figures it is calibrated on, where they come
    from, its time scale k (hardware-equivalent = k x model time) and the kernel's
    default thresholds (hardware seconds)."""

    mode: str
    name: str
    source: str
    inval_512m_ms: float
    inval_all_us: float
    vcpus: int
    worst_fault_ms: float
    soft_lockup: bool
    scale: float
    calibrated: str
    thresholds: Thresholds

    def to_hw(self, model_seconds: float) -> float:
        return model_seconds * self.scale

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def profiles_dir() -> Path:
    """profiles/ of the checkout; the package's own copy in an installed package (its
    package data: host-run on a board has no checkout); else one beside this package
    when S2FAULT_HOME's lacks it."""
    here = project.root() / "profiles"
    if here.is_dir():
        return here
    packaged = project.PACKAGE / "profiles"
    if packaged.is_dir():
        return packaged
    return project.PACKAGE.parents[1] / "profiles"


_PROFILE_FIELDS = {f.name for f in dataclasses.fields(Profile)}


def _load_mode(path: Path) -> tuple[Profile, HardwareModel | None]:
    name = path.stem
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: {e}") from e
    fields = dict(data.get("profile", {}))
    unknown = sorted(set(fields) - _PROFILE_FIELDS)
    if unknown:
        raise InputError(f"{path} [profile]: unknown field(s) {', '.join(unknown)}")
    hw = data.get("hardware")
    if hw is None:
        return Profile(name=name, **fields), None
    try:
        model = HardwareModel(
            mode=name, name=str(hw["name"]), source=" ".join(str(hw["source"]).split()),
            inval_512m_ms=float(hw["inval_512m_ms"]), inval_all_us=float(hw["inval_all_us"]),
            vcpus=int(hw["vcpus"]), worst_fault_ms=float(hw["worst_fault_ms"]),
            soft_lockup=bool(hw.get("soft_lockup", False)),
            scale=float(data["model"]["scale"]),
            calibrated=str(data["model"].get("calibrated", "")),
            thresholds=Thresholds(**{k: int(v) for k, v in data["thresholds"].items()}),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: a hardware model needs [hardware] figures, [model] scale "
                         f"and [thresholds] ({type(e).__name__}: {e})") from e
    if model.scale <= 0:
        raise InputError(f"{path} [model]: scale must be positive")
    t = model.thresholds.in_model(model.scale)
    fields.setdefault("scale", model.scale)
    fields.setdefault("watchdog_thresh", t.watchdog_thresh)
    fields.setdefault("rcu_stall_timeout", t.rcu_cpu_stall_timeout)
    fields.setdefault("hung_task_timeout", t.hung_task_timeout)
    fields.setdefault("count_icache", True)
    return Profile(name=name, **fields), model


def _load_modes() -> tuple[dict[str, Profile], dict[str, HardwareModel]]:
    modes, models = {}, {}
    # functional and dilated first: the order the matrix and its reports use.
    order = {"functional": 0, "dilated": 1}
    paths = sorted(profiles_dir().glob("*.toml"), key=lambda p: (order.get(p.stem, 9), p.stem))
    for path in paths:
        prof, model = _load_mode(path)
        modes[prof.name] = prof
        if model:
            models[prof.name] = model
    return modes, models


# The modes of the matrix, one file each in profiles/. Dilation recipe (DESIGN.md):
# boot with the soft-lockup detector off, lower watchdog_thresh only when the
# workload starts. Dilation models a slow CPU; it is not a hardware measurement.
MODES, MODELS = _load_modes()


def mode(name: str) -> Profile:
    if name not in MODES:
        raise InputError(f"unknown mode '{name}' (valid: {', '.join(MODES)})")
    return MODES[name]


def hardware_model(name: str) -> HardwareModel:
    """The calibrated model of a mode; an error naming the modes that have one."""
    if name not in MODELS:
        raise InputError(f"mode '{name}' models no hardware (modes that do: "
                         f"{', '.join(MODELS) or 'none'})")
    return MODELS[name]


def qemu_version() -> tuple[int, int]:
    qemu = qemu_binary()
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
    # A calibrated model runs with the kernel's own thresholds, scaled to model time.
    if profile.rcu_stall_timeout:
        args.append(f"rcupdate.rcu_cpu_stall_timeout={profile.rcu_stall_timeout}")
    if profile.hung_task_timeout:
        args.append(f"sysctl.kernel.hung_task_timeout_secs={profile.hung_task_timeout}")
    if profile.count_icache:
        args.append("s2fault.count_icache=1")
    if profile.kernel_args:
        args += profile.kernel_args.split()
    if profile.kvm_mode:
        args.append(f"kvm-arm.mode={profile.kvm_mode}")
    if profile.runner == HOST_RUN:
        # The host-run command line, word by word; the workload's shape is host-run's
        # to derive from its name, as on a real host.
        words = ["--workload", profile.workload, "--vcpus", str(profile.vcpus),
                 "--rounds", str(profile.rounds)]
        args += [f"s2fault.program={HOST_RUN_PROGRAM}", "s2fault.host_run=" + ",".join(words)]
    else:
        # The workload's shape, only where it differs from the plain exec-fault run (so
        # the command lines of earlier results stay what they were).
        plain = Profile()
        for key in ("vms", "blocks", "storm", "remap", "first_touch", "fail_alloc", "program",
                    "sweep"):
            value = getattr(profile, key)
            if value != getattr(plain, key):
                args.append(f"s2fault.{key}={value}")
    if profile.shell:
        args.append("s2fault.shell=1")
    if profile.append:
        # Last, so the user's word wins where the kernel takes the last value.
        args.append(profile.append)
    return " ".join(args)


def _size(n: int) -> str:
    return f"{n >> 30}G" if n >= 1 << 30 and n % (1 << 30) == 0 else f"{n >> 20}M"
