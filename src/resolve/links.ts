import { readdir, readFile, stat } from 'node:fs/promises';
import { run } from '../util/exec.js';

/**
 * A job's own link, as the daemon's namespace sees it: the host end of a container's veth, or
 * a VM's tap. Everything the job sends or receives crosses it, before any bridge, route or
 * NAT of the host changes the addresses — which is where netprof counts a virtual job.
 */
export interface JobLink {
  /** The host-side device (veth peer or tap). */
  device: string;
  ifindex: number;
  /** The bridge it is a port of, if any (docker0, podman0, virbr0). */
  master?: string;
  kind: 'container' | 'vm';
  /** container: the interface's name inside the job's namespace (eth0). */
  inside?: string;
}

interface IpLink {
  ifindex: number;
  ifname: string;
  link_index?: number;
  master?: string;
}

/** The network namespace of a process, by inode; undefined when it is gone. */
export async function netnsOf(pid: number | 'self', procRoot = '/proc'): Promise<number | undefined> {
  return stat(`${procRoot}/${pid}/ns/net`).then(
    (s) => s.ino,
    () => undefined,
  );
}

async function ipLinks(netPid?: number): Promise<IpLink[]> {
  const args = ['-j', 'link', 'show'];
  // nsenter, not `ip netns exec`: the namespace has no name, only a process in it.
  const r = netPid === undefined ? await run('ip', args) : await run('nsenter', [`--net=/proc/${netPid}/ns/net`, 'ip', ...args]);
  if (r.code !== 0) throw new Error(`ip link show${netPid === undefined ? '' : ` in the namespace of pid ${netPid}`}: ${r.stderr.trim().split('\n')[0] ?? `exit ${r.code}`}`);
  return parseIpLinks(r.stdout);
}

export function parseIpLinks(json: string): IpLink[] {
  const doc = JSON.parse(json) as unknown;
  if (!Array.isArray(doc)) throw new Error('ip -j link show: not a list');
  return doc.flatMap((l: Record<string, unknown>) =>
    typeof l.ifindex === 'number' && typeof l.ifname === 'string'
      ? [{ ifindex: l.ifindex, ifname: l.ifname, ...(typeof l.link_index === 'number' ? { link_index: l.link_index } : {}), ...(typeof l.master === 'string' ? { master: l.master } : {}) }]
      : [],
  );
}

/**
 * A container's links: each veth inside its namespace whose peer is in ours. The pair is
 * matched both ways (our end's peer index is its interface, its peer index is our end), since
 * interface indexes are per namespace and alone may collide.
 */
export async function containerLinks(pid: number): Promise<JobLink[]> {
  const [inside, host] = await Promise.all([ipLinks(pid), ipLinks()]);
  const out: JobLink[] = [];
  for (const i of inside) {
    if (i.link_index === undefined) continue;
    const h = host.find((x) => x.ifindex === i.link_index && x.link_index === i.ifindex);
    if (h) out.push({ device: h.ifname, ifindex: h.ifindex, kind: 'container', inside: i.ifname, ...(h.master ? { master: h.master } : {}) });
  }
  return out;
}

/** The taps a process holds open (qemu's NICs): /proc/PID/fdinfo shows `iff: NAME` for a tun fd. */
export async function tapsOf(pid: number, procRoot = '/proc'): Promise<string[]> {
  const fds = await readdir(`${procRoot}/${pid}/fdinfo`).catch(() => [] as string[]);
  const names = new Set<string>();
  for (const fd of fds) {
    const text = await readFile(`${procRoot}/${pid}/fdinfo/${fd}`, 'utf8').catch(() => '');
    const m = /^iff:\s*(\S+)/m.exec(text);
    if (m) names.add(m[1]!);
  }
  return [...names];
}

/** Taps in our namespace, as links: a tap another namespace holds is not ours to count. */
export async function vmLinks(taps: readonly string[]): Promise<JobLink[]> {
  if (!taps.length) return [];
  const host = await ipLinks();
  return taps.flatMap((t) => {
    const h = host.find((x) => x.ifname === t);
    return h ? [{ device: h.ifname, ifindex: h.ifindex, kind: 'vm' as const, ...(h.master ? { master: h.master } : {}) }] : [];
  });
}
