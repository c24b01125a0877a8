"""The harness on a bad day: silent guests, dying QEMUs, bad inputs, broken caches,
concurrent runs, full disks, hostile tarballs. Real QEMU, real files, real signals."""

from __future__ import annotations

import http.server
import io
import json
import os
import signal
import struct
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, loopback_http, project_home, s2fault, unique_variant_home
from s2fault import cache
from s2fault.errors import InfraError, InputError
from s2fault.kernel import image
from s2fault.machine import qemu_children
from s2fault.source import archive


def spinning_image(path: Path) -> Path:
    """A valid arm64 Image header whose first instruction branches to itself: a
    kernel that hangs before printing anything."""
    head = bytearray(64)
    struct.pack_into("<I", head, 0, 0x14000000)  # b .
    struct.pack_into("<QQQ", head, 8, 0, 1 << 20, 3 << 1)  # text_offset, size, 64K pages
    struct.pack_into("<I", head, 56, image.ARM64_MAGIC)
    path.write_bytes(bytes(head) + b"\0" * 4096)
    return path


def start_run(kernel: Path, tmp_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "s2fault", "-q", "run", "--kernel", str(kernel),
         "--json", str(tmp_path / "v.json"), "--results", str(tmp_path / "runs"), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_console(tmp_path: Path, needle: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in (tmp_path / "runs").glob("*/console.log"):
            if needle in log.read_text(errors="replace"):
                return
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} never appeared on the console")


# --- bad input: one line, exit 2, no traceback ---------------------------------------

@pytest.mark.parametrize("args,message", [
    (["run", "--kernel", "/nonexistent/Image"], "kernel '/nonexistent/Image' does not exist"),
    (["run", "--kernel", str(ROOT / "README.md")], "is not an arm64 Image"),
    (["build", "--variant", "no-such-variant"], "unknown variant 'no-such-variant' (valid: "),
    (["check", "--variant", "no-such-variant"], "unknown variant 'no-such-variant' (valid: "),
    (["build", "--fragment", "no-such-fragment"], "config fragment 'no-such-fragment' not found"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    r = s2fault(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr


def test_too_little_memory_for_the_hugepage_says_how_much(tmp_path):
    r = s2fault("run", "--kernel", str(spinning_image(tmp_path / "Image")), "--memory", "1024")
    assert r.returncode == 2
    # Refused with the option's range before anything boots (options.py).
    assert "--memory 1024: out of range" in r.stderr
    assert "one 512 MiB hugepage needs at least 3072 MiB" in r.stderr


def test_missing_host_tool_names_the_package(tmp_path):
    env = {"PATH": "/nonexistent"}
    r = s2fault("run", "--kernel", str(spinning_image(tmp_path / "Image")), env=env)
    assert r.returncode == 2
    assert "missing host tool 'qemu-system-aarch64' (Debian package: qemu-system-arm)" in r.stderr


def test_patch_that_does_not_apply_names_patch_and_hunk(tmp_path):
    home = project_home(tmp_path / "home")
    (home / "patches" / "broken").mkdir()
    (home / "patches" / "broken" / "variant.toml").write_text('description = "broken"\n')
    (home / "patches" / "broken" / "0001-broken.patch").write_text(
        "--- a/Makefile\n+++ b/Makefile\n@@ -1,3 +1,3 @@\n"
        " # no such line 1\n-# no such line 2\n+# replaced\n # no such line 3\n")
    r = s2fault("build", "--variant", "broken", env={"S2FAULT_HOME": str(home)})
    assert r.returncode == 2
    assert ("patch broken/0001-broken.patch does not apply: Hunk #1 FAILED at 1 in Makefile"
            in r.stderr)


@pytest.mark.slow
def test_dropped_config_symbol_is_named(tmp_path):
    frag = tmp_path / "bogus.config"
    frag.write_text("CONFIG_S2FAULT_NO_SUCH_SYMBOL=y\n")
    r = s2fault("build", "--fragment", str(frag))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "olddefconfig dropped requested symbols: CONFIG_S2FAULT_NO_SUCH_SYMBOL=y (got n)" \
        in r.stderr


# --- infrastructure trouble: its own outcome, exit 2, no QEMU left -------------------

@pytest.mark.slow
def test_kernel_that_never_prints_is_no_output_not_a_verdict(tmp_path):
    p = start_run(spinning_image(tmp_path / "Image"), tmp_path, "--no-output-timeout", "4")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2, out + err
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["verdict"] == "error" and v["machine"]["outcome"] == "no_output"
    assert "no output for 4 s (nothing printed at all)" in v["reason"]
    assert qemu_children(p.pid) == []


@pytest.mark.slow
def test_guest_that_stops_printing_mid_run(upstream_build, tmp_path):
    p = start_run(upstream_build.image, tmp_path, "--no-output-timeout", "5")
    wait_for_console(tmp_path, "Booting Linux")
    (qemu,) = qemu_children(p.pid)
    os.kill(qemu, signal.SIGSTOP)  # the guest freezes: no more console output, QMP silent
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2, out + err
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["machine"]["outcome"] == "no_output" and "no output for 5 s after '" in v["reason"]
    assert "QMP unresponsive" in v["reason"]
    assert not Path(f"/proc/{qemu}").exists()


@pytest.mark.slow
def test_qemu_killed_from_outside(upstream_build, tmp_path):
    p = start_run(upstream_build.image, tmp_path)
    wait_for_console(tmp_path, "Booting Linux")
    (qemu,) = qemu_children(p.pid)
    os.kill(qemu, signal.SIGKILL)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2, out + err
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["verdict"] == "error" and "killed by signal SIGKILL" in v["reason"]


def test_a_cpu_model_qemu_cannot_run_is_refused_before_boot(tmp_path):
    """It used to reach QEMU's own refusal, wrapped in a QMP connection error."""
    p = start_run(spinning_image(tmp_path / "Image"), tmp_path, "--cpu", "no-such-cpu")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2, out + err
    assert err.strip().startswith("s2fault: error: --cpu no-such-cpu: not a CPU model")
    assert not (tmp_path / "v.json").exists() and not (tmp_path / "runs").exists()


# --- caches -----------------------------------------------------------------------------

@pytest.mark.slow
def test_corrupted_kernel_entry_is_rebuilt_not_booted(upstream_build):
    from s2fault import kernel

    image_path = upstream_build.image
    data = image_path.read_bytes()
    # Truncated, as a new file renamed over it: run directories hold hard links to the
    # cached Image (machine._keep), and writing through the entry's inode would cut
    # theirs too (the results of an earlier `make check` on this machine).
    cut = image_path.with_name(".Image.cut")
    cut.write_bytes(data[: len(data) // 2])
    os.replace(cut, image_path)
    rebuilt = kernel.build("upstream")
    assert not rebuilt.cached and rebuilt.key == upstream_build.key
    assert cache.Entry("kernels", rebuilt.key, rebuilt.dir.parent.parent).verify()
    assert rebuilt.image.read_bytes() == data


@pytest.mark.slow
def test_interrupted_build_publishes_nothing_and_next_build_succeeds(tmp_path):
    # A key of its own every time, so the build really runs (and is really interrupted).
    env, name = unique_variant_home(tmp_path, f"interrupt {os.getpid()} {time.time()}")
    env = os.environ | env
    cmd = [sys.executable, "-m", "s2fault", "build", "--variant", name]
    # SIGINT's default disposition whatever the suite inherited (see test_cache).
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    for line in p.stderr:
        if f"{name}: build" in line or time.monotonic() > deadline:
            break
    # An incremental build of one changed file is seconds: interrupt it early.
    time.sleep(1)
    assert p.poll() is None, "the build ended before it could be interrupted"
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=120)
    assert p.returncode == 130
    kernels = Path.home() / ".cache" / "s2fault" / "kernels"
    if os.environ.get("S2FAULT_CACHE"):
        kernels = Path(os.environ["S2FAULT_CACHE"]) / "kernels"
    # This build's staging directory only: the cache is shared, and another run's
    # build in progress has one of its own.
    key = _build_key(name, env)
    assert not [d for d in kernels.iterdir() if d.name.startswith(f".tmp-{key}-")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
    assert r.returncode == 0 and "built" in r.stdout, r.stdout + r.stderr
    assert f"key:    {key}" in r.stdout


def _build_key(name: str, env: dict) -> str:
    code = ("import sys; from s2fault import project, source; "
            "from s2fault.kernel import kconfig, key, variants; "
            "print(key.build_key(source.resolve(None, project.cache_dir()), "
            "variants.load(sys.argv[1]), kconfig.fragment_paths()))")
    return subprocess.run([sys.executable, "-c", code, name], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.mark.slow
def test_two_runs_at_once_build_once(tmp_path):
    env, name = unique_variant_home(tmp_path, f"concurrent {os.getpid()} {time.time()}")
    cmd = [sys.executable, "-m", "s2fault", "-q", "build", "--variant", name]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=os.environ | env) for _ in range(2)]
    outs = [p.communicate(timeout=1800) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    states = sorted(o[0].split(":")[1].split()[0] for o in outs)
    assert states == ["built", "cached"]


@pytest.mark.slow
def test_disk_full_is_a_clear_error_and_leaves_nothing(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)])
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        res = s2fault("build", env={"S2FAULT_CACHE": str(mnt)})
        assert res.returncode == 2, res.stdout + res.stderr
        assert "No space left on device" in res.stderr and "Traceback" not in res.stderr
        leftovers = [p for p in (mnt / "sources").iterdir() if p.name.startswith(".tmp-")]
        assert leftovers == []
    finally:
        subprocess.run(["umount", str(mnt)])


# --- security basics ------------------------------------------------------------------

def _tar_with(tmp_path: Path, name: str, linkname: str | None = None) -> Path:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        if linkname:
            info.type, info.linkname = tarfile.SYMTYPE, linkname
            tar.addfile(info)
        else:
            data = b"x"
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(params=["own-check"]
                + (["stdlib-filter"] if archive.HAVE_TAR_FILTERS else []))
def extraction(request, monkeypatch):
    """Both ways of checking members where this Python has both: tarfile's filter
    (Python >= 3.11.4) and the check used where it is missing (Debian 12's 3.11.2)."""
    monkeypatch.setattr(archive, "HAVE_TAR_FILTERS", request.param == "stdlib-filter")
    return request.param


@pytest.mark.parametrize("name,link", [("../escape", None), ("/abs/escape", None),
                                       ("link", "/etc/passwd"), ("sub/up", "../../escape")])
def test_tarball_members_escaping_the_destination_are_refused(tmp_path, name, link, extraction):
    with pytest.raises(InputError, match="unsafe member"):
        archive.unpack(_tar_with(tmp_path, name, link), tmp_path / "dest")
    assert not (tmp_path / "escape").exists()


def test_tarball_device_files_are_refused(tmp_path, extraction):
    path = tmp_path / "dev.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("null")
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        tar.addfile(info)
    with pytest.raises(InputError, match="unsafe member"):
        archive.unpack(path, tmp_path / "dest")


def test_tarball_xz_is_unpacked_with_safe_modes_and_inner_links(tmp_path, extraction):
    """A tree like a kernel tarball's, compressed with xz (the streaming path): files,
    a relative symlink inside the tree, a set-uid bit that must not survive."""
    tree = tmp_path / "linux"
    (tree / "scripts").mkdir(parents=True)
    (tree / "Makefile").write_text("all:\n")
    (tree / "scripts" / "tool").write_text("#!/bin/sh\n")
    os.chmod(tree / "scripts" / "tool", 0o4777)
    (tree / "scripts" / "link").symlink_to("../Makefile")
    path = tmp_path / "linux.tar.xz"
    with tarfile.open(path, "w:xz") as tar:
        tar.add(tree, arcname="linux")
    archive.unpack(path, tmp_path / "dest")
    out = tmp_path / "dest" / "linux"
    assert (out / "scripts" / "link").read_text() == "all:\n"
    assert os.stat(out / "scripts" / "tool").st_mode & 0o7777 == 0o755


def test_truncated_xz_tarball_is_named(tmp_path):
    path = tmp_path / "cut.tar.xz"
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        info = tarfile.TarInfo("big")
        payload = os.urandom(200_000)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    with pytest.raises(InputError, match="cannot be read"):
        archive.unpack(path, tmp_path / "dest")


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no Debian python3")
def test_unpack_on_debians_own_python(tmp_path):
    """Debian 12's /usr/bin/python3 is 3.11.2, older than tarfile's filters: the same
    unpack, good and hostile archives, under that interpreter whatever runs the suite."""
    good = tmp_path / "good.tar.xz"
    with tarfile.open(good, "w:xz") as tar:
        info = tarfile.TarInfo("linux/Makefile")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"all:"))
    evil = _tar_with(tmp_path, "link", "/etc/passwd")
    script = (
        "import sys; from pathlib import Path\n"
        "from s2fault.source import archive as source_archive\n"
        "from s2fault.errors import InputError\n"
        "print(sys.version.split()[0], source_archive.HAVE_TAR_FILTERS)\n"
        "source_archive.unpack(Path(sys.argv[1]), Path(sys.argv[3]) / 'good')\n"
        "try:\n    source_archive.unpack(Path(sys.argv[2]), Path(sys.argv[3]) / 'evil')\n"
        "except InputError as e:\n    print('refused:', e)\n"
    )
    r = subprocess.run(["/usr/bin/python3", "-c", script, str(good), str(evil), str(tmp_path)],
                       capture_output=True, text=True, env={**os.environ,
                       "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "good" / "linux" / "Makefile").read_text() == "all:"
    assert "refused: tarball" in r.stdout and "unsafe member" in r.stdout, r.stdout
    assert not (tmp_path / "evil" / "link").exists()


class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b"kernel tarball bytes"

    def do_GET(self):  # noqa: N802 - the http.server API
        if self.path == "/slow":
            time.sleep(3)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    with loopback_http(_Handler) as url:
        yield url


def test_download_verified_by_sha256(http_server, tmp_path, monkeypatch):
    import hashlib

    good = hashlib.sha256(_Handler.payload).hexdigest()
    path = archive.fetch(f"{http_server}/linux.tar.xz", good, tmp_path)
    assert path.read_bytes() == _Handler.payload
    with pytest.raises(InputError, match="does not match"):
        archive.fetch(f"{http_server}/other.tar.xz", "0" * 64, tmp_path)
    monkeypatch.setattr(archive, "DOWNLOAD_TIMEOUT", 0.5)
    monkeypatch.setattr(archive, "RETRY_BACKOFF", 0)  # each retry also times out
    with pytest.raises(InfraError, match="download of .*/slow failed"):
        archive.fetch(f"{http_server}/slow", "1" * 64, tmp_path)
    assert not [p for p in (tmp_path / "downloads").iterdir() if p.name.startswith(".tmp-")]


def test_scratch_directories_are_private(tmp_path):
    from s2fault import runner

    d = runner.new_run_dir(tmp_path, "x")
    assert d.stat().st_mode & 0o777 == 0o700
