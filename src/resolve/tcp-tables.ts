import { tupleId } from './addr.js';
import { readTcpTables, TCP_STATE, type TcpRow } from './procfs.js';

/** One read of a namespace's tcp tables: every row, and the connections' rows by tuple. */
export interface Tables {
  rows: TcpRow[];
  byId: Map<string, TcpRow>;
}

/**
 * The tcp tables of one namespace, read for many lookups at once. A lookup needs a read begun
 * after its connection opened (`read(since)`); every lookup a read serves shares it, and while
 * one runs, those it cannot serve share the one read that follows it. Under a burst a read is
 * ~100k rows: one per lookup blocked the loop for seconds, and with eBPF off every connection
 * asks.
 */
export class SharedTcpTables {
  private last: { began: number; rows: Promise<Tables>; running: boolean } | undefined;
  private next: Promise<Tables> | undefined;

  constructor(
    private readonly netPid: number | 'self',
    private readonly procRoot: string,
  ) {}

  /** The tables from a read that began at `since` (epoch ms) or later. */
  read(since: number): Promise<Tables> {
    const cur = this.last;
    if (cur && cur.began >= since) return cur.rows;
    if (cur?.running) {
      this.next ??= cur.rows.then(
        () => this.start(),
        () => this.start(),
      );
      return this.next;
    }
    return this.start();
  }

  private start(): Promise<Tables> {
    this.next = undefined;
    const began = Date.now();
    const rows = readTcpTables(this.netPid, this.procRoot).then((list) => ({
      rows: list,
      byId: new Map(list.filter((r) => r.state !== TCP_STATE.LISTEN).map((r) => [tupleId(r.localAddr, r.localPort, r.remoteAddr, r.remotePort), r])),
    }));
    const read = { began, rows, running: true };
    this.last = read;
    rows.then(
      () => (read.running = false),
      () => {
        read.running = false;
        if (this.last === read) this.last = undefined;
      },
    );
    return rows;
  }
}
