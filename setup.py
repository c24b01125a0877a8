"""Package data: the modes (profiles/*.toml) and the static aarch64 programs of
guests/ (the VMM, init and its helpers), built by the cross toolchain into s2fault/bin/
of a wheel or a regular install, so that `pip install` on an arm64 host is all
`s2fault host-run` needs. On an arm64 Debian host aarch64-linux-gnu-gcc is the native
compiler, so `pip install .` there builds them too. An editable install (make setup)
skips this: a checkout builds them on first use into the cache (guest/__init__.py), where the
nested runs take them from, and reads profiles/ from the checkout."""

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CROSS_COMPILE = "aarch64-linux-gnu-"


class BuildPyWithGuests(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        if shutil.which(CROSS_COMPILE + "gcc") is None:
            raise SystemExit(f"s2fault: building the package needs {CROSS_COMPILE}gcc "
                             "(Debian package: gcc-aarch64-linux-gnu; on arm64: gcc) for "
                             "the static VMM it ships")
        out = (Path(self.build_lib) / "s2fault" / "bin").resolve()
        subprocess.run(["make", "-C", "guests", f"O={out}", f"CROSS_COMPILE={CROSS_COMPILE}"],
                       check=True)
        for obj in out.glob("*.o"):
            obj.unlink()
        # The modes (profiles/*.toml): an installed package has no checkout beside it.
        modes = Path(self.build_lib) / "s2fault" / "profiles"
        modes.mkdir(parents=True, exist_ok=True)
        for toml in Path("profiles").glob("*.toml"):
            shutil.copyfile(toml, modes / toml.name)


setup(cmdclass={"build_py": BuildPyWithGuests})
