import { spawn } from 'node:child_process';

/** `promtool check metrics` on exposition text (Debian's promtool; setup installs it): the
 * parser Prometheus itself uses, plus its lint. */
export function promtoolCheckMetrics(text: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (c) => (out += c));
    p.stderr.on('data', (c) => (out += c));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, out }));
    p.stdin.end(text);
  });
}
