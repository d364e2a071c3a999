#!/usr/bin/env bash
# RayOS host set-up: installs every system package the build, the tests and the
# smoke scenarios use. Idempotent; safe to run on every invocation.
#
# The Debian mirror is read from this machine's apt configuration; no registry
# host name is written into the repository.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

debian_mirror() {
    local f uri=""
    for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        uri=$(awk '/^URIs:/ {print $2; exit}' "$f")
        [ -n "$uri" ] && { echo "$uri"; return 0; }
    done
    if [ -r /etc/apt/sources.list ]; then
        uri=$(awk '$1=="deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list)
        [ -n "$uri" ] && { echo "$uri"; return 0; }
    fi
    echo "setup: cannot find a Debian mirror in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list" >&2
    return 1
}

ensure_backports() {
    local list=/etc/apt/sources.list.d/rayos-backports.sources
    if grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null; then
        return 0
    fi
    local mirror
    mirror=$(debian_mirror)
    log "enabling bookworm-backports from $mirror (QEMU 10 with vhost-user devices)"
    $SUDO tee "$list" >/dev/null <<SRC
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    APT_UPDATED=""
}

APT_UPDATED="${APT_UPDATED:-}"
apt_update_once() {
    if [ -z "$APT_UPDATED" ]; then
        log "apt-get update"
        $SUDO apt-get update -q >/dev/null
        APT_UPDATED=1
    fi
}

missing_packages() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
}

# Packages from the stable suite.
BASE_PKGS=(build-essential pkg-config cpio xz-utils zstd ca-certificates tmux libseccomp-dev libcap-ng-dev mmdebstrap e2fsprogs)
# Packages taken from bookworm-backports (QEMU 10: vhost-user-{fs,vsock,gpu,input}-pci).
BACKPORTS_PKGS=(qemu-system-x86)

# rayos-compositor: -dev packages for the Smithay features it enables, and the
# real Wayland clients its tests run (weston-simple-shm from weston, foot,
# wayland-info from wayland-utils); for the winit backend the X11 libraries
# winit and softbuffer load at run time, and Xvfb and ImageMagick (import) for
# its test. The DRM backend links libinput and libseat (as root, libseat's
# built-in seat manager does); its QEMU scenario runs udevd (libinput only
# sees devices udev has tagged). A -dev package must match the version of
# its runtime library: QEMU from backports may have pulled backports Wayland
# libraries in, and then the -dev package comes from backports too.
COMPOSITOR_DEV_PKGS=(libwayland-dev:libwayland-server0 libxkbcommon-dev:libxkbcommon0 libpixman-1-dev:libpixman-1-0 libudev-dev:libudev1 libinput-dev:libinput10 libseat-dev:libseat1)
COMPOSITOR_CLIENT_PKGS=(udev weston foot wayland-utils xvfb imagemagick libx11-6 libx11-xcb1 libxcursor1 libxrandr2 libxi6 libxkbcommon-x11-0 fonts-dejavu-core wl-clipboard)
for pair in "${COMPOSITOR_DEV_PKGS[@]}"; do
    dev=${pair%%:*} lib=${pair##*:}
    if dpkg-query -W -f='${Version}' "$lib" 2>/dev/null | grep -q '~bpo'; then
        BACKPORTS_PKGS+=("$dev")
    else
        BASE_PKGS+=("$dev")
    fi
done
BASE_PKGS+=("${COMPOSITOR_CLIENT_PKGS[@]}")

ensure_backports
need_base=$(missing_packages "${BASE_PKGS[@]}")
need_bpo=$(missing_packages "${BACKPORTS_PKGS[@]}")
if [ -n "$need_base$need_bpo" ]; then
    apt_update_once
    export DEBIAN_FRONTEND=noninteractive
    if [ -n "$need_base" ]; then
        log "installing: $(echo $need_base)"
        # shellcheck disable=SC2086
        $SUDO apt-get install -y -q --no-install-recommends $need_base
    fi
    if [ -n "$need_bpo" ]; then
        log "installing from bookworm-backports: $(echo $need_bpo)"
        # shellcheck disable=SC2086
        $SUDO apt-get install -y -q --no-install-recommends -t bookworm-backports $need_bpo
    fi
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install the Rust toolchain (rustup) first" >&2; exit 1; }
log "system packages ready"
# clippy and rustfmt: scripts/test.sh enforces both.
for c in clippy rustfmt; do
    if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null || { echo "setup: cargo $c is missing and there is no rustup to add it" >&2; exit 1; }
        log "adding the toolchain component $c (rustup)"
        rustup component add "$c" || exit 1
    fi
done

# virtiofsd (the upstream Rust daemon) from crates.io, built once into the
# RayOS tool cache; rayos-vmm and QEMU share folders with guests through it.
VIRTIOFSD_VERSION=1.14.0
TOOLS="${RAYOS_CACHE_DIR:-$HOME/.cache/rayos}/tools"
if ! "$TOOLS/bin/virtiofsd" --version 2>/dev/null | grep -q "$VIRTIOFSD_VERSION"; then
    log "building virtiofsd $VIRTIOFSD_VERSION from crates.io into $TOOLS (about 2 minutes)"
    cargo install --quiet --locked --root "$TOOLS" "virtiofsd@$VIRTIOFSD_VERSION"
fi
log "virtiofsd ready: $TOOLS/bin/virtiofsd"

# cargo-fuzz, for the fuzz targets in vmm/fuzz (run without a sanitizer on stable Rust).
CARGO_FUZZ_VERSION=0.13.2
if ! "$TOOLS/bin/cargo-fuzz" --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    log "building cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS (about 1 minute)"
    cargo install --quiet --locked --root "$TOOLS" "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi
