import type { ConnKey, CounterEngine } from './engine.js';
import { Kernel } from './kernel.js';
import { ElementBatch, flowsSet, ownersSet, tableText, type NftLayout } from './nft-ruleset.js';
import { inTuple, outTuple, ownerTag } from './tuple.js';

/**
 * Notices when someone removes or empties netprof's nftables table behind its back (`nft flush
 * ruleset`, `nft delete table inet netprof`, a firewall reload) and puts it back: the table, its
 * chains, and one owner and two datapath elements per connection the engine had begun, so those
 * connections are counted again — from now: what passed while the table was gone, and the counts
 * the flush threw away, are lost. The caller is told which connections were affected so it can
 * flag them partial.
 *
 * It reads only our two chains (`nft -j list chain inet <table> output|input`: a few hundred
 * bytes, never the sets) every intervalMs.
 */
export interface WatchdogOptions {
  /** The engine's capacity (RULES_THRESHOLD) and interfaces: the same layout is reinstalled. */
  capacity: number;
  interfaces?: readonly string[];
  table?: string;
  netns?: string;
  intervalMs?: number;
  /** Called after a reinstall with the connections whose counting restarted. */
  onRestored: (info: { keys: ConnKey[]; reason: string }) => void;
  onError?: (message: string) => void;
}

/** Rules per chain as tableText() writes them: six in output, `iif lo return` + six in input. */
const EXPECTED_RULES = { output: 6, input: 7 } as const;

export class CounterWatchdog {
  private readonly kernel: Kernel;
  private readonly layout: NftLayout;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  restores = 0;

  constructor(
    private readonly engine: CounterEngine,
    private readonly opts: WatchdogOptions,
  ) {
    this.kernel = new Kernel(opts.netns);
    // The same layout NftablesEngine builds from the same options.
    this.layout = {
      table: opts.table ?? 'netprof',
      interfaces: opts.interfaces,
      flowsSize: Math.max(65_536, 4 * opts.capacity),
      ownersSize: opts.capacity + 16,
      priority: 500,
    };
  }

  start(): void {
    this.timer = setInterval(() => {
      this.running ??= this.tick().finally(() => (this.running = undefined));
    }, this.opts.intervalMs ?? 2000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }

  /** One check; reinstalls if our table or a chain is gone or short of rules. */
  async tick(): Promise<void> {
    try {
      const damage = await this.damage();
      if (damage) await this.restore(damage);
    } catch (e) {
      this.opts.onError?.((e as Error).message);
    }
  }

  private async damage(): Promise<string | undefined> {
    for (const chain of ['output', 'input'] as const) {
      const r = await this.kernel.run('nft', ['-j', 'list', 'chain', 'inet', this.layout.table, chain]);
      if (r.code !== 0) return `chain ${chain} of table inet ${this.layout.table} is gone (${r.stderr.trim().split('\n')[0]})`;
      const rules = (JSON.parse(r.stdout).nftables as Array<Record<string, unknown>>).filter((i) => i.rule).length;
      if (rules < EXPECTED_RULES[chain]) return `chain ${chain} holds ${rules} rules, not ${EXPECTED_RULES[chain]}`;
    }
    return undefined;
  }

  private async restore(reason: string): Promise<void> {
    await this.nft(['-f'], tableText(this.layout));
    // The table exists again (empty): the engine can list what it had begun.
    const begun = await this.engine.list();
    const batch = new ElementBatch(this.layout.table);
    for (const { key, owner } of begun) {
      batch.add(flowsSet(key.family), [{ tuple: outTuple(key) }, { tuple: inTuple(key) }]);
      if (owner) batch.add(ownersSet(key.family), [{ tuple: outTuple(key), comment: ownerTag(owner) }]);
    }
    if (!batch.empty) await this.nft(['-j', '-f'], batch.toJson());
    this.restores += 1;
    this.opts.onRestored({ keys: begun.map((b) => b.key), reason });
  }

  private async nft(args: string[], content: string): Promise<void> {
    const r = await this.kernel.withBatchFile(content, (path) => this.kernel.run('nft', [...args, path]));
    if (r.code !== 0) throw new Error(`nft ${args.join(' ')}: ${r.stderr.trim().split('\n')[0]}`);
  }
}
