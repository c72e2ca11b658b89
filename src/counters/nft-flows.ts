import type { BeginOutcome, ConnKey, CounterOwner, Counts, Installed } from './engine.js';
import { ElementChanges, type ElementStore } from './element-store.js';
import { countsOf, ETHERNET_HEADER, flowsSet, ownersSet, pendSet, type SetElement } from './nft-ruleset.js';
import { connId, inId, inTuple, keyOf, outTuple, parseOwnerTag, tupleId, type Tuple } from './tuple.js';

/** The nftables engine's reads of its flows sets, and what their elements mean as counts. */

export interface Begun {
  key: ConnKey;
  owner: CounterOwner;
  outcome: BeginOutcome;
  /** The SYN or SYN-ACK was seen: the datapath must have counted it. */
  seenOpening: boolean;
  /** A datapath add of it failed (its tuple was in pend4/6 at begin). */
  pended?: boolean;
}

/** Elements by tupleId. */
export type Flows = Map<string, SetElement>;

/** A connection's two elements as counts; undefined when neither exists: a missing counter is
 * reported as such, never as a connection that moved 0 bytes. */
export function countsFrom(out: SetElement | undefined, inn: SetElement | undefined, link: boolean): Counts | undefined {
  if (!out && !inn) return undefined;
  const c = countsOf(out, inn);
  // On a link, what goes to the job is counted at egress, Ethernet header included.
  if (link) c.bytesIn = Math.max(0, c.bytesIn - ETHERNET_HEADER * c.packetsIn);
  return c;
}

export const countsIn = (flows: Flows, k: ConnKey, link: boolean): Counts | undefined => countsFrom(flows.get(connId(k)), flows.get(inId(k)), link);

/**
 * A begun connection's counts, checked against what its handshake must have left: the SYN
 * and SYN-ACK are each counted in their direction's element when the datapath creates it. If
 * the kernel could not create one (a dynamic set's insert can fail under a burst) and no retry
 * from pend4/6 made it, our begin added it empty afterwards. Both at 0 packets: never counted.
 * One at 0 while the other went past its SYN (a second packet is an ACK, so the handshake
 * completed): that direction was missed — a lower bound.
 */
export function checkedCounts(b: Begun, c: Counts | undefined): Counts | undefined {
  if (!c || !b.seenOpening || b.outcome !== 'from-first-packet') return c;
  if (c.packetsOut === 0 && c.packetsIn === 0) return undefined;
  if ((c.packetsOut === 0 && c.packetsIn >= 2) || (c.packetsIn === 0 && c.packetsOut >= 2)) return { ...c, incomplete: true };
  return c;
}

/** The flows elements of these connections' two directions, read by key: absent ones are
 * simply not in the map. */
export async function readFlows(store: ElementStore, keys: readonly ConnKey[]): Promise<Flows> {
  const flows: Flows = new Map();
  for (const f of [4, 6] as const) {
    const tuples = new Map<string, Tuple>();
    for (const k of keys) {
      if (k.family !== f) continue;
      const out = connId(k);
      const inn = inId(k);
      if (!tuples.has(out)) tuples.set(out, outTuple(k));
      if (!tuples.has(inn)) tuples.set(inn, inTuple(k));
    }
    await getInto(flows, store, f, tuples);
  }
  return flows;
}

/** These flows elements, read by key: absent ones are not in the map. */
export async function readTuples(store: ElementStore, list: readonly Tuple[]): Promise<Flows> {
  const flows: Flows = new Map();
  for (const f of [4, 6] as const) {
    const tuples = new Map<string, Tuple>();
    for (const t of list) if (t.family === f) tuples.set(tupleId(t), t);
    await getInto(flows, store, f, tuples);
  }
  return flows;
}

/** Reads one family's elements (id → tuple) into `flows`, under their ids. */
async function getInto(flows: Flows, store: ElementStore, f: 4 | 6, tuples: ReadonlyMap<string, Tuple>): Promise<void> {
  if (!tuples.size) return;
  const ids = [...tuples.keys()];
  const got = await store.get(flowsSet(f), f, [...tuples.values()]);
  got.forEach((e, i) => e && flows.set(ids[i]!, e)); // in the order asked
}

/** Checked counts of begun connections, in their order: both directions of each read by key,
 * paired by position, with no map of ids (a job's live view reads 10,000 of them). */
export async function readBegun(store: ElementStore, list: readonly Begun[], link: boolean): Promise<Array<Counts | undefined>> {
  const counts = new Array<Counts | undefined>(list.length);
  for (const f of [4, 6] as const) {
    const at: number[] = [];
    const tuples: Tuple[] = [];
    list.forEach((b, i) => {
      if (b.key.family !== f) return;
      at.push(i);
      tuples.push(outTuple(b.key), inTuple(b.key));
    });
    if (!at.length) continue;
    const got = await store.get(flowsSet(f), f, tuples);
    at.forEach((i, j) => (counts[i] = checkedCounts(list[i]!, countsFrom(got[2 * j], got[2 * j + 1], link))));
  }
  return counts;
}

/** Every element of both flows sets (only the sweep needs them all); throws if a set is gone. */
export async function allFlows(store: ElementStore, table: string): Promise<Flows> {
  const flows: Flows = new Map();
  for (const f of [4, 6] as const) {
    const all = await store.dump(flowsSet(f), f);
    if (!all) throw new Error(`set ${flowsSet(f)} of table ${table} is gone`);
    for (const e of all) flows.set(tupleId(e.tuple), e);
  }
  return flows;
}

/**
 * Whether a connection of these families has a datapath add that failed and is still
 * remembered (pend4/6, see countingRules) in either direction: it lost packets before its
 * element existed, whether a retry made it later or not. A dump, not a keyed read: the sets hold
 * only failures (normally none), while a keyed read of absent keys costs a request per key.
 */
export async function failedAdds(store: ElementStore, families: Iterable<4 | 6>): Promise<(k: ConnKey) => boolean> {
  const ids = new Set<string>();
  for (const f of new Set(families)) for (const e of (await store.dump(pendSet(f), f)) ?? []) ids.add(tupleId(e.tuple));
  return (k) => ids.has(connId(k)) || ids.has(inId(k));
}

/**
 * The deletes of these connections' pend entries (their datapath adds failed): at their end, or
 * a late packet of the tuple would make the element again, unowned until the sweep. Read by key
 * first: an entry that expired meanwhile fails its batch, harmlessly (best effort).
 */
export async function failedAddsOf(store: ElementStore, ks: readonly ConnKey[]): Promise<ElementChanges> {
  const batch = new ElementChanges();
  for (const family of [4, 6] as const) {
    const tuples = ks.filter((k) => k.family === family).flatMap((k) => [outTuple(k), inTuple(k)]);
    if (!tuples.length) continue;
    const found = (await store.get(pendSet(family), family, tuples)).filter((e) => e !== undefined);
    batch.delete(pendSet(family), found.map((e) => ({ tuple: e.tuple })));
  }
  return batch;
}

/** What a previous (crashed) run left in a table: its owned connections with their counters. */
export async function harvestOwned(store: ElementStore, link: boolean): Promise<Installed[]> {
  const out: Installed[] = [];
  for (const f of [4, 6] as const) {
    const owners = await settledDump(store, ownersSet(f), f);
    if (!owners?.length) continue; // no table (or set): nothing to harvest
    const flows = await readFlows(store, owners.map((e) => keyOf(e.tuple)));
    for (const e of owners) {
      const key = keyOf(e.tuple);
      const owner = e.comment === undefined ? undefined : parseOwnerTag(e.comment);
      out.push({ key, counts: countsIn(flows, key, link), ...(owner ? { owner } : {}) });
    }
  }
  return out;
}

/**
 * A set dumped until two dumps in a row hold the same elements (at most 5 dumps; then every
 * element any of them held). A dump resumes each message by skipping a count of elements, so a
 * set that changes meanwhile (a hash table still resizing after a crashed run's churn) makes it
 * skip some and repeat others; for a set only we write, and have not written yet, two agree.
 */
export async function settledDump(store: ElementStore, set: string, f: 4 | 6): Promise<SetElement[] | undefined> {
  const union = new Map<string, SetElement>();
  let previous: Map<string, SetElement> | undefined;
  for (let i = 0; i < 5; i++) {
    const got = await store.dump(set, f);
    if (!got) return undefined;
    const now = new Map(got.map((e) => [tupleId(e.tuple), e])); // without repeats
    if (previous && now.size === previous.size && [...now.keys()].every((id) => previous!.has(id))) return [...now.values()];
    for (const [id, e] of now) union.set(id, e);
    previous = now;
  }
  return [...union.values()];
}
