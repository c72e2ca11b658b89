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
