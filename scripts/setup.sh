#!/bin/sh
# Everything netprof needs on a fresh Debian 12 machine that has only Node.js and npm:
# the Debian tools it drives (installed only when missing), its npm dependencies, its build.
# Idempotent and quick when nothing is missing.
set -eu
cd "$(dirname "$0")/.."

need=""
updated=""
want() { command -v "$1" >/dev/null 2>&1 || need="$need $2"; }
want tcpdump tcpdump          # capture: libpcap's kernel filter, pcap stream on stdout
want nft nftables             # counters: the default engine
want iptables-restore iptables  # counters: the original's engine
want ip iproute2              # tests: network namespaces and veth pairs
want conntrack conntrack      # tests: the independent byte-count oracle
want bpftrace bpftrace        # resolve: connect/accept/fork tracepoints
want getent libc-bin
want iperf3 iperf3            # tests and benchmarks: real traffic
want nc netcat-openbsd
want curl curl
want python3 python3-minimal
want promtool prometheus      # tests: a real Prometheus and promtool for deploy/prometheus/
want nethogs nethogs          # benchmarks: the peer profiler the bench compares with (nethogs -t)
# counters over netlink: the native addon in native/nfset binds the kernel's own libraries
want cc build-essential
want make make
want pkg-config pkg-config
pkg-config --exists libnftnl 2>/dev/null || need="$need libnftnl-dev"
pkg-config --exists libmnl 2>/dev/null || need="$need libmnl-dev"
# tests of containers and VMs (issue 13): real runtimes, images and guests made locally
want podman podman            # rootful containers, in a test namespace (see test/support/podman.ts)
want runc runc                # podman's runtime here: crun refuses this machine's hybrid cgroups
# podman's network stack (a Recommends, which --no-install-recommends skips): without it podman
# falls back to CNI, whose bridge and IPAM the tests do not expect
dpkg -s netavark >/dev/null 2>&1 || need="$need netavark"
dpkg -s aardvark-dns >/dev/null 2>&1 || need="$need aardvark-dns"
dpkg -s catatonit >/dev/null 2>&1 || need="$need catatonit"   # podman's --init (the HTCondor wrapper's tests)
want busybox busybox-static   # the container image and the VM's initramfs
want cpio cpio                # the initramfs archive
want qemu-system-x86_64 qemu-system-x86   # a VM under TCG (see test/support/qemu.ts)
if [ -n "$need" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "netprof setup: missing Debian packages:$need (run as root to install them)" >&2
    exit 1
  fi
  echo "netprof setup: installing$need" >&2
  apt-get update -qq
  updated=1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
fi

if [ -f node_modules/.package-lock.json ] && [ ! package-lock.json -nt node_modules/.package-lock.json ]; then
  :
else
  npm ci --no-audit --no-fund
fi
npx tsc -p tsconfig.json

# The addon, against this Node's own headers (node-gyp would otherwise download them); rebuilt
# when a source is newer than the build. Without it the daemon counts through nft, slower.
addon=native/nfset/build/Release/nfset.node
nodedir=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
if [ ! -f "$addon" ] || [ -n "$(find native/nfset -maxdepth 1 -newer "$addon" -type f)" ]; then
  if [ ! -f "$nodedir/include/node/node_api.h" ]; then
    echo "netprof setup: no Node.js headers in $nodedir/include/node; cannot build native/nfset" >&2
    exit 1
  fi
  (cd native/nfset && ../../node_modules/.bin/node-gyp rebuild --loglevel=warn --nodedir="$nodedir" >/dev/null)
fi

# A Debian kernel for the VM tests: vmlinuz, and the modules for a virtio NIC on PCI (virtio_net,
# virtio_pci and what they depend on, e.g. failover, net_failover, virtio_ring, read from each
# module's own depends= field) out of the linux-image package — downloaded, not installed — into
# build/vm/ (gitignored), with modules/order, the order to load them in. Skipped when there.
vm=build/vm
if [ ! -f "$vm/vmlinuz" ] || [ ! -f "$vm/modules/order" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "netprof setup: no guest kernel in $vm (run as root to fetch it)" >&2
    exit 1
  fi
  [ -n "$updated" ] || apt-get update -qq
  kpkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
  if [ -z "$kpkg" ]; then
    echo "netprof setup: cannot tell which linux-image package linux-image-amd64 depends on" >&2
    exit 1
  fi
  echo "netprof setup: fetching $kpkg for the VM tests" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # (apt warns that _apt cannot write to a root-only directory and downloads as root: say
  # nothing unless it fails)
  if ! (cd "$tmp" && apt-get download -qq "$kpkg" >"$tmp/log" 2>&1); then
    cat "$tmp/log" >&2
    exit 1
  fi
  dpkg-deb -x "$tmp"/linux-image-*.deb "$tmp/x"
  rm -rf "$vm"
  mkdir -p "$vm/modules"
  order=""
  # Adds module $1 after its dependencies; a module the package does not ship is built in.
  add_module() {
    local f deps d
    case " $order " in *" $1 "*) return 0 ;; esac
    f=$(find "$tmp/x/lib/modules" \( -name "$1.ko*" -o -name "$(echo "$1" | tr _ -).ko*" \) | head -n 1)
    [ -n "$f" ] || return 0
    case "$f" in
      *.ko.xz) xz -dc "$f" > "$vm/modules/$1.ko" ;;
      *.ko.zst) zstd -qdc "$f" > "$vm/modules/$1.ko" ;;
      *) cp "$f" "$vm/modules/$1.ko" ;;
    esac
    deps=$(tr '\0' '\n' < "$vm/modules/$1.ko" | sed -n 's/^depends=//p' | tr ',' ' ')
    for d in $deps; do add_module "$d"; done
    order="$order $1"
  }
  add_module virtio_pci
  add_module virtio_net
  if [ ! -f "$vm/modules/virtio_net.ko" ]; then
    echo "netprof setup: $kpkg has no virtio_net module" >&2
    exit 1
  fi
  cp "$tmp"/x/boot/vmlinuz-* "$vm/vmlinuz"
  echo "$kpkg" > "$vm/kernel-package"
  echo $order > "$vm/modules/order"
  rm -rf "$tmp"
  trap - EXIT
fi
