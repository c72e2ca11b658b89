#!/usr/bin/env node
// API latency under load: PROCS registered processes and CONNS live connections, then p50/p99 of
// each read and of a register + end, over the Unix socket. Runs in private namespaces (a node,
// where the daemon and the connections' owner run, and a remote holding the other ends).
//   node bench/api-load.mjs                      # PROCS=10000 CONNS=50000
//   PROCS=2000 CONNS=10000 SAMPLES=300 node bench/api-load.mjs
// Needs root, a built dist/, python3. Leaves nothing behind (namespaces deleted, children killed).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const PROCS = Number(process.env.PROCS ?? 10_000);
const CONNS = Number(process.env.CONNS ?? 50_000);
const SAMPLES = Number(process.env.SAMPLES ?? 300);
const id = `np-bench-${process.pid}`;
const NODE = `${id}-n`, REMOTE = `${id}-r`;
const kids = [];
const dirs = [];
const sh = (cmd, args) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
};
const inNs = (ns, cmd, args, opts = {}) => {
  const c = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
  kids.push(c);
  return c;
};
function cleanup() {
  for (const k of kids) try { k.kill('SIGKILL'); } catch {}
  // Also what the daemon started inside (bpftrace, tcpdump, nft): killed with it, they would
  // outlive it as orphans.
  for (const ns of [NODE, REMOTE]) {
    for (const pid of spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout.split(/\s+/).filter(Boolean)) try { process.kill(Number(pid), 'SIGKILL'); } catch {}
    spawnSync('ip', ['netns', 'del', ns]);
  }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function call(socketPath, method, path, body) {
  return new Promise((res, rej) => {
    const t0 = process.hrtime.bigint();
    const req = request({ socketPath, method, path, agent: false, headers: body ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } : {} }, (r) => {
      const chunks = [];
      r.on('data', (c) => chunks.push(c));
      r.on('end', () => res({ status: r.statusCode, body: Buffer.concat(chunks).toString(), ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
    });
    req.on('error', rej);
    if (body) req.write(body);
    req.end();
  });
}
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
const btime = Number(/btime (\d+)/.exec(readFileSync('/proc/stat', 'utf8'))[1]);
const clk = Number(sh('getconf', ['CLK_TCK']).trim());
const birth = (pid) => btime + Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')[19]) / clk;

// --- namespaces ---
sh('ip', ['netns', 'add', NODE]);
sh('ip', ['netns', 'add', REMOTE]);
sh('ip', ['link', 'add', 'veth0', 'netns', NODE, 'type', 'veth', 'peer', 'name', 'veth0', 'netns', REMOTE]);
for (const [ns, a] of [[NODE, '10.77.0.1'], [REMOTE, '10.77.0.2']]) {
  sh('ip', ['-n', ns, 'addr', 'add', `${a}/24`, 'dev', 'veth0']);
  sh('ip', ['-n', ns, 'link', 'set', 'veth0', 'up']);
  sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
}
sh('ip', ['netns', 'exec', NODE, 'sysctl', '-qw', 'net.ipv4.ip_local_port_range=10000 65000']);

// --- a remote that accepts and holds many connections; a node-side holder that opens them ---
const py = `
import socket, selectors, sys, resource
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
mode = sys.argv[1]
if mode == 'server':
    sel = selectors.DefaultSelector()
    for port in [int(p) for p in sys.argv[2].split(',')]:
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', port)); s.listen(4096); s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    print('ready', flush=True); held = []
    while True:
        for k, _ in sel.select():
            try:
                while True:
                    c, _ = k.fileobj.accept(); held.append(c)
            except BlockingIOError: pass
else:
    n = int(sys.argv[2]); ports = [int(p) for p in sys.argv[3].split(',')]; held = []
    sys.stdin.readline()
    for i in range(n):
        c = socket.socket(); c.connect(('10.77.0.2', ports[i % len(ports)])); held.append(c)
        if i % 5000 == 4999: print('opened', i + 1, flush=True)
    print('done', flush=True)
    sys.stdin.readline()
`;
dirs.push(mkdtempSync(join(tmpdir(), 'netprof-bench-')));
const pyFile = join(dirs.at(-1), 'hold.py');
writeFileSync(pyFile, py);
// One process holds at most PER_PROCESS sockets (the open-file limit here is 20,000): the
// connections are spread over several holders, each with its own server and ports.
const PER_PROCESS = 15_000;
const groups = Array.from({ length: Math.ceil(CONNS / PER_PROCESS) }, (_, g) => ({
  n: Math.min(PER_PROCESS, CONNS - g * PER_PROCESS),
  ports: [7001, 7002, 7003].map((p) => String(p + 10 * g)).join(','),
}));
const keep = setInterval(() => {}, 1000);
for (const g of groups) {
  const server = inNs(REMOTE, 'python3', [pyFile, 'server', g.ports]);
  server.stderr.on('data', (d) => process.stderr.write(d));
  await new Promise((r, j) => { server.stdout.once('data', r); server.once('exit', (c) => j(new Error(`server exited ${c}`))); });
}

// --- the daemon ---
const dir = mkdtempSync(join(tmpdir(), 'netprof-bench-'));
dirs.push(dir);
const socket = join(dir, 'api.sock');
writeFileSync(join(dir, 'config.ini'), `[CONFIG]\nINTERFACE = veth0\nLOG_DIR = ${dir}/log\nLOG_FORMAT = jsonl\nLISTEN = none\nSOCKET = ${socket}\nRULES_THRESHOLD = ${Math.max(1000, CONNS + 1000)}\nGC_INTERVAL = 60\n`);
const entry = resolve(here, '../test/integration/hardening/run-daemon.mjs');
const daemon = inNs(NODE, process.execPath, [entry, '--config', join(dir, 'config.ini')]);
let err = '';
daemon.stderr.on('data', (d) => (err += d));
for (let i = 0; i < 300 && !err.includes('netprof daemon ready'); i++) await sleep(100);
if (!err.includes('netprof daemon ready')) throw new Error(`daemon not ready:\n${err}`);

// --- PROCS registered processes (sleepers; one also holds the connections) ---
const t0 = Date.now();
const holders = groups.map((g) => {
  const h = inNs(NODE, 'python3', [pyFile, 'client', String(g.n), g.ports]);
  h.out = '';
  h.stdout.on('data', (d) => (h.out += d));
  h.stderr.on('data', (d) => process.stderr.write(d));
  return h;
});
const reg = async (job, pid) => call(socket, 'POST', `/v1/jobs/${job}/processes`, JSON.stringify({ pid, owner: 'root', birthdate: birth(pid) }));
let r;
for (const h of holders) {
  r = await reg('holder', h.pid);
  if (r.status !== 201) throw new Error(`register holder: ${r.status} ${r.body}`);
}
const regMs = [];
for (let i = holders.length; i < PROCS; i++) {
  const s = spawn('sleep', ['3600'], { stdio: 'ignore' });
  kids.push(s);
  r = await reg(`job${i % 1000}.${i}`, s.pid);
  if (r.status !== 201) throw new Error(`register ${s.pid}: ${r.status} ${r.body}`);
  regMs.push(r.ms);
}
console.log(`registered ${PROCS} processes in ${((Date.now() - t0) / 1000).toFixed(1)} s (register p50 ${pct(regMs, 50)?.toFixed(1)} ms, p99 ${pct(regMs, 99)?.toFixed(1)} ms)`);

// --- CONNS live connections ---
const t1 = Date.now();
for (const h of holders) h.stdin.write('go\n');
while (!holders.every((h) => h.out.includes('done'))) {
  await sleep(500);
  if (Date.now() - t1 > 600_000) throw new Error(`holder stuck: ${holders.map((h) => h.out.trim().split('\n').pop()).join(' / ')}`);
}
let tracked = 0;
for (let i = 0; i < 600; i++) {
  const st = JSON.parse((await call(socket, 'GET', '/v1/stats')).body);
  tracked = st.connections_tracked;
  if (tracked >= CONNS) break;
  await sleep(1000);
}
console.log(`${CONNS} connections opened in ${((Date.now() - t1) / 1000).toFixed(1)} s; daemon tracks ${tracked}`);

// --- latencies ---
const rows = [];
const measure = async (name, fn) => {
  const ms = [];
  for (let i = 0; i < SAMPLES; i++) ms.push(await fn(i));
  rows.push({ call: name, p50_ms: +pct(ms, 50).toFixed(2), p99_ms: +pct(ms, 99).toFixed(2), max_ms: +Math.max(...ms).toFixed(2) });
};
await measure('GET /v1/health', async () => (await call(socket, 'GET', '/v1/health')).ms);
await measure('GET /v1/stats', async () => (await call(socket, 'GET', '/v1/stats')).ms);
await measure('GET /v1/jobs', async () => (await call(socket, 'GET', '/v1/jobs')).ms);
await measure('GET /v1/jobs/job7.7', async () => (await call(socket, 'GET', '/v1/jobs/job7.7')).ms);
await measure('POST+DELETE a process', async () => {
  const s = spawn('sleep', ['60'], { stdio: 'ignore' });
  kids.push(s);
  const a = await reg('bench-x', s.pid);
  const b = await call(socket, 'DELETE', '/v1/jobs/bench-x');
  s.kill('SIGKILL');
  return a.ms + b.ms;
});
await measure('GET /v1/jobs/holder (50k live counters read)', async () => (await call(socket, 'GET', '/v1/jobs/holder')).ms).catch((e) => console.log(e.message));
console.table(rows);
for (const h of holders) h.stdin.write('end\n');
cleanup();
process.exit(0);
