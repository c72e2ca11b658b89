import type { BeginItem, BeginOutcome, ConnKey, CounterEngine, CounterOwner, Counts, Installed, Repair } from './engine.js';
import { diag } from '../util/diag.js';
import { ElementChanges, type ElementStore } from './element-store.js';
import { Kernel } from './kernel.js';
import { chainsOf, dropTableText, flowsSet, ownersSet, tableFamily, tableText, type NftLayout, type TableFamily } from './nft-ruleset.js';
import { allFlows, checkedCounts, countsIn, failedAdds, failedAddsOf, harvestOwned, readBegun, readFlows, readTuples, type Begun, type Flows } from './nft-flows.js';
import { firstLines } from './nft-store.js';
import { openElementStore, type ElementPath } from './stores.js';
import { canonicalKey, connId, inTuple, keyOf, mirrorKey, outTuple, ownerTag, tupleId, type Tuple } from './tuple.js';

export interface NftablesOptions {
  /** RULES_THRESHOLD: connections counted for owners at once; beyond, begin() says 'no-room'. */
  capacity: number;
  /** Interfaces whose SYN / SYN-ACK start counting; include "lo" for connections to this host
   * itself. Omitted: every interface. */
  interfaces?: readonly string[];
  /** Our table (`table inet <name>`); tests use their own. */
  table?: string;
  /** Kernel size of flows4/flows6. They also hold connections nobody profiles until discard()
   * or sweep() removes them, hence larger than 2 × capacity. */
  setSize?: number;
  /** Hook priority of our chains; default 500, after the filter chains at 0. */
  priority?: number;
  /** Run nft inside this network namespace (tests). */
  netns?: string;
  /** How elements are changed and read: `netlink` (our own socket, native/nfset), `nft` (the
   * nft program), `auto` (netlink if its addon loads, else nft with a warning). Default auto. */
  elements?: ElementPath;
  /** The addon's path (tests: a missing one, to exercise the fallback). */
  addonPath?: string;
  /** Count one job's link (a container's veth, a VM's tap) on its device's own hooks: a
   * netdev table, whose connections' local end is the job's. */
  link?: string;
  /** Seconds a failed datapath add is remembered (pend4/6; default PEND_TIMEOUT_S). */
  pendTimeout?: number;
}

/**
 * Counts with per-element counters in sets of our own table. The datapath creates a
 * connection's elements at its SYN / SYN-ACK (see tableText), so a connection begun later is
 * still counted from its first packet; owners are kept in owners4/6, whose element comments
 * name pid and job so a crashed run's counters can be harvested.
 */
export class NftablesEngine implements CounterEngine {
  readonly name = 'nftables' as const;
  private readonly kernel: Kernel;
  private readonly layout: NftLayout;
  private readonly capacity: number;
  private readonly begun = new Map<string, Begun>();
  /** Datapath elements (tuple ids) nobody owned at the previous sweep. */
  private unownedAtLastSweep = new Set<string>();
  private repairCalls = 0;
  /** Rules per chain as installed, to notice a flush. */
  private ruleCounts: Partial<Record<string, number>> = {};
  private readonly chains: readonly string[];
  private readonly family: TableFamily;
  private store: ElementStore | undefined;
  private readonly options: NftablesOptions;

  constructor(options: NftablesOptions) {
    if (!Number.isInteger(options.capacity) || options.capacity < 1) throw new Error(`capacity must be a positive integer, not ${options.capacity}`);
    this.capacity = options.capacity;
    this.layout = {
      table: options.table ?? 'netprof',
      interfaces: options.interfaces,
      flowsSize: options.setSize ?? Math.max(65_536, 4 * options.capacity),
      ownersSize: options.capacity + 16,
      priority: options.priority ?? 500,
      ...(options.link === undefined ? {} : { link: options.link }),
      ...(options.pendTimeout === undefined ? {} : { pendTimeout: options.pendTimeout }),
    };
    tableText(this.layout); // checks names now rather than at start()
    this.chains = chainsOf(this.layout);
    this.family = tableFamily(this.layout);
    this.kernel = new Kernel(options.netns);
    this.options = options;
  }

  /** Which path changes and reads elements; undefined before start(). */
  get elementPath(): ElementStore['kind'] | undefined {
    return this.store?.kind;
  }

  start(): Promise<Installed[]> {
    return this.kernel.serial(async () => {
      this.store ??= openElementStore(this.options.elements ?? 'auto', this.layout.table, this.kernel, this.options.netns, this.options.addonPath, this.family);
      const harvested = await harvestOwned(this.store, this.link);
      await this.nftFile(tableText(this.layout));
      this.begun.clear();
      this.unownedAtLastSweep.clear();
      this.ruleCounts = await this.countRules();
      return harvested;
    });
  }

  /** Reads only our two chains (a few hundred bytes, never the sets): a missing table or chain,
   * or fewer rules than we installed, is damage. */
  repair(): Promise<Repair | undefined> {
    return this.kernel.serial(async () => {
      // Listing a chain through nft makes it load the sets its rules name (0.2 s at 10,000
      // elements; netlink only dumps the rules), so each call checks one chain, in turn: a flush
      // is still noticed within two calls.
      const chain = this.chains[this.repairCalls++ % this.chains.length]!;
      const now = await this.countRules([chain]);
      const damaged = [chain].find((c) => (now[c] ?? 0) < (this.ruleCounts[c] ?? 0));
      if (!damaged) return undefined;
      const reason = now[damaged] === undefined ? `chain ${damaged} of table ${this.family} ${this.layout.table} is gone` : `chain ${damaged} holds ${now[damaged]} rules, not ${this.ruleCounts[damaged]}`;
      await this.nftFile(tableText(this.layout));
      const all = [...this.begun.values()];
      const batch = new ElementChanges();
      const added = new Set<string>();
      for (const b of all) {
        const tuples = [outTuple(b.key), inTuple(b.key)].filter((t) => !added.has(tupleId(t)) && added.add(tupleId(t)));
        batch.add(flowsSet(b.key.family), tuples.map((tuple) => ({ tuple })));
        batch.add(ownersSet(b.key.family), [{ tuple: outTuple(b.key), comment: ownerTag(b.owner) }]);
        b.outcome = 'from-now';
      }
      if (!(await this.apply(batch))) throw new Error(`reinstalling counters: ${this.lastError}`);
      return { reason, restarted: all.map((b) => b.key) };
    });
  }

  private async countRules(chains: readonly string[] = this.chains): Promise<Partial<Record<string, number>>> {
    const counts: Partial<Record<string, number>> = {};
    for (const chain of chains) {
      // Only "no such table/chain" is damage: a check that failed for another reason (a busy
      // machine, a netlink hiccup) must not make us wipe and reinstall live counters.
      counts[chain] = await this.store!.ruleCount(chain).catch(() => this.ruleCounts[chain]);
    }
    return counts;
  }

  begin(items: ReadonlyArray<BeginItem>): Promise<BeginOutcome[]> {
    return this.kernel.serial(async () => {
      const fresh = new Map<string, Begun>();
      const retag: Array<{ old: Begun; owner: CounterOwner }> = [];
      const opener = new Map<string, Tuple>();
      const outcomes: Array<BeginOutcome | Begun> = items.map(({ key, owner, seenOpening, openedBy }) => {
        const k = canonicalKey(key);
        const id = connId(k);
        ownerTag(owner); // refuse a bad owner before anything is installed
        const known = this.begun.get(id) ?? fresh.get(id);
        if (known) {
          if (known.owner.pid !== owner.pid || known.owner.job !== owner.job) retag.push({ old: known, owner });
          return known;
        }
        if (this.begun.size + fresh.size >= this.capacity) return 'no-room';
        const b: Begun = { key: k, owner, outcome: 'from-first-packet', seenOpening: seenOpening === true };
        fresh.set(id, b);
        if (seenOpening) opener.set(id, openedBy === 'remote' ? inTuple(k) : outTuple(k));
        return b;
      });
      if (fresh.size || retag.length) {
        // A direction whose datapath add failed was counted, at best, from a later packet's retry:
        // its element may exist and still lack the handshake, so such a connection is partial.
        const partial = await failedAdds(this.store!, [...fresh.values()].map((b) => b.key.family));
        // The usual case: every connection was seen opening, so the datapath should hold its
        // elements, and `add` of an element that exists keeps its counter. Over netlink the
        // element its SYN made is read by key first (~4 µs): a dynamic set's insert from the
        // packet path can fail under a burst (27 % of a 50,000-connection burst here), and such
        // a connection is counted only from our `add`, which its outcome must say. Through nft
        // that read would list the whole set (0.17 s at 10,000): skipped; its end() still finds
        // a connection nothing counted.
        if (retag.length === 0 && opener.size === fresh.size) {
          if (this.store!.kind === 'netlink') {
            const present = await this.readTuples([...opener.values()]);
            for (const [id, b] of fresh) if (!present.has(tupleId(opener.get(id)!))) b.outcome = 'from-now';
          }
          for (const b of fresh.values()) if (partial(b.key)) [b.outcome, b.pended] = ['from-now', true];
          if (await this.addBegun([...fresh.values()])) {
            for (const [id, b] of fresh) this.begun.set(id, b);
            return outcomes.map((o) => (typeof o === 'string' ? o : o.outcome));
          }
          diag.warn('begin batch refused by the kernel; retrying after reading its elements', { connections: fresh.size, error: this.lastError });
        }
        const attempt = async (flows: Flows, withFlowAdds: boolean): Promise<boolean> => {
          const batch = new ElementChanges();
          for (const { old, owner } of retag) {
            old.owner = owner;
            if (!this.begun.has(connId(old.key))) continue; // begun in this call: added below
            const tuple = outTuple(old.key);
            batch.delete(ownersSet(old.key.family), [{ tuple }]).add(ownersSet(old.key.family), [{ tuple, comment: ownerTag(owner) }]);
          }
          for (const b of fresh.values()) {
            const missing = [outTuple(b.key), inTuple(b.key)].filter((t) => !flows.has(tupleId(t)));
            // Both missing: the SYN was not seen (the connection predates us, another interface,
            // or the set was full). One missing: the handshake is under way; the SYN-ACK's `add`
            // will count into the element we add now.
            if (partial(b.key)) b.pended = true;
            b.outcome = missing.length === 2 || b.pended ? 'from-now' : 'from-first-packet';
            if (missing.length && !withFlowAdds) {
              b.outcome = 'no-room';
              continue;
            }
            batch.add(flowsSet(b.key.family), missing.map((tuple) => ({ tuple })));
            batch.add(ownersSet(b.key.family), [{ tuple: outTuple(b.key), comment: ownerTag(b.owner) }]);
          }
          return this.apply(batch);
        };
        const keys = [...fresh.values()].map((b) => b.key);
        // A full flows set makes the whole transaction fail: then count only what the datapath
        // already has an element for.
        if (!(await attempt(await this.readFlows(keys), true)) && !(await attempt(await this.readFlows(keys), false))) {
          throw new Error(`nft: could not add elements to table ${this.family} ${this.layout.table}: ${this.lastError}`);
        }
        for (const [id, b] of fresh) if (b.outcome !== 'no-room') this.begun.set(id, b);
      }
      return outcomes.map((o) => (typeof o === 'string' ? o : o.outcome));
    });
  }

  /** Adds both directions' flows elements and the owner of connections seen opening, in one
   * transaction; false if nft refused it (a full set), and nothing changed. */
  private addBegun(list: readonly Begun[]): Promise<boolean> {
    const batch = new ElementChanges();
    for (const family of [4, 6] as const) {
      const mine = list.filter((b) => b.key.family === family);
      batch.add(flowsSet(family), mine.flatMap((b) => [{ tuple: outTuple(b.key) }, { tuple: inTuple(b.key) }]));
      batch.add(ownersSet(family), mine.map((b) => ({ tuple: outTuple(b.key), comment: ownerTag(b.owner) })));
    }
    return this.apply(batch);
  }

  read(keys: readonly ConnKey[]): Promise<Array<Counts | undefined>> {
    return this.kernel.serial(async () => {
      const begun = keys.map((k) => this.begun.get(connId(canonicalKey(k))));
      const counts = await readBegun(this.store!, begun.filter((b) => b !== undefined), this.link);
      let j = 0;
      return begun.map((b) => (b ? counts[j++] : undefined));
    });
  }

  end(keys: readonly ConnKey[]): Promise<Array<Counts | undefined>> {
    return this.kernel.serial(async () => {
      const ks = keys.map(canonicalKey);
      // Failed adds go first: else a late packet (its last ACK) would make the deleted element again.
      await this.apply(await failedAddsOf(this.store!, ks.filter((k) => this.begun.get(connId(k))?.pended)));
      let counts: Array<Counts | undefined> = [];
      const attempt = async (flows: Flows): Promise<boolean> => {
        counts = ks.map((k) => this.countsOfBegun(flows, k));
        const batch = new ElementChanges();
        const ending = new Set(ks.map(connId));
        for (const k of ks) {
          if (this.begun.has(connId(k))) batch.delete(ownersSet(k.family), [{ tuple: outTuple(k) }]);
        }
        this.deleteFlows(batch, flows, ks, ending);
        return this.apply(batch);
      };
      if (!(await attempt(await this.readFlows(ks))) && !(await attempt(await this.readFlows(ks)))) {
        throw new Error(`nft: could not remove ended connections from table ${this.family} ${this.layout.table}: ${this.lastError}`);
      }
      for (const k of ks) this.begun.delete(connId(k));
      return counts;
    });
  }

  forget(keys: readonly ConnKey[]): Promise<void> {
    return this.kernel.serial(async () => {
      const ks = keys.map(canonicalKey).filter((k) => this.begun.has(connId(k)));
      const batch = new ElementChanges();
      for (const k of ks) batch.delete(ownersSet(k.family), [{ tuple: outTuple(k) }]);
      for (const k of ks) this.begun.delete(connId(k));
      if (!(await this.apply(batch))) throw new Error(`nft: could not remove owners from table ${this.family} ${this.layout.table}: ${this.lastError}`);
    });
  }

  discard(keys: readonly ConnKey[]): Promise<void> {
    return this.kernel.serial(async () => {
      const ks = keys.map(canonicalKey).filter((k) => !this.begun.has(connId(k)));
      if (!ks.length) return;
      const attempt = async (flows: Flows): Promise<boolean> => {
        const batch = new ElementChanges();
        this.deleteFlows(batch, flows, ks, new Set());
        return this.apply(batch);
      };
      if (!(await attempt(await this.readFlows(ks))) && !(await attempt(await this.readFlows(ks)))) {
        throw new Error(`nft: could not discard connections from table ${this.family} ${this.layout.table}: ${this.lastError}`);
      }
    });
  }

  sweep(inUse: readonly ConnKey[] = []): Promise<number> {
    return this.kernel.serial(async () => {
      const flows = await allFlows(this.store!, `${this.family} ${this.layout.table}`);
      const owned = new Set<string>();
      for (const key of [...[...this.begun.values()].map((b) => b.key), ...inUse.map(canonicalKey)]) {
        owned.add(tupleId(outTuple(key)));
        owned.add(tupleId(inTuple(key)));
      }
      const unowned = new Set([...flows.keys()].filter((id) => !owned.has(id)));
      const doomed = [...unowned].filter((id) => this.unownedAtLastSweep.has(id));
      const batch = new ElementChanges();
      const connections = new Set<string>();
      for (const family of [4, 6] as const) {
        const tuples = doomed.map((id) => flows.get(id)!.tuple).filter((t) => t.family === family);
        batch.delete(flowsSet(family), tuples.map((tuple) => ({ tuple })));
        for (const t of tuples) connections.add([tupleId(t), tupleId(inTuple(keyOf(t)))].sort().join(' '));
      }
      // An element a new SYN replaced meanwhile makes the batch fail; it is retried next sweep.
      const removed = await this.apply(batch);
      for (const id of doomed) if (removed) unowned.delete(id);
      this.unownedAtLastSweep = unowned;
      return removed ? connections.size : 0;
    });
  }

  list(): Promise<Installed[]> {
    return this.kernel.serial(async () => {
      const all = [...this.begun.values()];
      const counts = await readBegun(this.store!, all, this.link);
      return all.map((b, i) => ({ key: b.key, owner: b.owner, counts: counts[i] }));
    });
  }

  size(): number {
    return this.begun.size;
  }

  stop(): Promise<void> {
    return this.kernel.serial(async () => {
      await this.nftFile(dropTableText(this.layout.table, this.family));
      this.begun.clear();
      await this.store?.close();
      this.store = undefined;
      await this.kernel.close();
    });
  }

  /** A crashed run's table, found by name: its owned connections with their counters, then
   * the table is removed (a link's table whose device is gone is never reinstalled). */
  harvestAndDrop(): Promise<Installed[]> {
    return this.kernel.serial(async () => {
      this.store ??= openElementStore(this.options.elements ?? 'auto', this.layout.table, this.kernel, this.options.netns, this.options.addonPath, this.family);
      try {
        const harvested = await harvestOwned(this.store, this.link);
        await this.nftFile(dropTableText(this.layout.table, this.family));
        return harvested;
      } finally {
        await this.store.close();
        this.store = undefined;
        await this.kernel.close();
      }
    });
  }

  /** Deletes the present datapath elements of these connections, except those the other end of a
   * loopback connection still needs (its mirror key is begun and not ending now). */
  private deleteFlows(batch: ElementChanges, flows: Flows, ks: readonly ConnKey[], ending: ReadonlySet<string>): void {
    const seen = new Set<string>();
    for (const k of ks) {
      const mirror = connId(mirrorKey(k));
      if (this.begun.has(mirror) && !ending.has(mirror)) continue;
      const present = [outTuple(k), inTuple(k)].filter((t) => {
        const id = tupleId(t);
        if (!flows.has(id) || seen.has(id)) return false;
        seen.add(id);
        return true;
      });
      batch.delete(flowsSet(k.family), present.map((tuple) => ({ tuple })));
    }
  }

  private readFlows(keys: readonly ConnKey[]): Promise<Flows> {
    return readFlows(this.store!, keys);
  }

  private readTuples(tuples: readonly Tuple[]): Promise<Flows> {
    return readTuples(this.store!, tuples);
  }

  private countsOfBegun(flows: Flows, k: ConnKey): Counts | undefined {
    const b = this.begun.get(connId(k));
    return b && checkedCounts(b, countsIn(flows, k, this.link));
  }

  private get link(): boolean {
    return this.layout.link !== undefined;
  }

  /** Applies a batch in one transaction; false if the kernel refused it (nothing changed then). */
  private async apply(batch: ElementChanges): Promise<boolean> {
    if (batch.empty) return true;
    if (await this.store!.apply(batch.ops)) return true;
    this.lastError = this.store!.lastError;
    return false;
  }

  private lastError = '';

  /** Table-sized changes (install, reinstall, drop), rare: through a file and a spawned nft. */
  private async nftFile(content: string): Promise<void> {
    const r = await this.kernel.withBatchFile(content, (path) => this.kernel.run('nft', ['-f', path]));
    if (r.code !== 0) throw new Error(`nft -f (table ${this.family} ${this.layout.table}): ${firstLines(r.stderr)}`);
  }
}
