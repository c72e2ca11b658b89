// Standalone kernel reproduction of issue 14 item 3: do a burst's connections all get their two
// datapath elements? No daemon: two private namespaces joined by a veth, our table (the built
// tableText) in the "node" one, a burst of short TCP connections from node to remote, and
// optionally a concurrent user-space writer that does what the daemon's nftables engine does.
//
//   npx tsc -p tsconfig.json && node bench/burst-elements.mjs [options]
//   --n 2000            connections in the burst
//   --conc 64           at most this many open at once
//   --writer none|begin|daemon
//                       begin: batches of `add element` (both directions + owner) for each
//                       connection reported connected; daemon: also, after each close, a
//                       listing and then deletes of its owner and both flows elements (the
//                       daemon's end()), counts taken from the listing
//   --shrink            before the burst, add 50 elements from user space and delete them
//                       (the daemon's first end/sweep/discard does that)
//   --size 65536        flows sets' size
//   --rule orig|nodelete|nopend
//                       the rules as installed (orig), without the SYN rule's deletes, or as
//                       before the failed-add retry (nopend: no pend sets, no retry, no accept)
//   --repeat 1          bursts, each in a fresh table
//   --first-port 20000  the client's first local port, one per connection; 0: the kernel's
//                       choice (ports are then reused within a burst, see the report in
//                       BENCHMARKS.md: a reused tuple's SYN restarts its counters)
//   --lag MS            (engine writer) wait this long after each engine call, so that batches
//                       grow as under the daemon's backlog
//   --oracle            conntrack on in the node namespace, as in the benchmark
// Prints one JSON line per burst: connections, how many lacked their out / in element (or had
// it with 0 packets), the first and last such connection's offset from the burst's start, the
// kernel-side counts. Namespaces are removed at exit, also on failure.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';

const args = process.argv.slice(2);
const role = args[0] === '--role' ? args[1] : undefined;

// ---- peers (run inside the namespaces) ----
if (role === 'server') {
  const { createServer } = await import('node:net');
  const reply = Buffer.alloc(Number(args[3] ?? 200), 0x61);
  const srv = createServer((s) => {
    s.on('data', () => s.end(reply));
    s.on('error', () => undefined);
  });
  srv.listen({ port: Number(args[2]), host: '0.0.0.0', backlog: 4096 }, () => console.log('listening'));
} else if (role === 'client') {
  const { connect } = await import('node:net');
  const [, , host, port, total, conc, out, req, firstPort] = args;
  let nextPort = Number(firstPort ?? 0);
  const rows = [];
  let errors = 0;
  const now = () => performance.timeOrigin + performance.now();
  const one = () =>
    new Promise((resolve) => {
      const row = { open: now(), port: 0, close: 0, rx: 0 };
      // Each connection from its own port (unless 0: the kernel's choice, which reuses ports the
      // server's close freed at once, so that a later connection restarts a tuple's counters).
      const localPort = nextPort ? nextPort++ : undefined;
      const s = connect({ host, port: Number(port), noDelay: true, ...(localPort ? { localPort } : {}) });
      s.on('connect', () => {
        row.port = s.localPort;
        process.stdout.write(`open ${row.port}\n`);
        s.write(Buffer.alloc(Number(req ?? 100), 0x62));
      });
      s.on('data', (d) => (row.rx += d.length));
      s.on('end', () => s.end());
      s.on('error', () => (errors += 1));
      s.on('close', () => {
        row.close = now();
        rows.push(row);
        if (row.port) process.stdout.write(`close ${row.port}\n`);
        resolve();
      });
    });
  const t0 = now();
  let next = 0;
  const worker = async () => {
    while (next < Number(total)) {
      next++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: Number(conc) }, worker));
  writeFileSync(out, JSON.stringify({ start: t0, end: now(), errors, rows }));
  process.stdout.write('done\n');
  process.exit(0);
}

// ---- the experiment ----
if (!role) await main();

async function main() {
  const opt = { n: 2000, conc: 64, writer: 'none', shrink: false, size: 65536, rule: 'orig', repeat: 1, keep: false, oracle: false, req: 100, resp: 200, lag: 0, dump: '', firstPort: 20000 };
  for (let i = 0; i < args.length; i++) {
    const a = args[i].replace(/^--/, '').replace(/-(\w)/g, (_, c) => c.toUpperCase());
    if (a === 'shrink' || a === 'keep' || a === 'oracle') opt[a] = true;
    else opt[a] = typeof opt[a] === 'number' ? Number(args[++i]) : args[++i];
  }
  const here = fileURLToPath(import.meta.url);
  const root = join(here, '..', '..');
  const { tableText, ElementBatch, parseSets } = await import(pathToFileURL(join(root, 'dist/counters/nft-ruleset.js')).href);
  const { NftSession } = await import(pathToFileURL(join(root, 'dist/counters/nft-session.js')).href);
  const { NftablesEngine } = await import(pathToFileURL(join(root, 'dist/counters/nftables.js')).href);

  const id = randomBytes(3).toString('hex');
  const nodeNs = `nb-${id}-n`;
  const remoteNs = `nb-${id}-r`;
  const tmp = mkdtempSync(join(tmpdir(), 'burst-'));
  const children = new Set();
  const cleanup = () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    for (const ns of [nodeNs, remoteNs]) {
      const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? '';
      for (const p of pids.split(/\s+/).filter(Boolean)) try { process.kill(Number(p), 'SIGKILL'); } catch { /* gone */ }
      spawnSync('ip', ['netns', 'del', ns]);
    }
    rmSync(tmp, { recursive: true, force: true });
  };
  process.on('exit', cleanup);
  for (const s of ['SIGINT', 'SIGTERM']) process.on(s, () => process.exit(130));

  const sh = (file, a, input) => {
    const r = spawnSync(file, a, { encoding: 'utf8', input });
    if (r.status !== 0) throw new Error(`${file} ${a.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const inNs = (ns, file, a) => sh('ip', ['netns', 'exec', ns, file, ...a]);
  const nftFile = (ns, text) => {
    const f = join(tmp, `t-${randomBytes(3).toString('hex')}.nft`);
    writeFileSync(f, text);
    try { inNs(ns, 'nft', ['-f', f]); } finally { rmSync(f, { force: true }); }
  };

  sh('ip', ['netns', 'add', nodeNs]);
  sh('ip', ['netns', 'add', remoteNs]);
  sh('ip', ['link', 'add', 'veth0', 'netns', nodeNs, 'type', 'veth', 'peer', 'name', 'veth0', 'netns', remoteNs]);
  const net = 1 + (parseInt(id, 16) % 250);
  const addr = { [nodeNs]: `10.${net}.7.1`, [remoteNs]: `10.${net}.7.2` };
  for (const ns of [nodeNs, remoteNs]) {
    inNs(ns, 'ip', ['link', 'set', 'lo', 'up']);
    inNs(ns, 'ip', ['addr', 'add', `${addr[ns]}/24`, 'dev', 'veth0']);
    inNs(ns, 'ip', ['link', 'set', 'veth0', 'up']);
  }
  // Many short connections from one address: wide port range, TIME_WAIT reuse off the table.
  inNs(nodeNs, 'sysctl', ['-qw', 'net.ipv4.ip_local_port_range=10000 64999']);
  if (opt.oracle) {
    // The benchmark's conntrack oracle: conntrack on in the node namespace (ct in a rule).
    inNs(nodeNs, 'sysctl', ['-qw', 'net.netfilter.nf_conntrack_acct=1']);
    nftFile(nodeNs, 'table inet oracle {\n chain out { type filter hook output priority 0; ct state new counter; }\n chain in { type filter hook input priority 0; ct state new counter; }\n}\n');
  }
  const PORT = 7777;
  const server = spawn('ip', ['netns', 'exec', remoteNs, process.execPath, here, '--role', 'server', String(PORT), String(opt.resp)], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(server);
  await new Promise((res) => server.stdout.once('data', res));

  const layout = { table: 'T', interfaces: ['veth0'], flowsSize: opt.size, ownersSize: opt.size, priority: 500 };
  const table = () => {
    let t = tableText(layout);
    if (opt.rule === 'nodelete') t = t.replace(/ delete @(flows[46]) \{ [^}]+\} delete @\1 \{ [^}]+\}/g, '');
    if (opt.rule === 'nopend') t = withoutPend(t);
    return t;
  };

  const pendTuples = async (session) => {
    const r = await session.run('list set inet T pend4');
    return new Set((parseSets(r.stdout).get('pend4') ?? []).map((e) => key(e.tuple)));
  };
  const key = (t) => `${t.saddr}:${t.sport}>${t.daddr}:${t.dport}`;

  const results = [];
  for (let rep = 0; rep < opt.repeat; rep++) {
    let engine;
    if (opt.writer === 'engine') {
      engine = new NftablesEngine({ capacity: 20000, interfaces: ['veth0'], table: 'T', setSize: opt.size, netns: nodeNs });
      await engine.start();
      if (opt.rule !== 'orig') nftFile(nodeNs, table());
    } else nftFile(nodeNs, table());
    const session = new NftSession({ netns: nodeNs });
    const tuple = (p) => ({ family: 4, saddr: addr[nodeNs], sport: p, daddr: addr[remoteNs], dport: PORT });
    const back = (t) => ({ family: 4, saddr: t.daddr, sport: t.dport, daddr: t.saddr, dport: t.sport });
    const apply = async (batch) => {
      const r = await session.run(batch.toJson());
      return r.code === 0 ? '' : r.stderr.trim().split('\n')[0];
    };
    const list = async () => {
      const r = await session.run('list set inet T flows4');
      const m = new Map();
      for (const e of parseSets(r.stdout).get('flows4') ?? []) m.set(`${e.tuple.saddr}:${e.tuple.sport}>${e.tuple.daddr}:${e.tuple.dport}`, e);
      return m;
    };
    if (opt.shrink) {
      const fake = Array.from({ length: 50 }, (_, i) => ({ tuple: { family: 4, saddr: '192.0.2.1', sport: 1000 + i, daddr: '192.0.2.2', dport: 80 } }));
      const e1 = await apply(new ElementBatch('T').add('flows4', fake));
      const e2 = await apply(new ElementBatch('T').delete('flows4', fake));
      if (e1 || e2) throw new Error(`shrink: ${e1} ${e2}`);
    }

    // The writer: the daemon's begin() and end() in the order the events arrive.
    const opened = [];
    const closed = [];
    const readAtEnd = new Map();
    const writerErrors = [];
    let clientDone = false;
    let batches = 0;
    const ckey = (p) => ({ family: 4, localAddr: addr[nodeNs], localPort: p, remoteAddr: addr[remoteNs], remotePort: PORT });
    const fromNow = new Set();
    const engineWriter = async () => {
      const live = new Set();
      let lastSweep = Date.now();
      while (!clientDone || opened.length || closed.length) {
        if (opened.length) {
          const ports = opened.splice(0);
          for (const p of ports) live.add(p);
          const o = await engine.begin(ports.map((p) => ({ key: ckey(p), owner: { pid: 1, job: 'j' }, seenOpening: true, openedBy: 'local' }))).catch((e) => [e.message]);
          batches++;
          // from-now: the engine found the datapath made no element for the SYN (a failed
          // per-CPU allocation, see docs/counters.md) and says the count is partial.
          o.forEach((x, i) => (x === 'from-now' ? fromNow.add(ports[i]) : x !== 'from-first-packet' && writerErrors.push(`begin: ${x}`)));
        } else if (closed.length) {
          const ports = closed.splice(0);
          const c = await engine.end(ports.map(ckey)).catch((e) => (writerErrors.push(`end: ${e.message}`), []));
          batches++;
          ports.forEach((p, i) => {
            live.delete(p);
            readAtEnd.set(p, c[i] ? { out: c[i].packetsOut, in: c[i].packetsIn } : { out: -1, in: -1 });
          });
        } else await new Promise((r) => setTimeout(r, 2));
        if (opt.lag) await new Promise((r) => setTimeout(r, opt.lag));
        if (Date.now() - lastSweep > 1000) {
          lastSweep = Date.now();
          await engine.sweep([...live].map(ckey));
          await engine.repair();
        }
      }
    };
    const writer = async () => {
      if (engine) return engineWriter();
      while (!clientDone || opened.length || closed.length) {
        if (opened.length) {
          const ports = opened.splice(0);
          const b = new ElementBatch('T');
          b.add('flows4', ports.flatMap((p) => [{ tuple: tuple(p) }, { tuple: back(tuple(p)) }]));
          b.add('owners4', ports.map((p) => ({ tuple: tuple(p), comment: `pid=1 job=${p}` })));
          const e = await apply(b);
          batches++;
          if (e) writerErrors.push(`begin: ${e}`);
        } else if (closed.length && opt.writer === 'daemon') {
          const ports = closed.splice(0);
          const flows = await list();
          const b = new ElementBatch('T');
          for (const p of ports) {
            const f = flows.get(key(tuple(p)));
            const r = flows.get(key(back(tuple(p))));
            readAtEnd.set(p, { out: f?.counter?.packets ?? -1, in: r?.counter?.packets ?? -1 });
          }
          b.delete('owners4', ports.map((p) => ({ tuple: tuple(p) })));
          b.delete('flows4', ports.flatMap((p) => [tuple(p), back(tuple(p))].filter((t) => flows.has(key(t))).map((t) => ({ tuple: t }))));
          const e = await apply(b);
          batches++;
          if (e) writerErrors.push(`end: ${e}`);
        } else {
          closed.length = opt.writer === 'daemon' ? closed.length : 0;
          await new Promise((r) => setTimeout(r, 2));
        }
      }
    };

    const out = join(tmp, `client-${rep}.json`);
    const client = spawn('ip', ['netns', 'exec', nodeNs, process.execPath, here, '--role', 'client', addr[remoteNs], String(PORT), String(opt.n), String(opt.conc), out, String(opt.req), String(opt.firstPort)], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.add(client);
    const rl = createInterface({ input: client.stdout });
    rl.on('line', (l) => {
      const [w, p] = l.split(' ');
      if (opt.writer === 'none') return;
      if (w === 'open') opened.push(Number(p));
      else if (w === 'close') closed.push(Number(p));
    });
    // Every line read, not only the client gone: lines may still be buffered at its exit.
    const clientExit = Promise.all([new Promise((res) => client.once('exit', res)), new Promise((res) => rl.once('close', res))]);
    const w = opt.writer === 'none' ? Promise.resolve() : writer();
    await clientExit;
    clientDone = true;
    await w;
    const res = JSON.parse(readFileSync(out, 'utf8'));
    const flows = await list();
    const pend = opt.rule === 'nopend' ? new Set() : await pendTuples(session);
    if (opt.dump) {
      const raw = await session.run('list set inet T flows4');
      writeFileSync(opt.dump, JSON.stringify({ rows: res.rows, readAtEnd: [...readAtEnd], raw: raw.stdout }));
    }
    session.close();
    if (engine) await engine.stop();

    const lost = { out: 0, in: 0, both: 0, zeroOut: 0, zeroIn: 0, bothZero: 0 };
    const offsets = [];
    // Connections with a direction whose datapath add failed (its tuple in pend4) and what their
    // elements miss against the usual connection's packets (the median of the others).
    const retried = { conns: 0, elements: 0, missingPackets: 0 };
    const packetsOf = (row) => [tuple(row.port), back(tuple(row.port))].map((t) => flows.get(key(t))?.counter?.packets ?? 0);
    const usual = (() => {
      const clean = res.rows.filter((r) => r.port && !pend.has(key(tuple(r.port))) && !pend.has(key(back(tuple(r.port))))).map(packetsOf);
      const med = (xs) => xs.sort((a, b) => a - b)[xs.length >> 1] ?? 0;
      return [med(clean.map((c) => c[0])), med(clean.map((c) => c[1]))];
    })();
    for (const row of res.rows.filter((r) => r.port)) {
      let o, i;
      if (opt.writer === 'daemon' || opt.writer === 'engine') {
        const r = readAtEnd.get(row.port) ?? { out: -2, in: -2 };
        o = r.out;
        i = r.in;
      } else {
        o = flows.get(key(tuple(row.port)))?.counter?.packets ?? -1;
        i = flows.get(key(back(tuple(row.port))))?.counter?.packets ?? -1;
      }
      if (o < 0) lost.out++;
      if (i < 0) lost.in++;
      if (o < 0 && i < 0) lost.both++;
      if (o === 0) lost.zeroOut++;
      if (i === 0) lost.zeroIn++;
      const failed = [tuple(row.port), back(tuple(row.port))].map((t) => pend.has(key(t)));
      if (failed.some(Boolean)) {
        retried.conns++;
        const got = packetsOf(row);
        failed.forEach((f, d) => f && (retried.elements++, (retried.missingPackets += Math.max(0, usual[d] - got[d]))));
      }
      if (o <= 0 && i <= 0 && !fromNow.has(row.port)) {
        lost.bothZero++;
        offsets.push(Math.round(row.open - res.start));
      }
    }
    const result = {
      n: opt.n, conc: opt.conc, writer: opt.writer, oracle: opt.oracle, lag: opt.lag, shrink: opt.shrink, size: opt.size, rule: opt.rule,
      connected: res.rows.filter((r) => r.port).length, clientErrors: res.errors, burstMs: Math.round(res.end - res.start),
      elements: flows.size, batches, writerErrors: writerErrors.slice(0, 3), writerErrorCount: writerErrors.length,
      ...lost, fromNow: fromNow.size, pend: pend.size, retriedConns: retried.conns, retriedElements: retried.elements, retriedMissingPackets: retried.missingPackets, usualPackets: usual, uncountedFirstMs: offsets.length ? Math.min(...offsets) : null, uncountedLastMs: offsets.length ? Math.max(...offsets) : null,
    };
    results.push(result);
    console.log(JSON.stringify(result));
  }
  if (opt.keep) console.log(`namespaces ${nodeNs} ${remoteNs} (kept until exit)`);
  process.exit(results.some((r) => r.bothZero > 0) ? 1 : 0);
}

/** The rules as they were before the failed-add retry: no pend sets or rules, no `accept` (nor
 * the rules that only accept), and per family the SYN, SYN-ACK and counting rules in that order. */
function withoutPend(text) {
  const out = [];
  const held = { 4: [], 6: [] };
  for (const line of text.split('\n')) {
    if (/set pend[46] |add @pend[46]|@pend[46] add|^\s*(meta l4proto != tcp|tcp flags & syn == 0) accept$/.test(line)) continue;
    const l = line.replace(/ delete @pend[46] \{ [^}]+\}/g, '').replace(/ accept$/, '');
    const f = / ip6 /.test(l) ? 6 : 4;
    if (/tcp flags & syn == 0/.test(l)) held[f].push(l);
    else {
      out.push(l);
      if (/== syn\|ack/.test(l)) (out.push(...held[f]), (held[f] = []));
    }
  }
  return out.join('\n');
}
