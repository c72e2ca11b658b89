import { EventEmitter } from 'node:events';
import type { ConnKey } from './connection.js';
import type { Config } from './config/config.js';
import { Capture, LocalAddresses } from './capture/index.js';
import { NftablesEngine, pendTimeoutFor, type Installed } from './counters/index.js';
import { Resolver, type Attribution, type Lineage, type Tracer } from './resolve/index.js';
import { containerLinks, netnsOf, tapsOf, vmLinks, type JobLink } from './resolve/links.js';
import type { LinkOpener, OpenedLink } from './profiler/link-sites.js';
import { run } from './util/exec.js';
import { canonicalAddr } from './counters/tuple.js';
import { diag } from './util/diag.js';

/** Our link tables: `netdev netprof_l<ifindex>`, one per counted link of this namespace. */
const LINK_TABLE = /^netprof_l\d+$/;
const linkTable = (l: JobLink): string => `netprof_l${l.ifindex}`;

/**
 * The kernel-facing half of containers and VMs: finds a registered process's links, and for
 * each starts a netdev table on it, a capture per direction, and the resolver of the job's
 * namespace (a VM's guest has none we can read: its connections are the VM process's).
 */
export function linkOpener(o: { config: Config; tracer: Tracer; lineage: Lineage }): LinkOpener {
  const ours = netnsOf('self');
  return {
    async discover(pid: number): Promise<JobLink[]> {
      const theirs = await netnsOf(pid);
      if (theirs === undefined) return [];
      const links = theirs !== (await ours) ? await containerLinks(pid) : [];
      links.push(...(await vmLinks(await tapsOf(pid))));
      return links;
    },

    async named(device: string): Promise<JobLink | undefined> {
      return (await vmLinks([device]))[0];
    },

    async open(link: JobLink, pid: number): Promise<OpenedLink> {
      const engine = new NftablesEngine({ capacity: o.config.rulesThreshold, setSize: Math.min(o.config.setSize, 65_536), table: linkTable(link), link: link.device, pendTimeout: pendTimeoutFor(o.config.lateGrace) });
      const left = await engine.start();
      if (left.length) diag.warn('a link table of an earlier run was replaced', { link: link.device, connections: left.length });
      const capture = new Capture({ interfaces: [link.device], local: new LocalAddresses(), link: true });
      capture.on('warning', (w) => diag.warn('capture', { warning: w }));
      try {
        await capture.start();
      } catch (e) {
        await engine.stop();
        throw e;
      }
      let resolver: GuestResolver | Resolver;
      try {
        resolver = link.kind === 'vm' ? new GuestResolver(pid) : await Resolver.create({ netPid: pid, lineage: o.lineage, tracer: o.tracer });
      } catch (e) {
        // The process died meanwhile: nothing of this link may stay behind.
        await capture.stop();
        await engine.stop();
        throw e;
      }
      return {
        engine,
        capture,
        resolver,
        ...(link.kind === 'container' ? { translate: new NatLookup().lookup } : {}),
        async close() {
          await capture.stop();
          if (resolver instanceof Resolver) resolver.close();
          await engine.stop();
        },
      };
    },
  };
}

/** A VM's tap carries only its guest's traffic: every connection on it is the VM process's. */
class GuestResolver extends EventEmitter {
  constructor(private readonly pid: number) {
    super();
  }

  async resolve(): Promise<Attribution> {
    return { pid: this.pid, source: 'tap', exact: true };
  }
}

/** What a killed run left on links: each table harvested for its records, then removed. */
export async function harvestLinkTables(): Promise<Installed[]> {
  const r = await run('nft', ['-j', 'list', 'tables', 'netdev']);
  if (r.code !== 0) return [];
  const names = (JSON.parse(r.stdout).nftables as Array<{ table?: { name?: string } }>).flatMap((i) => (i.table?.name && LINK_TABLE.test(i.table.name) ? [i.table.name] : []));
  const out: Installed[] = [];
  for (const table of names) {
    // The device may be gone: only the table's name and family matter for a harvest.
    const engine = new NftablesEngine({ capacity: 1, table, link: 'harvest' });
    out.push(...(await engine.harvestAndDrop().catch((e: Error) => (diag.error('cannot harvest a link table', { table, error: e.message }), []))));
  }
  return out;
}

/**
 * Where NAT put a container's end, from conntrack in our namespace: for a connection the job
 * opened its tuple is conntrack's original and the reply is addressed to the translation; for
 * one it accepted (a published port) the reply is the job's tuple and the original was
 * addressed to the translation. Asked in batches (one listing per direction per 50 ms, filtered
 * by the container's address), not once per connection: a spawn costs milliseconds.
 */
class NatLookup {
  private queue: Array<{ key: ConnKey; done: (t: { addr: string; port: number } | undefined) => void }> = [];
  private timer: NodeJS.Timeout | undefined;

  lookup = (key: ConnKey): Promise<{ addr: string; port: number } | undefined> =>
    new Promise((done) => {
      this.queue.push({ key, done });
      this.timer ??= setTimeout(() => void this.flush(), 50);
    });

  private async flush(): Promise<void> {
    const batch = this.queue;
    this.queue = [];
    this.timer = undefined;
    const byAddr = new Map<string, typeof batch>();
    for (const q of batch) byAddr.set(`${q.key.family} ${q.key.localAddr}`, [...(byAddr.get(`${q.key.family} ${q.key.localAddr}`) ?? []), q]);
    for (const group of byAddr.values()) {
      const { family, localAddr } = group[0]!.key;
      const f = ['-L', '-f', family === 6 ? 'ipv6' : 'ipv4', '-p', 'tcp'];
      const [opened, accepted] = await Promise.all([run('conntrack', [...f, '--orig-src', localAddr]), run('conntrack', [...f, '--reply-src', localAddr])]);
      const canon = (e: { orig: CtTuple; reply: CtTuple }) => {
        for (const t of [e.orig, e.reply]) [t.src, t.dst] = [canonicalAddr(family, t.src), canonicalAddr(family, t.dst)];
        return e;
      };
      const outs = entries(opened.stdout).map(canon);
      const ins = entries(accepted.stdout).map(canon);
      for (const { key: k, done } of group) {
        const o = outs.find((e) => e.orig.sport === k.localPort && e.orig.dst === k.remoteAddr && e.orig.dport === k.remotePort);
        if (o) {
          done({ addr: o.reply.dst, port: o.reply.dport });
          continue;
        }
        const i = ins.find((e) => e.reply.sport === k.localPort && e.reply.dst === k.remoteAddr && e.reply.dport === k.remotePort);
        done(i ? { addr: i.orig.dst, port: i.orig.dport } : undefined);
      }
    }
  }
}

interface CtTuple {
  src: string;
  dst: string;
  sport: number;
  dport: number;
}

/** The two tuples of every entry conntrack listed. */
export function entries(text: string): Array<{ orig: CtTuple; reply: CtTuple }> {
  return text.split('\n').flatMap((l) => {
    const t = tuples(l);
    return t ? [t] : [];
  });
}

/** The two tuples of conntrack's first listed entry (`src= dst= sport= dport=` twice). */
export function tuples(text: string): { orig: CtTuple; reply: CtTuple } | undefined {
  const line = text.split('\n').find((x) => x.includes('src='));
  if (!line) return undefined;
  const v = (k: string): string[] => [...line.matchAll(new RegExp(`\\b${k}=(\\S+)`, 'g'))].map((m) => m[1]!);
  const [src, dst, sport, dport] = [v('src'), v('dst'), v('sport'), v('dport')];
  if (src.length < 2 || dst.length < 2 || sport.length < 2 || dport.length < 2) return undefined;
  const t = (i: number): CtTuple => ({ src: src[i]!, dst: dst[i]!, sport: Number(sport[i]), dport: Number(dport[i]) });
  return { orig: t(0), reply: t(1) };
}
