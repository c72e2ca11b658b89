import type { Family } from '../connection.js';
import type { BeginItem, BeginOutcome, ConnKey, CounterEngine, CounterOwner, Counts, Installed, Repair } from './engine.js';
import { parseChainListing, restoreFile, ruleSpec, type ListedRule } from './iptables-rules.js';
import { Kernel } from './kernel.js';
import { canonicalKey, connId, inTuple, keyOf, outTuple, ownerTag, tupleId, type Tuple } from './tuple.js';

export interface IptablesOptions {
  /** RULES_THRESHOLD: connections counted at once; beyond, begin() says 'no-room'. */
  capacity: number;
  /** Our chains are <prefix>_IN and <prefix>_OUT in the filter table; tests use their own. */
  chainPrefix?: string;
  /** Run the tools inside this network namespace (tests). */
  netns?: string;
}

interface Begun {
  key: ConnKey;
  owner: CounterOwner;
  /** The rules as inserted, to delete them by specification. */
  inRule: string;
  outRule: string;
}

const TOOLS = {
  4: { list: 'iptables', restore: 'iptables-restore' },
  6: { list: 'ip6tables', restore: 'ip6tables-restore' },
} as const;

/**
 * The original tool's mechanism, made right: chains of our own whose jumps are inserted at the
 * top of INPUT and OUTPUT (an earlier ACCEPT cannot hide traffic from them), one tagged rule per
 * direction per connection, exact counters (-x), the xtables lock (-w), batched changes.
 * A rule counts from when it is installed: every begin() is 'from-now'.
 */
export class IptablesEngine implements CounterEngine {
  readonly name = 'iptables' as const;
  private readonly kernel: Kernel;
  private readonly capacity: number;
  private readonly chainIn: string;
  private readonly chainOut: string;
  private readonly begun = new Map<string, Begun>();

  constructor(options: IptablesOptions) {
    if (!Number.isInteger(options.capacity) || options.capacity < 1) throw new Error(`capacity must be a positive integer, not ${options.capacity}`);
    const prefix = options.chainPrefix ?? 'NETPROF';
    if (!/^[A-Z][A-Z0-9_]{0,20}$/.test(prefix)) throw new Error(`bad chain prefix ${JSON.stringify(prefix)}`);
    this.capacity = options.capacity;
    this.chainIn = `${prefix}_IN`;
    this.chainOut = `${prefix}_OUT`;
    this.kernel = new Kernel(options.netns);
  }

  start(): Promise<Installed[]> {
    return this.kernel.serial(async () => {
      const harvested: Installed[] = [];
      for (const f of [4, 6] as const) {
        const { inRules, outRules } = await this.listChains(f, true);
        const outById = new Map(outRules.map((r) => [tupleId(r.tuple), r]));
        for (const r of inRules) {
          const key = keyOf(inToOut(r));
          const out = outById.get(tupleId(outTuple(key)));
          harvested.push({ key, counts: { bytesIn: r.bytes, packetsIn: r.packets, bytesOut: out?.bytes ?? 0, packetsOut: out?.packets ?? 0 }, ...(r.owner ? { owner: r.owner } : {}) });
        }
        await this.unhook(f);
        // Declaring a chain in a --noflush restore creates it, or empties it if it exists.
        await this.restore(f, [`:${this.chainIn} - [0:0]`, `:${this.chainOut} - [0:0]`, `-I INPUT 1 -j ${this.chainIn}`, `-I OUTPUT 1 -j ${this.chainOut}`]);
      }
      this.begun.clear();
      return harvested;
    });
  }

  begin(items: ReadonlyArray<BeginItem>): Promise<BeginOutcome[]> {
    return this.kernel.serial(async () => {
      const fresh: Begun[] = [];
      const outcomes = items.map(({ key, owner }): BeginOutcome => {
        const k = canonicalKey(key);
        ownerTag(owner);
        const known = this.begun.get(connId(k)) ?? fresh.find((b) => connId(b.key) === connId(k));
        // Already counted: the rules keep their first owner's comment (replacing them would
        // reset their counters); the owner reported from now on is the new one.
        if (known) {
          known.owner = owner;
          return 'from-now';
        }
        if (this.begun.size + fresh.length >= this.capacity) return 'no-room';
        fresh.push({ key: k, owner, inRule: ruleSpec(inTuple(k), owner), outRule: ruleSpec(outTuple(k), owner) });
        return 'from-now';
      });
      for (const f of [4, 6] as const) {
        const mine = fresh.filter((b) => b.key.family === f);
        if (!mine.length) continue;
        await this.restore(f, mine.flatMap((b) => [`-I ${this.chainIn} 1 ${b.inRule}`, `-I ${this.chainOut} 1 ${b.outRule}`]));
        for (const b of mine) this.begun.set(connId(b.key), b);
      }
      return outcomes;
    });
  }

  read(keys: readonly ConnKey[]): Promise<Array<Counts | undefined>> {
    return this.kernel.serial(() => this.readCounts(keys.map(canonicalKey)));
  }

  end(keys: readonly ConnKey[]): Promise<Array<Counts | undefined>> {
    return this.kernel.serial(async () => {
      const ks = keys.map(canonicalKey);
      const counts = await this.readCounts(ks);
      const ending = new Map<string, Begun>();
      for (const k of ks) {
        const b = this.begun.get(connId(k));
        if (b) ending.set(connId(k), b);
      }
      for (const f of [4, 6] as const) {
        const mine = [...ending.values()].filter((b) => b.key.family === f);
        if (!mine.length) continue;
        // Only rules that are there (deleting a missing one fails the whole batch).
        const { inRules, outRules } = await this.listChains(f, false);
        const present = new Set([...inRules, ...outRules].map((r) => tupleId(r.tuple)));
        const lines = mine.flatMap((b) => [
          ...(present.has(tupleId(inTuple(b.key))) ? [`-D ${this.chainIn} ${b.inRule}`] : []),
          ...(present.has(tupleId(outTuple(b.key))) ? [`-D ${this.chainOut} ${b.outRule}`] : []),
        ]);
        if (lines.length) await this.restore(f, lines);
      }
      for (const id of ending.keys()) this.begun.delete(id);
      return counts;
    });
  }

  /** Checks our jumps and chains (someone may `iptables -F` behind our back); if damaged,
   * reinstalls them with every begun connection's rules, counting from now. */
  repair(): Promise<Repair | undefined> {
    return this.kernel.serial(async () => {
      let reason: string | undefined;
      for (const f of [4, 6] as const) reason ??= await this.damage(f);
      if (!reason) return undefined;
      const all = [...this.begun.values()];
      for (const f of [4, 6] as const) {
        await this.unhook(f);
        const rules = all.filter((b) => b.key.family === f).flatMap((b) => [`-A ${this.chainIn} ${b.inRule}`, `-A ${this.chainOut} ${b.outRule}`]);
        await this.restore(f, [`:${this.chainIn} - [0:0]`, `:${this.chainOut} - [0:0]`, `-I INPUT 1 -j ${this.chainIn}`, `-I OUTPUT 1 -j ${this.chainOut}`, ...rules]);
      }
      return { reason, restarted: all.map((b) => b.key) };
    });
  }

  private async damage(f: Family): Promise<string | undefined> {
    for (const [hook, chain] of [['INPUT', this.chainIn], ['OUTPUT', this.chainOut]] as const) {
      const r = await this.kernel.run(TOOLS[f].list, ['-w', '-C', hook, '-j', chain]);
      if (r.code !== 0) return `${TOOLS[f].list}: the jump from ${hook} to ${chain} is gone`;
    }
    const { inRules, outRules } = await this.listChains(f, true);
    const counted = [...this.begun.values()].filter((b) => b.key.family === f).length;
    if (inRules.length < counted || outRules.length < counted) return `${TOOLS[f].list}: our chains hold fewer rules than the ${counted} connections counted`;
    return undefined;
  }

  /** Nothing is installed for connections nobody began. */
  /** Its rules have counted the new connection's packets too: removed unread. The new
   * connection's begin installs its own. */
  async forget(keys: readonly ConnKey[]): Promise<void> {
    await this.end(keys);
  }

  async discard(): Promise<void> {}

  async sweep(): Promise<number> {
    return 0;
  }

  list(): Promise<Installed[]> {
    return this.kernel.serial(async () => {
      const all = [...this.begun.values()];
      const counts = await this.readCounts(all.map((b) => b.key));
      return all.map((b, i) => ({ key: b.key, owner: b.owner, counts: counts[i]! }));
    });
  }

  size(): number {
    return this.begun.size;
  }

  stop(): Promise<void> {
    return this.kernel.serial(async () => {
      for (const f of [4, 6] as const) {
        await this.unhook(f);
        await this.restore(f, [`:${this.chainIn} - [0:0]`, `:${this.chainOut} - [0:0]`, `-X ${this.chainIn}`, `-X ${this.chainOut}`]);
      }
      this.begun.clear();
      await this.kernel.close();
    });
  }

  private async readCounts(ks: readonly ConnKey[]): Promise<Array<Counts | undefined>> {
    const byId = new Map<string, ListedRule>();
    for (const f of new Set(ks.filter((k) => this.begun.has(connId(k))).map((k) => k.family))) {
      const { inRules, outRules } = await this.listChains(f, false);
      for (const r of [...inRules, ...outRules]) if (!byId.has(tupleId(r.tuple))) byId.set(tupleId(r.tuple), r);
    }
    return ks.map((k) => {
      if (!this.begun.has(connId(k))) return undefined;
      const i = byId.get(tupleId(inTuple(k)));
      const o = byId.get(tupleId(outTuple(k)));
      return { bytesIn: i?.bytes ?? 0, packetsIn: i?.packets ?? 0, bytesOut: o?.bytes ?? 0, packetsOut: o?.packets ?? 0 };
    });
  }

  /** Reads only our two chains. With missingOk, a chain that does not exist lists as empty. */
  private async listChains(f: Family, missingOk: boolean): Promise<{ inRules: ListedRule[]; outRules: ListedRule[] }> {
    const list = async (chain: string): Promise<ListedRule[]> => {
      const r = await this.kernel.run(TOOLS[f].list, ['-w', '-x', '-v', '-n', '-L', chain]);
      if (r.code === 0) return parseChainListing(f, r.stdout);
      // iptables-nft says "incompatible" for a chain it cannot find; legacy says "No chain".
      if (missingOk && /No chain|does not exist|incompatible/i.test(r.stderr)) return [];
      throw new Error(`${TOOLS[f].list} -L ${chain}: ${r.stderr.trim()}`);
    };
    // A chain's counters and the other chain's are read one after the other: a packet in
    // flight between the two reads may be in one and not yet in the other.
    return { inRules: await list(this.chainIn), outRules: await list(this.chainOut) };
  }

  /** Removes our jumps from INPUT/OUTPUT (a crashed run may have left them, even twice). */
  private async unhook(f: Family): Promise<void> {
    for (const [hook, chain] of [['INPUT', this.chainIn], ['OUTPUT', this.chainOut]] as const) {
      for (let i = 0; i < 8; i++) {
        const r = await this.kernel.run(TOOLS[f].list, ['-w', '-D', hook, '-j', chain]);
        if (r.code !== 0) break;
      }
    }
  }

  private async restore(f: Family, lines: readonly string[]): Promise<void> {
    const r = await this.kernel.withBatchFile(restoreFile(lines), (path) => this.kernel.run(TOOLS[f].restore, ['-w', '--noflush', path]));
    if (r.code !== 0) throw new Error(`${TOOLS[f].restore}: ${r.stderr.trim().split('\n').slice(0, 3).join(' | ')}`);
  }
}

/** An IN rule matches remote → local; the connection's key is its reverse. */
function inToOut(r: ListedRule): Tuple {
  const t = r.tuple;
  return { family: t.family, saddr: t.daddr, sport: t.dport, daddr: t.saddr, dport: t.sport };
}
