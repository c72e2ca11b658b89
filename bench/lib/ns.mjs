// Private network namespaces for the benchmark, and the child processes run in them.
// Every namespace has a name unique to this run (np-bench-<hex>-<n>-<tag>), and is deleted at
// the end: by destroy(), by cleanupAll() (called on normal end, on failure, on SIGINT/SIGTERM)
// and, as a last resort, synchronously at process exit. Nothing here touches the machine's own
// namespace, tables or interfaces: every command that changes state runs with `ip -n NS` or
// `ip netns exec NS`.
import { execFile, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export const RUN_ID = randomBytes(3).toString('hex');
let serial = 0;
const liveNs = new Set();
const liveChildren = new Set();

/** Runs a program (argument array, no shell); resolves with code, stdout, stderr. */
export function run(file, args, opts = {}) {
  return new Promise((resolve) => {
    execFile(file, args, { maxBuffer: 512 * 1024 * 1024, encoding: 'utf8', ...opts }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 127) : 0;
      resolve({ code, stdout: String(stdout ?? ''), stderr: String(stderr ?? '') || (err && typeof err.code !== 'number' ? err.message : '') });
    });
  });
}

export async function runOk(file, args, opts = {}) {
  const r = await run(file, args, opts);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')}: exit ${r.code}: ${r.stderr.trim().split('\n').slice(0, 3).join(' | ')}`);
  return r.stdout;
}

export const nsRun = (ns, file, args, opts) => run('ip', ['netns', 'exec', ns, file, ...args], opts);
export const nsRunOk = (ns, file, args, opts) => runOk('ip', ['netns', 'exec', ns, file, ...args], opts);

/** Starts a long-running program inside the namespace (`ip netns exec` execs it: the child's pid
 * is the program's). Children inherit our file-descriptor limit, which run.mjs raises to the
 * hard limit at start (holders keep 10,000 sockets open). Tracked so cleanupAll() kills it. */
export function nsSpawn(ns, file, args, opts = {}) {
  const child = spawn('ip', ['netns', 'exec', ns, file, ...args], { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  return child;
}

export function exited(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode ?? child.signalCode);
  return new Promise((resolve) => child.once('exit', (code, sig) => resolve(code ?? sig)));
}

/** SIGTERM, then SIGKILL after graceMs. Only this child, by its own pid. */
export async function stopChild(child, graceMs = 3000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited(child);
  clearTimeout(t);
}

async function createNamespace(tag) {
  serial += 1;
  const ns = `np-bench-${RUN_ID}-${serial}-${tag}`.slice(0, 60);
  await runOk('ip', ['netns', 'add', ns]);
  liveNs.add(ns);
  await runOk('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  return ns;
}

/**
 * Two namespaces — "node" (daemon and jobs) and "remote" — joined by a veth pair with IPv4 and
 * IPv6 addresses. The node's ephemeral port range is widened (per namespace) so 10,000 held
 * connections plus churn never run out of ports.
 */
export async function createPair(tag) {
  const node = { ns: await createNamespace(`${tag}-n`), ifname: 'veth0' };
  const remote = { ns: await createNamespace(`${tag}-r`), ifname: 'veth0' };
  const subnet = 1 + (serial % 250);
  node.v4 = `10.${subnet}.99.1`;
  node.v6 = `fd00:${subnet}:99::1`;
  remote.v4 = `10.${subnet}.99.2`;
  remote.v6 = `fd00:${subnet}:99::2`;
  const pair = {
    node,
    remote,
    async destroy() {
      await destroyNamespace(node.ns);
      await destroyNamespace(remote.ns);
    },
  };
  try {
    await runOk('ip', ['link', 'add', 'veth0', 'netns', node.ns, 'type', 'veth', 'peer', 'name', 'veth0', 'netns', remote.ns]);
    for (const h of [node, remote]) {
      await runOk('ip', ['-n', h.ns, 'addr', 'add', `${h.v4}/24`, 'dev', h.ifname]);
      await runOk('ip', ['-n', h.ns, 'addr', 'add', `${h.v6}/64`, 'dev', h.ifname, 'nodad']);
      await runOk('ip', ['-n', h.ns, 'link', 'set', h.ifname, 'up']);
      await nsRunOk(h.ns, 'sysctl', ['-qw', 'net.ipv4.ip_local_port_range=1024 65000']);
    }
  } catch (e) {
    await pair.destroy();
    throw e;
  }
  return pair;
}

/** Kills whatever still runs inside the namespace (by pid, as `ip netns pids` lists them), then
 * deletes it. Safe to call twice. */
export async function destroyNamespace(ns) {
  if (!liveNs.has(ns)) return;
  const pids = await run('ip', ['netns', 'pids', ns]);
  for (const pid of pids.stdout.split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  await run('ip', ['netns', 'del', ns]);
  liveNs.delete(ns);
}

/** Everything this run started: children first (by their own pids), then namespaces. */
export async function cleanupAll() {
  for (const c of [...liveChildren]) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
  for (const ns of [...liveNs]) await destroyNamespace(ns);
}

process.on('exit', () => {
  for (const c of liveChildren) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
  for (const ns of liveNs) {
    const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? '';
    for (const pid of pids.split(/\s+/).filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    spawnSync('ip', ['netns', 'del', ns]);
  }
});

export async function waitForListen(ns, port, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const r = await nsRun(ns, 'ss', ['-Hltn', `sport = :${port}`]);
    if (r.stdout.trim()) return;
    await sleep(25);
  }
  throw new Error(`nothing listens on port ${port} in ${ns} after ${timeoutMs} ms`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Reads lines from a child's stdout; resolves with the first line matching re. */
export function waitLine(child, re, timeoutMs, what = String(re)) {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => {
      child.stdout.off('data', on);
      reject(new Error(`timeout after ${timeoutMs} ms waiting for ${what}; got: ${buf.slice(-500)}`));
    }, timeoutMs);
    const on = (d) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const m = re.exec(line);
        if (m) {
          clearTimeout(t);
          child.stdout.off('data', on);
          resolve(m);
          return;
        }
      }
    };
    child.stdout.on('data', on);
    child.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`${what}: process exited with ${code}`));
    });
  });
}

/** Starts a program in the namespace and resolves once it prints a line matching `re`. */
export async function spawnReady(ns, file, args, re, ms, what) {
  const c = nsSpawn(ns, file, args);
  c.stderr.on('data', () => {});
  await waitLine(c, re, ms, what);
  return c;
}
