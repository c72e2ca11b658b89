// Summarises a V8 .cpuprofile (node --cpu-prof): self time per function, and inclusive time
// per function (a function counted once per sample even when recursive).
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';

export function summarize(file, root, top = 15) {
  const p = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const dt = new Map(p.samples.map((id) => [id, 0]));
  p.samples.forEach((id, i) => dt.set(id, (dt.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
  const name = (n) => {
    const cf = n.callFrame;
    const url = cf.url ? relative(root, cf.url.replace(/^file:\/\//, '')) : '';
    return `${cf.functionName || '(anonymous)'} ${url ? `${url}:${cf.lineNumber + 1}` : ''}`.trim();
  };
  const self = new Map();
  const incl = new Map();
  let totalUs = 0;
  for (const [id, us] of dt) {
    totalUs += us;
    const n = byId.get(id);
    self.set(name(n), (self.get(name(n)) ?? 0) + us);
    const seen = new Set();
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      const k = name(byId.get(cur));
      if (seen.has(k)) continue;
      seen.add(k);
      incl.set(k, (incl.get(k) ?? 0) + us);
    }
  }
  const idle = (self.get('(idle)') ?? 0) + (self.get('(program)') ?? 0) * 0;
  const sorted = (m) => [...m].filter(([k]) => !k.startsWith('(root)')).sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, us]) => ({ fn: k, ms: Math.round(us / 1000) }));
  return { wall_ms: Math.round(totalUs / 1000), busy_ms: Math.round((totalUs - idle) / 1000), self: sorted(self), inclusive: sorted(incl), long_turns: longTurns(p, byId, name) };
}

/**
 * The longest stretches without an idle sample — what a request arriving then waited behind —
 * each with the functions most of it was spent in (self time), and how many passed 50 ms.
 */
function longTurns(p, byId, name, top = 5) {
  const turns = [];
  let cur;
  p.samples.forEach((id, i) => {
    const n = byId.get(id);
    const us = p.timeDeltas[i + 1] ?? 0; // the time until the next sample is this one's
    if (n.callFrame.functionName === '(idle)') {
      if (cur) turns.push(cur);
      cur = undefined;
      return;
    }
    cur ??= { us: 0, fns: new Map() };
    cur.us += us;
    const k = name(n);
    cur.fns.set(k, (cur.fns.get(k) ?? 0) + us);
  });
  if (cur) turns.push(cur);
  turns.sort((a, b) => b.us - a.us);
  return {
    over_50ms: turns.filter((t) => t.us > 50_000).length,
    longest: turns.slice(0, top).map((t) => ({
      ms: Math.round(t.us / 1000),
      in: [...t.fns].sort((a, b) => b[1] - a[1]).slice(0, 4).map(([k, us]) => `${k} ${Math.round(us / 1000)} ms`),
    })),
  };
}

/** node --cpu-prof writes one file per thread (CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile);
 * the daemon's own work is thread 0's, the capture and tracer readers are workers. */
export function isMainThreadProfile(name) {
  const f = name.split('.');
  return name.endsWith('.cpuprofile') && f[f.length - 3] === '0';
}
