#!/bin/sh
# Everything netprof needs on a fresh Debian 12 machine that has only Node.js and npm:
# the Debian tools it drives (installed only when missing), its npm dependencies, its build.
# Idempotent and quick when nothing is missing.
set -eu
cd "$(dirname "$0")/.."

need=""
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
if [ -n "$need" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "netprof setup: missing Debian packages:$need (run as root to install them)" >&2
    exit 1
  fi
  echo "netprof setup: installing$need" >&2
  apt-get update -qq
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
