"""The machine stage: the one QEMU runner.

QEMU's serial console goes to console.log; QEMU is driven over QMP (qemu.qmp):
query-status when the guest falls silent, quit to stop it, SIGKILL only when
QMP does not answer. A run ends in one of these outcomes:

  exited      QEMU left by itself (power-off, or a panic with -no-reboot)
  no_output   the console stayed silent for the profile's no-output timeout
  timeout     the whole run took longer than the profile's total timeout
  qemu_failed QEMU could not start or died (signal, bad option): stderr says why

Every run directory gets the kernel and initramfs the machine booted (hard links where
the filesystem allows) and reproduce.sh: the same QEMU command line, without s2fault,
with the console on standard output. With a shell (profile.shell) the console is also
this process's standard input and output; with a gdbstub (profile.gdb_port) QEMU
starts halted and the gdb command line is printed. Either way nothing times out: the
machine waits for the person at it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from s2fault.kernel.image import KernelImage
from s2fault.machine import profiles

if TYPE_CHECKING:
    from qemu.qmp.legacy import QEMUMonitorProtocol

DONE_MARKER = b"S2FAULT-DONE"
# Every kernel splat with a backtrace prints one of these: enough to shorten the wait
# for a guest that then goes silent; judging the splat is the analyzer's business.
STACK_DUMP_MARKERS = (b"Call trace:", b"Call Trace:")
POLL = 0.2


@dataclass
class MachineRun:
    outcome: str
    reason: str
    exit_code: int | None
    seconds: float
    console_log: Path
    qmp_log: Path
    stderr_log: Path
    argv: list[str]
    last_line: str = ""
    status: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 2),
            "console_log": str(self.console_log),
            "qmp_log": str(self.qmp_log),
            "qemu_stderr": str(self.stderr_log),
            "argv": self.argv,
            "status": self.status,
        }


REPRODUCER = "reproduce.sh"
INITRAMFS = "initramfs.cpio"


def qemu_argv(
    kernel: KernelImage, initramfs: Path, prof: profiles.Profile, outdir: Path, qmp_sock: Path
) -> list[str]:
    """The QEMU command line of a run: the machine, then its console and QMP monitor."""
    if prof.shell:
        # The console is the caller's terminal, and console.log still gets all of it.
        console = ["-chardev", f"stdio,id=console,signal=off,logfile={outdir / 'console.log'}"]
    else:
        console = ["-chardev", f"file,id=console,path={outdir / 'console.log'}"]
    argv = machine_argv(profiles.qemu_binary(), kernel, kernel.path, initramfs, prof)
    argv += [
        *console, "-serial", "chardev:console",
        "-chardev", f"socket,id=qmp,path={qmp_sock}",
        "-mon", "chardev=qmp,mode=control",
    ]
    if prof.gdb_port is not None:
        argv += ["-gdb", f"tcp:127.0.0.1:{prof.gdb_port}", "-S"]
    return argv


def machine_argv(qemu: str, kernel: KernelImage, kernel_path: Path, initramfs: Path,
                 prof: profiles.Profile) -> list[str]:
    """What the guest sees: the one definition shared by the run and its reproducer."""
    block = kernel.block_bytes
    # Under TCG QEMU emulates EL2 itself; under KVM it needs FEAT_NV2 (checked earlier).
    machine_opts = "virt,virtualization=on,gic-version=3"
    argv = [
        qemu,
        "-M", machine_opts,
        "-cpu", profiles.cpu_model(prof),
        "-smp", str(profiles.smp_for(prof)),
        "-m", f"{profiles.memory_for(prof, block)}M",
    ]
    if prof.accel == "kvm":
        argv += ["-accel", "kvm"]
    elif prof.dilated:
        # icount makes TCG single-threaded: never combine it with thread=multi.
        argv += ["-accel", "tcg", "-icount", f"shift={prof.icount_shift},sleep=off"]
    else:
        argv += ["-accel", "tcg,thread=multi"]
    argv += [
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(kernel_path),
        "-initrd", str(initramfs),
        "-append", profiles.kernel_cmdline(prof, block),
    ]
    return argv


def _keep(src: Path, dest: Path) -> Path:
    """`src` as `dest` in the run directory: a hard link, or a copy across filesystems."""
    if src.resolve() == dest.resolve():
        return dest
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
    return dest


def write_reproducer(kernel: KernelImage, prof: profiles.Profile, outdir: Path) -> Path:
    """reproduce.sh: the run's QEMU command line with the kernel and initramfs beside it,
    runnable without s2fault. The console comes on standard output instead of
    console.log, and there is no QMP monitor or gdbstub: the guest sees the same machine."""
    argv = machine_argv("${QEMU}", kernel, Path(kernel.path.name), Path(INITRAMFS), prof)
    argv += ["-serial", "stdio"]
    words = ['"${QEMU}"' if a == "${QEMU}" else shlex.quote(a) for a in argv]
    lines, i = [], 0
    while i < len(words):  # one option and its value per line
        n = 2 if words[i].startswith("-") and i + 1 < len(words) and \
            not words[i + 1].startswith("-") else 1
        lines.append(" ".join(words[i:i + n]))
        i += n
    body = " \\\n\t".join(lines)
    script = outdir / REPRODUCER
    script.write_text(
        "#!/bin/sh\n"
        "# The QEMU run of this directory, without s2fault: the same machine, kernel,\n"
        "# initramfs and command line. The console comes on standard output (s2fault\n"
        "# wrote it to console.log). QEMU=/path/to/qemu-system-aarch64 runs another QEMU.\n"
        "set -e\n"
        'cd "$(dirname "$0")"\n'
        f"QEMU=${{QEMU:-{shlex.quote(profiles.qemu_binary())}}}\n"
        f"exec {body}\n"
    )
    script.chmod(0o755)
    return script


class _QMPLog:
    def __init__(self, path: Path):
        self.f = open(path, "a")

    def write(self, direction: str, obj: object) -> None:
        self.f.write(json.dumps({"t": round(time.time(), 3), direction: obj}) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def run(
    kernel: KernelImage, initramfs: Path, prof: profiles.Profile, outdir: Path
) -> MachineRun:
    """Boot `kernel` with `initramfs` under `prof`, wait for it to finish, return how it ended."""
    from qemu.qmp.legacy import QEMUMonitorProtocol

    outdir.mkdir(parents=True, exist_ok=True)
    console = outdir / "console.log"
    console.touch()
    qmp_log_path = outdir / "qmp.log"
    stderr_path = outdir / "qemu-stderr.log"
    timeouts = prof.timeouts()
    # The QMP socket lives in a private (0700) directory: it controls the machine.
    # The files booted are the run directory's own, so reproduce.sh boots the same ones.
    name = "Image.gz" if kernel.compressed else "Image"
    kernel = dataclasses.replace(kernel, path=_keep(kernel.path, outdir / name))
    initramfs = _keep(initramfs, outdir / INITRAMFS)
    write_reproducer(kernel, prof, outdir)
    sockdir = Path(tempfile.mkdtemp(prefix="s2fault-qmp-"))
    qmp_sock = sockdir / "qmp.sock"
    argv = qemu_argv(kernel, initramfs, prof, outdir, qmp_sock)
    (outdir / "qemu-argv.json").write_text(json.dumps(argv, indent=1) + "\n")
    qmp_log = _QMPLog(qmp_log_path)
    qmp = QEMUMonitorProtocol(str(qmp_sock), server=True)
    start = time.monotonic()
    proc = None
    result: MachineRun | None = None

    def finish(outcome: str, reason: str, status: str | None = None) -> MachineRun:
        return MachineRun(
            outcome=outcome, reason=reason,
            exit_code=proc.returncode if proc else None,
            seconds=time.monotonic() - start, console_log=console, qmp_log=qmp_log_path,
            stderr_log=stderr_path, argv=argv, last_line=_last_line(console), status=status,
        )

    try:
        with open(stderr_path, "wb") as err:
            if prof.shell:  # the console is ours to share with the guest's shell
                proc = subprocess.Popen(argv, stderr=err)
            else:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        try:
            greeting = qmp.accept(timeout=timeouts.qmp_connect)
            qmp_log.write("greeting", greeting)
        except Exception as e:  # noqa: BLE001 - any failure to talk QMP is infrastructure
            _wait(proc, 5)
            return finish("qemu_failed", _qemu_failure(proc, stderr_path, f"no QMP ({e})"))
        if prof.gdb_port is not None:
            _announce_gdb(kernel, prof.gdb_port)
        result = _watch(proc, qmp, qmp_log, console, timeouts, start, finish, stderr_path)
        return result
    finally:
        if proc is not None and proc.poll() is None:
            _stop(proc, qmp, qmp_log)
        try:
            qmp.close()
        except Exception:  # noqa: BLE001
            pass
        qmp_log.close()
        for p in sockdir.iterdir():
            p.unlink(missing_ok=True)
        sockdir.rmdir()


def gdb_command(kernel: KernelImage, port: int) -> list[str]:
    """The gdb-multiarch command line that attaches to a run's gdbstub."""
    argv = ["gdb-multiarch"]
    argv += [str(kernel.vmlinux)] if kernel.vmlinux else ["-ex", "set architecture aarch64"]
    return argv + ["-ex", f"target remote 127.0.0.1:{port}"]


def _announce_gdb(kernel: KernelImage, port: int) -> None:
    from s2fault import progress

    progress.clear()
    note = "" if kernel.vmlinux else " (no vmlinux known: --build-dir gives gdb the symbols)"
    print(f"gdb: QEMU is halted at its first instruction; attach with{note}:", flush=True)
    print("  " + " ".join(shlex.quote(a) for a in gdb_command(kernel, port)), flush=True)


def _watch(proc: subprocess.Popen[bytes], qmp: QEMUMonitorProtocol, qmp_log: _QMPLog,
           console: Path, timeouts: profiles.Timeouts, start: float,
           finish: Callable[..., MachineRun], stderr_path: Path) -> MachineRun:
    last_size = -1
    last_change = time.monotonic()
    done_seen_at = None
    silence = timeouts.no_output
    while True:
        rc = proc.poll()
        now = time.monotonic()
        size = console.stat().st_size
        if size != last_size:
            last_size, last_change = size, now
            tail = _tail(console)
            if done_seen_at is None and DONE_MARKER in tail:
                done_seen_at = now
            if any(marker in tail for marker in STACK_DUMP_MARKERS):
                silence = timeouts.after_splat
        if rc is not None:
            if rc == 0:
                return finish("exited", "QEMU exited")
            return finish("qemu_failed", _qemu_failure(proc, stderr_path, "QEMU died"))
        if done_seen_at is not None and now - done_seen_at > timeouts.after_done:
            status = _status(qmp, qmp_log)
            return finish("exited", f"guest finished but QEMU stayed ({status})", status)
        if now - last_change > silence:
            status = _status(qmp, qmp_log)
            last = _last_line(console)
            where = f"after '{last}'" if last else "(nothing printed at all)"
            return finish(
                "no_output",
                f"no output for {silence:g} s {where} (vm {status})",
                status,
            )
        if now - start > timeouts.total:
            status = _status(qmp, qmp_log)
            return finish("timeout", f"run exceeded {timeouts.total:g} s (vm {status})", status)
        # Wait on QEMU itself, not a fixed sleep: its exit ends the run at once.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=POLL)


def qemu_children(pid: int) -> list[int]:
    """QEMU machines whose parent is `pid`, found through /proc (never by name alone):
    how tests and the soak check that no run left a machine behind. A `qemu --version`
    asked for the results is no machine (it has no -kernel)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and argv[0].endswith(profiles.QEMU.encode()) and b"-kernel" in argv:
            found.append(int(entry.name))
    return found


def _status(qmp: QEMUMonitorProtocol, qmp_log: _QMPLog) -> str:
    try:
        qmp.settimeout(5)
        qmp_log.write("cmd", "query-status")
        # qemu.qmp types a command's return value as object; query-status's is a dict
        reply = cast(dict[str, Any], qmp.cmd("query-status"))
        qmp_log.write("reply", reply)
        return str(reply.get("status", "?"))
    except Exception as e:  # noqa: BLE001
        return f"QMP unresponsive: {e}"


def _stop(proc: subprocess.Popen[bytes], qmp: QEMUMonitorProtocol, qmp_log: _QMPLog) -> None:
    """quit over QMP, then SIGTERM, then SIGKILL: no QEMU is ever left behind."""
    try:
        qmp.settimeout(5)
        qmp_log.write("cmd", "quit")
        qmp.cmd("quit")
    except Exception as e:  # noqa: BLE001
        qmp_log.write("error", str(e))
    if _wait(proc, 5):
        return
    proc.send_signal(signal.SIGTERM)
    if _wait(proc, 5):
        return
    proc.kill()
    proc.wait()


def _wait(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    try:
        proc.wait(timeout=seconds)
        return True
    except subprocess.TimeoutExpired:
        return False


def _qemu_failure(proc: subprocess.Popen[bytes], stderr_path: Path, what: str) -> str:
    rc = proc.poll()
    err = stderr_path.read_text(errors="replace").strip() if stderr_path.exists() else ""
    err_line = " | ".join(line.strip() for line in err.splitlines()[-3:]) or "no stderr"
    if rc is None:
        code = "still running"
    elif rc < 0:
        code = f"killed by signal {signal.Signals(-rc).name}"
    else:
        code = f"exit code {rc}"
    return f"{what}: QEMU {code}: {err_line}"


def _tail(path: Path, n: int = 65536) -> bytes:
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - n))
        return f.read()


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in _tail(path, 8192).decode(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return lines[-1][:160] if lines else ""
