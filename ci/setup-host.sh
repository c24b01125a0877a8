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

PYTHON=${PYTHON:-python3}
stamp=.venv/.s2fault-setup
if [ ! -x .venv/bin/python ]; then
	echo "setup: creating .venv" >&2
	"$PYTHON" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
	echo "setup: installing s2fault and its test tools into .venv" >&2
	.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
	touch "$stamp"
fi
