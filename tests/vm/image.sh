# shellcheck shell=bash
# Sourced by tests/vm/run: the recipe of the x86_64 guest (Debian 12 root image, Debian's
# cloud kernel, a busybox initramfs). This file, the files under tests/vm/guest/ that go into
# the image, the mirror and the kernel version make the cache key: change any of them and
# the next run rebuilds the guest. tests/vm/guest/test.sh is NOT in the image (it travels on
# the share disk with the slate binary), so editing the tests never rebuilds anything.
# Needs cross/lib.sh sourced first (cross_apt_install, cross_unpack, cross_log, cross_die).

VM_SUITE=bookworm
# What the hosts slate targets run, plus busybox-static (the initramfs' shell),
# docker-registry (disabled at boot, started by the tests that need it) and curl (pushes
# images to it through the registry API: autoupdate.sh), and the CNI plugins and iptables
# that --network bridge and -p need (network.sh).
VM_PACKAGES=(systemd systemd-sysv udev dbus iproute2 procps kmod util-linux busybox-static docker-registry curl
  containernetworking-plugins iptables)
# Modules the initramfs needs to reach the root disk; the guest root gets all of them.
VM_INITRD_MODULES=(virtio_pci virtio_blk)
VM_ROOT_SIZE=2G

VM_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# The Debian mirror this machine's apt uses (the guest is built from the same archive).
# deb822 .sources files first, then one-line sources.list entries. SLATE_VM_MIRROR overrides.
vm_mirror() {
  if [ -n "${SLATE_VM_MIRROR:-}" ]; then echo "$SLATE_VM_MIRROR"; return 0; fi
  local f m
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # A stanza whose Suites has the plain suite (not -security/-updates only).
    m=$(awk -v s="$VM_SUITE" '
      /^[[:space:]]*$/ { if (u != "" && ok) { print u; exit } u=""; ok=0; next }
      /^URIs:/ { u=$2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) ok=1 }
      END { if (u != "" && ok) print u }' "$f" | head -1)
    [ -n "$m" ] && { echo "$m"; return 0; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    m=$(awk -v s="$VM_SUITE" '$1 == "deb" && $3 == s { print $2; exit }' "$f")
    [ -n "$m" ] && { echo "$m"; return 0; }
  done
  cross_die "no $VM_SUITE entry in /etc/apt/sources.list*; set SLATE_VM_MIRROR"
}

# The versioned kernel package behind linux-image-cloud-amd64 (e.g. linux-image-6.1.0-57-cloud-amd64).
vm_kernel_pkg() {
  local k
  k=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$k" ] || cross_die "cannot find the kernel package behind linux-image-cloud-amd64 (apt-get update?)"
  echo "$k"
}

# The cache key: the recipe's own text plus the inputs it reads from the outside.
vm_guest_key() {
  local kpkg="$1" kver
  kver=$(apt-cache policy "$kpkg" | awk '/Candidate:/ {print $2}')
  {
    cat "$VM_HERE/image.sh" "$VM_HERE/guest/initramfs-init" \
        "$VM_HERE/guest/slate-vm-test" "$VM_HERE/guest/slate-vm-test.service"
    echo "mirror=$(vm_mirror) kernel=$kpkg=$kver"
  } | sha256sum | cut -c1-16
}

# vm_build_guest OUT KERNELPKG: OUT/{vmlinuz,initramfs.cpio.gz,root.img}. Run as root
# (debootstrap, chroot, mknod). Builds in OUT.tmp and renames, so a half-built guest is
# never taken for a cached one.
vm_build_guest() {
  local out="$1" kpkg="$2" tmp="$1.tmp"
  local mirror; mirror=$(vm_mirror)
  rm -rf "$tmp"
  mkdir -p "$tmp"
  local root="$tmp/root"

  # --- Kernel: unpacked, never installed (neither here nor in the guest: no initramfs-tools).
  cross_unpack "$tmp/kernel" "$kpkg"
  local kver
  kver=$(basename "$(ls -d "$tmp/kernel/lib/modules/"*)")
  cp "$tmp/kernel/boot/vmlinuz-$kver" "$tmp/vmlinuz"

  # --- Root: debootstrap straight into the tree (as root, so device nodes are real ones;
  # see VM-NOTES on dev/null from a plain cp).
  local inc; inc=$(IFS=,; echo "${VM_PACKAGES[*]}")
  cross_log "debootstrap --variant=minbase $VM_SUITE from $mirror (a few minutes)"
  debootstrap --variant=minbase --include="$inc" "$VM_SUITE" "$root" "$mirror" \
    > "$tmp/debootstrap.log" 2>&1 || { tail -20 "$tmp/debootstrap.log" >&2; cross_die "debootstrap failed (log: $tmp/debootstrap.log)"; }
  [ -c "$root/dev/null" ] || { rm -f "$root/dev/null"; mknod -m 666 "$root/dev/null" c 1 3; }

  # The kernel's modules (overlay, veth, bridge...), indexed in the guest for modprobe.
  mkdir -p "$root/lib/modules"
  cp -a "$tmp/kernel/lib/modules/$kver" "$root/lib/modules/"
  chroot "$root" depmod -a "$kver"

  # Boot straight to the tests: no first-boot questions, no timers, no gettys but ttyS0's.
  echo slate-vm > "$root/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 slate-vm\n' > "$root/etc/hosts"
  echo '/dev/vda / ext4 rw,noatime 0 0' > "$root/etc/fstab"
  # A fixed machine id: the guest is never a "first boot", so systemd-firstboot asks nothing.
  echo 5ac7e0000000400080000000000000f0 > "$root/etc/machine-id"
  local u
  for u in systemd-firstboot.service apt-daily.timer apt-daily-upgrade.timer \
           e2scrub_all.timer e2scrub_reap.service fstrim.timer systemd-timesyncd.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$u"
  done
  # docker-registry stays installed but does not start at boot (a test starts it if it needs it).
  rm -f "$root/etc/systemd/system/multi-user.target.wants/docker-registry.service"
  # journald: keep the journal in memory (the root disk is a snapshot anyway).
  mkdir -p "$root/etc/systemd/journald.conf.d"
  printf '[Journal]\nStorage=volatile\n' > "$root/etc/systemd/journald.conf.d/vm.conf"

  # The test launcher: mounts the share disk and runs its test.sh, then powers off.
  install -m 0755 "$VM_HERE/guest/slate-vm-test" "$root/usr/local/sbin/slate-vm-test"
  install -m 0644 "$VM_HERE/guest/slate-vm-test.service" "$root/etc/systemd/system/slate-vm-test.service"
  ln -sf ../slate-vm-test.service "$root/etc/systemd/system/multi-user.target.wants/slate-vm-test.service"
  rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*

  # --- Initramfs: the guest's own busybox and the virtio modules in dependency order
  # (modprobe --show-depends of the guest's kmod against the modules.dep made above).
  local ird="$tmp/initramfs"
  mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/vm-modules}
  cp "$root/bin/busybox" "$ird/bin/busybox"
  mknod -m 600 "$ird/dev/console" c 5 1
  mknod -m 666 "$ird/dev/null" c 1 3
  install -m 0755 "$VM_HERE/guest/initramfs-init" "$ird/init"
  local m line f n=0
  declare -A seen=()
  for m in "${VM_INITRD_MODULES[@]}"; do
    while read -r line; do
      case "$line" in insmod\ *) ;; *) continue ;; esac
      f=$(echo "$line" | awk '{print $2}')
      [ -n "${seen[$f]:-}" ] && continue
      seen[$f]=1
      n=$((n + 1))
      local dst; dst=$(printf '%s/%02d-%s' "$ird/lib/vm-modules" "$n" "$(basename "${f%%.ko*}").ko")
      case "$f" in
        *.ko.xz) xz -dc "$root$f" > "$dst" ;;
        *.ko.zst) zstd -qdc "$root$f" > "$dst" ;;
        *) cp "$root$f" "$dst" ;;
      esac
    done < <(chroot "$root" modprobe -S "$kver" --show-depends "$m")
  done
  [ "$n" -gt 0 ] || cross_die "no module found for ${VM_INITRD_MODULES[*]} in $kpkg"
  (cd "$ird" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) | gzip -1 > "$tmp/initramfs.cpio.gz"

  # --- Root image from the tree, no loop mount.
  mkfs.ext4 -q -F -L slate-vm-root -d "$root" "$tmp/root.img" "$VM_ROOT_SIZE"
  rm -rf "$root" "$ird" "$tmp/kernel"
  rm -rf "$out"
  mv "$tmp" "$out"
}
