import type { ConnEvent } from './events.js';

/** How long an event from one direction's capture waits for an earlier one from the other. */
export const MERGE_HOLD_MS = 100;

/**
 * A link is captured by two tcpdumps, one per direction, and two pipes deliver in no common
 * order: under load the remote's SYN could arrive after the job's FIN of the same connection,
 * which would read as a new connection on the tuple. Events are therefore held briefly and
 * handed on in capture-time (kernel timestamp) order.
 */
export class DirectionMerge {
  private held: Array<{ ev: ConnEvent; at: number }> = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly deliver: (ev: ConnEvent) => void) {}

  push(ev: ConnEvent): void {
    this.held.push({ ev, at: Date.now() });
    this.timer ??= setTimeout(() => this.flush(false), MERGE_HOLD_MS);
  }

  /** Hands on what has waited long enough (everything, when `all`), oldest capture first. */
  flush(all: boolean): void {
    this.timer = undefined;
    const due = Date.now() - MERGE_HOLD_MS;
    // Everything captured before the newest due event goes with it, held or not.
    const ripe = all ? Infinity : Math.max(-Infinity, ...this.held.filter((h) => h.at <= due).map((h) => h.ev.time));
    const out = this.held.filter((h) => h.ev.time <= ripe).sort((a, b) => a.ev.time - b.ev.time);
    this.held = this.held.filter((h) => h.ev.time > ripe);
    for (const h of out) this.deliver(h.ev);
    if (this.held.length) this.timer = setTimeout(() => this.flush(false), MERGE_HOLD_MS);
  }
}
