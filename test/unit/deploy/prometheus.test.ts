import { describe, expect, it } from 'vitest';
import { copyFileSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { run } from '../../../src/util/exec.js';

// What operators install from deploy/prometheus/, checked with Debian's promtool (setup installs
// it): the config and rules parse, and every alert fires on the series that should trigger it
// and not on the healthy ones (netprof-alerts.test.yml).

const DIR = resolve(__dirname, '../../../deploy/prometheus');

/** The shipped files in a scratch directory, /etc/prometheus/ pointing there. */
function installed(): string {
  const d = mkdtempSync(join(tmpdir(), 'netprof-prom-'));
  for (const f of readdirSync(DIR)) copyFileSync(join(DIR, f), join(d, f));
  writeFileSync(join(d, 'prometheus.yml'), readFileSync(join(DIR, 'prometheus.yml'), 'utf8').replaceAll('/etc/prometheus/', `${d}/`));
  writeFileSync(join(d, 'netprof.token'), 'a-token-of-sixteen-chars\n', { mode: 0o640 });
  return d;
}

describe('deploy/prometheus', () => {
  it('promtool check config and check rules pass', async () => {
    const d = installed();
    const c = await run('promtool', ['check', 'config', join(d, 'prometheus.yml')]);
    expect(c.code, c.stdout + c.stderr).toBe(0);
    expect(c.stdout).toMatch(/SUCCESS: 2 rule files found/);
    const r = await run('promtool', ['check', 'rules', join(d, 'netprof-rules.yml'), join(d, 'netprof-alerts.yml')]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
  });

  it('promtool test rules: every alert has a case that fires it', async () => {
    const d = installed();
    const t = await run('promtool', ['test', 'rules', join(d, 'netprof-alerts.test.yml')]);
    expect(t.code, t.stdout + t.stderr).toBe(0);
    const alerts = [...readFileSync(join(DIR, 'netprof-alerts.yml'), 'utf8').matchAll(/- alert: (\w+)/g)].map((m) => m[1]!);
    const tests = readFileSync(join(DIR, 'netprof-alerts.test.yml'), 'utf8');
    expect(alerts.length).toBeGreaterThanOrEqual(9);
    for (const a of alerts) expect(tests, a).toMatch(new RegExp(`alertname: ${a}\\n\\s+exp_alerts:\\n\\s+- exp_labels`));
  });

  it('a broken alert fails its test (the tests are not vacuous)', async () => {
    const d = installed();
    const file = join(d, 'netprof-alerts.yml');
    writeFileSync(file, readFileSync(file, 'utf8').replace('netprof_capture_listening == 0', 'netprof_capture_listening == 2'));
    const t = await run('promtool', ['test', 'rules', join(d, 'netprof-alerts.test.yml')]);
    expect(t.code).not.toBe(0);
    expect(t.stdout + t.stderr).toMatch(/NetprofCaptureDown/);
  });

  it('the dashboard is Grafana JSON with a query per panel, all on the data source variable', () => {
    const dash = JSON.parse(readFileSync(join(DIR, 'netprof-dashboard.json'), 'utf8')) as { panels: { title: string; targets: { expr: string; datasource: { uid: string } }[] }[]; templating: { list: { name: string }[] } };
    expect(dash.templating.list.map((v) => v.name)).toEqual(['datasource', 'node']);
    const titles = dash.panels.map((p) => p.title).join('\n');
    for (const want of [/Top jobs by bytes/, /per node/, /Uncounted and unresolved/, /CPU/, /RSS/]) expect(titles).toMatch(want);
    for (const p of dash.panels) {
      expect(p.targets.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets) expect(t.datasource.uid).toBe('${datasource}');
    }
  });
});
