# Sourced by the cross/ scripts: where things live, the pinned Debian Rust toolchain, and
# the helpers that install or unpack Debian packages only when they are missing.
# See ../../shared/CROSS-NOTES.md for why each ingredient is the way it is.

# Debian's Rust: the host compiler and the two target std packages must be this exact
# version (rustc refuses a std built by another compiler). rustup's toolchains here only
# have the x86_64 std and cannot download others, hence Debian's.
CROSS_RUST_VERSION="${CROSS_RUST_VERSION:-1.85.0+dfsg3-1~deb12u3}"

CROSS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Everything downloaded or generated goes here: /target is gitignored.
CROSS_OUT="$CROSS_ROOT/target/cross"
CROSS_DEBS="$CROSS_OUT/debs"
# A target dir of our own: the host (rustup) builds of other engineers use target/ and
# must never be invalidated by a different compiler's artifacts.
CROSS_TARGET_DIR="$CROSS_OUT/build"
CROSS_SYSROOT="$CROSS_OUT/sysroot-$CROSS_RUST_VERSION"

# Our names -> Rust triples. armv7 is hard-float (Pi 2 and later). There is no armv6 entry:
# Debian ships no std for arm-unknown-linux-gnueabihf (see README, "ARM builds").
declare -A CROSS_TRIPLE=(
  [aarch64]=aarch64-unknown-linux-gnu
  [armv7]=armv7-unknown-linux-gnueabihf
)
declare -A CROSS_GNU=(      # GNU triple: cross gcc prefix and qemu-user's -L library root
  [aarch64]=aarch64-linux-gnu
  [armv7]=arm-linux-gnueabihf
)
declare -A CROSS_DEBARCH=(  # Debian architecture name of the target std package
  [aarch64]=arm64
  [armv7]=armhf
  [x86_64]=amd64              # not a cross target: the image of tests/vm's x86_64 guest
)
declare -A CROSS_QEMU=(
  [aarch64]=qemu-aarch64-static
  [armv7]=qemu-arm-static
)
CROSS_ARCHES=(aarch64 armv7)

cross_log() { printf 'cross: %s\n' "$*" >&2; }
cross_die() { printf 'cross: error: %s\n' "$*" >&2; exit 1; }

# True when package $1 (optionally "name=version") is installed (at that version).
cross_pkg_installed() {
  local name="${1%%=*}" want="" have
  [[ "$1" == *=* ]] && want="${1#*=}"
  have=$(dpkg-query -W -f='${Status}|${Version}' "$name" 2>/dev/null) || return 1
  [[ "$have" == "install ok installed|"* ]] || return 1
  [ -z "$want" ] || [ "${have#*|}" = "$want" ]
}

_cross_apt_updated=""
cross_apt_update() {
  # Once per script run at most, and only when something is actually missing.
  [ -n "$_cross_apt_updated" ] && return 0
  cross_log "apt-get update"
  # Not fatal: here bookworm-security's arm64/armhf indexes are often mid-sync ("File has
  # unexpected size") while everything we need is in bookworm main. If a package really
  # is missing, the install or download that follows fails with apt's own message.
  apt-get update -qq || cross_log "apt-get update reported errors (above); using the indexes it did fetch"
  _cross_apt_updated=1
}

cross_need_root() {
  [ "$(id -u)" -eq 0 ] || cross_die "$1 must be installed first, which needs root (run as root once)"
}

# Installs the given packages (name or name=version) when missing. Checked with dpkg-query
# first so that a second run makes no network access at all.
cross_apt_install() {
  local missing=() p
  for p in "$@"; do cross_pkg_installed "$p" || missing+=("$p"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  cross_need_root "${missing[*]}"
  cross_log "installing: ${missing[*]}"
  cross_apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The target std (and later the arm64 kernel and busybox) come from foreign-architecture
# packages; apt needs to know those architectures to download them.
cross_foreign_arches() {
  local a added=""
  for a in arm64 armhf; do
    if ! dpkg --print-foreign-architectures | grep -qx "$a"; then
      cross_need_root "the $a architecture"
      dpkg --add-architecture "$a"
      added=1
    fi
  done
  if [ -n "$added" ]; then _cross_apt_updated=""; cross_apt_update; fi
}

# cross_unpack DEST PKG[=VERSION]...: `apt-get download` the packages (not installed: for
# foreign architectures apt cannot install them next to the host's, see CROSS-NOTES) and
# `dpkg -x` them into DEST. A stamp naming the packages makes a second run free.
cross_unpack() {
  local dest="$1"; shift
  local stamp="$dest/.unpacked" want="$*"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  # Only foreign-architecture packages need dpkg to know those architectures (tests/vm
  # unpacks native amd64 ones; callers of bare names of arm packages call it themselves).
  case " $want" in *:arm64*|*:armhf*) cross_foreign_arches ;; esac
  mkdir -p "$CROSS_DEBS"
  local p files=()
  for p in "$@"; do
    # apt-get download names the file name_version_arch.deb; find it again by prefix.
    local base="${p%%=*}"; base="${base%%:*}"
    if ! (cd "$CROSS_DEBS" && apt-get download -q "$p" >/dev/null 2>"$CROSS_DEBS/apt.err"); then
      # The index may simply be stale (a point release replaced the version): refresh once.
      cross_apt_update
      (cd "$CROSS_DEBS" && apt-get download -q "$p" >/dev/null) || cross_die "apt-get download $p failed"
    fi
    files+=("$(ls -t "$CROSS_DEBS/${base}_"*.deb | head -1)")
  done
  rm -rf "$dest.tmp"
  mkdir -p "$dest.tmp"
  local f
  for f in "${files[@]}"; do dpkg -x "$f" "$dest.tmp"; done
  echo "$want" > "$dest.tmp/.unpacked"
  rm -rf "$dest"
  mv "$dest.tmp" "$dest"
}

# Host packages for building: Debian's Rust (pinned, matching the target std), the cross
# C toolchains (linking, and C code in dependencies: ring, zstd-sys) with their glibc
# (static libc.a for +crt-static).
cross_build_deps() {
  cross_apt_install \
    "rustc-web=$CROSS_RUST_VERSION" "cargo-web=$CROSS_RUST_VERSION" \
    "libstd-rust-web-dev=$CROSS_RUST_VERSION" \
    gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf \
    libc6-dev-arm64-cross libc6-dev-armhf-cross
  # Both target std packages in one tree; rustc gets it with --sysroot=<dir>/usr.
  cross_unpack "$CROSS_SYSROOT" \
    "libstd-rust-web-dev:arm64=$CROSS_RUST_VERSION" "libstd-rust-web-dev:armhf=$CROSS_RUST_VERSION"
}

cross_user_deps() { cross_apt_install qemu-user-static strace; }

# Exports what cargo needs for every target: Debian's rustc/cargo, linkers, C compilers,
# rustflags (sysroot, static glibc) and the qemu-user runners for `cargo test`.
# Environment only: nothing here affects a host build in the same checkout.
cross_env() {
  export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
  CROSS_CARGO=/usr/bin/cargo
  export CARGO_TARGET_DIR="$CROSS_TARGET_DIR"
  local a t T g
  for a in "${CROSS_ARCHES[@]}"; do
    t=${CROSS_TRIPLE[$a]}; g=${CROSS_GNU[$a]}
    T=$(echo "$t" | tr 'a-z-' 'A-Z_')
    export "CARGO_TARGET_${T}_LINKER=$g-gcc"
    # Target artifacts only (cargo applies these to --target builds, not to build scripts
    # or proc-macros, which keep the host std). +crt-static: a plain static executable
    # that needs nothing from the board's glibc, whatever its version.
    export "CARGO_TARGET_${T}_RUSTFLAGS=--sysroot=$CROSS_SYSROOT/usr -C target-feature=+crt-static"
    export "CARGO_TARGET_${T}_RUNNER=${CROSS_QEMU[$a]} -L /usr/$g"
    # The cc crate (ring, zstd-sys) would guess these too; say them so nothing else is found.
    export "CC_${t//-/_}=$g-gcc" "AR_${t//-/_}=$g-ar"
  done
}

# A free TCP port on loopback (the kernel picks it; tiny race, fine for tests).
cross_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The busybox-static of Debian architecture $1 (arm64, armhf), unpacked (not installed:
# the host's own busybox-static stays), path printed.
cross_busybox() {
  local d="$CROSS_OUT/busybox-$1"
  cross_unpack "$d" "busybox-static:$1" >&2
  local b
  for b in "$d/bin/busybox" "$d/usr/bin/busybox"; do [ -x "$b" ] && { echo "$b"; return 0; }; done
  cross_die "no busybox in busybox-static:$1"
}

# cross_busybox_image ARCH OCIDIR TAG: an OCI image layout holding a one-layer image with
# the busybox of our arch ARCH (aarch64, armv7, x86_64) and its applet links, its config saying that
# architecture, built with umoci (not with slate: an independent producer, as in tests/demo).
cross_busybox_image() {
  local a="$1" oci="$2" tag="$3" work
  local deb=${CROSS_DEBARCH[$a]} goarch
  case "$a" in aarch64) goarch=arm64 ;; armv7) goarch=arm ;; x86_64) goarch=amd64 ;; esac  # arm without variant = v7
  local bb; bb=$(cross_busybox "$deb")
  work=$(mktemp -d "${TMPDIR:-/tmp}/slate-cross-img.XXXXXX")
  [ -d "$oci" ] || umoci init --layout "$oci" >/dev/null
  umoci new --image "$oci:$tag" >/dev/null
  umoci unpack --rootless --image "$oci:$tag" "$work/bundle" >/dev/null
  mkdir -p "$work/bundle/rootfs/bin"
  cp "$bb" "$work/bundle/rootfs/bin/busybox"
  local x
  for x in sh ls cat echo true uname mount grep sleep; do ln -s busybox "$work/bundle/rootfs/bin/$x"; done
  echo "hello from slate's $a test image" > "$work/bundle/rootfs/hello.txt"
  umoci repack --image "$oci:$tag" "$work/bundle" >/dev/null
  umoci config --image "$oci:$tag" --os linux --architecture "$goarch" \
    --config.cmd /bin/cat --config.cmd /hello.txt >/dev/null
  rm -rf "$work"
}

# Tools the image tests use to make images independently of slate (as tests/deps does).
cross_image_deps() { cross_apt_install docker-registry skopeo umoci curl python3; }
