import type { Family } from '../connection.js';
import type { RunResult } from '../util/exec.js';
import type { ElementStore, StoreOp } from './element-store.js';
import type { Kernel } from './kernel.js';
import { ElementBatch, parseSets, type SetElement, type TableFamily } from './nft-ruleset.js';
import { tupleId, type Tuple } from './tuple.js';

/**
 * The elements through the nft program (the long-lived `nft -j -i` of Kernel): JSON batches for
 * changes, and a listing of the whole set for any read, because nft 1.0.6's `get element`
 * crashes from about 500 keys and fails as a whole on one missing key. The fallback when the
 * netlink addon cannot be loaded.
 */
export class NftStore implements ElementStore {
  readonly kind = 'nft' as const;
  lastError = '';

  constructor(
    private readonly kernel: Kernel,
    private readonly table: string,
    private readonly family: TableFamily = 'inet',
  ) {}

  async apply(ops: readonly StoreOp[]): Promise<boolean> {
    const batch = new ElementBatch(this.table, this.family);
    for (const o of ops) (o.op === 'add' ? batch.add(o.set, o.elems) : batch.delete(o.set, o.elems));
    if (batch.empty) return true;
    // A session that died fails this attempt only; callers retry once, in a fresh session.
    const r = await this.kernel.nft(batch.toJson()).catch(sessionFailure);
    if (r.code === 0) return true;
    this.lastError = firstLines(r.stderr);
    return false;
  }

  async get(set: string, family: Family, tuples: readonly Tuple[]): Promise<Array<SetElement | undefined>> {
    const all = await this.list(set, family, true);
    const byId = new Map(all!.map((e) => [tupleId(e.tuple), e]));
    return tuples.map((t) => byId.get(tupleId(t)));
  }

  dump(set: string, family: Family): Promise<SetElement[] | undefined> {
    return this.list(set, family, false);
  }

  /** Listing a chain makes nft load the sets its rules name (0.2 s at 10,000 elements). */
  async ruleCount(chain: string): Promise<number | undefined> {
    const r = await this.kernel.nft(`list chain ${this.family} ${this.table} ${chain}`).catch(sessionFailure);
    if (r.code === 0) return (JSON.parse(r.stdout).nftables as Array<Record<string, unknown>>).filter((i) => i.rule).length;
    if (/No such file or directory/.test(r.stderr)) return undefined;
    throw new Error(`nft list chain ${this.family} ${this.table} ${chain}: ${firstLines(r.stderr)}`);
  }

  async close(): Promise<void> {
    // The session belongs to the Kernel, which the engine closes.
  }

  private async list(set: string, _family: Family, mustExist: boolean): Promise<SetElement[] | undefined> {
    const r = await this.kernel.nft(`list set ${this.family} ${this.table} ${set}`);
    if (r.code !== 0) {
      if (!mustExist && /No such file or directory/.test(r.stderr)) return undefined;
      throw new Error(`nft list set ${this.family} ${this.table} ${set}: ${firstLines(r.stderr)}`);
    }
    return parseSets(r.stdout).get(set) ?? [];
  }
}

export const sessionFailure = (e: Error): RunResult => ({ code: -1, stdout: '', stderr: e.message });
export const firstLines = (stderr: string): string => stderr.trim().split('\n').filter(Boolean).slice(0, 3).join(' | ');
