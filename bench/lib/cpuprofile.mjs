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
  return { wall_ms: Math.round(totalUs / 1000), busy_ms: Math.round((totalUs - idle) / 1000), self: sorted(self), inclusive: sorted(incl) };
}

/** node --cpu-prof writes one file per thread (CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile);
 * the daemon's own work is thread 0's, the capture and tracer readers are workers. */
export function isMainThreadProfile(name) {
  const f = name.split('.');
  return name.endsWith('.cpuprofile') && f[f.length - 3] === '0';
}
