import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSets, type SetElement } from '../../../src/counters/nft-ruleset.js';
import { createPair, nsRun, type Pair } from '../../support/netns.js';

/** A private namespace pair and nft run inside it: how the netlink tests check what the kernel holds. */
export interface NftNamespace {
  pair: Pair;
  /** nft's stdout; throws with its stderr when it fails. */
  nft(...args: string[]): Promise<string>;
  /** Loads a ruleset (from a file: `nft -f -` cannot read Node's stdin pipe). */
  load(text: string): Promise<void>;
  /** A set's elements as nft lists them. */
  listed(table: string, set: string): Promise<SetElement[]>;
  destroy(): Promise<void>;
}

export async function nftNamespace(name: string): Promise<NftNamespace> {
  const work = await mkdtemp(join(tmpdir(), `np-${name}-`));
  const pair = await createPair(name).catch(async (e) => {
    await rm(work, { recursive: true, force: true });
    throw e;
  });
  let files = 0;
  const nft = async (...args: string[]): Promise<string> => {
    const r = await nsRun(pair.node.ns, 'nft', args);
    if (r.code !== 0) throw new Error(`nft ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  return {
    pair,
    nft,
    load: async (text) => {
      const path = join(work, `r${files++}.nft`);
      await writeFile(path, text);
      await nft('-f', path);
    },
    listed: async (table, set) => parseSets(await nft('-j', 'list', 'set', 'inet', table, set)).get(set) ?? [],
    destroy: async () => {
      await pair.destroy();
      await rm(work, { recursive: true, force: true });
    },
  };
}
