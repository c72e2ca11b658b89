import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseChainListing, restoreQuote, ruleSpec } from '../../../src/counters/iptables-rules.js';
import { countsOf, ElementBatch, parseSets, PEND_TIMEOUT_S, pendTimeoutFor, tableText } from '../../../src/counters/nft-ruleset.js';
import { canonicalAddr, canonicalKey, ownerTag, parseOwnerTag, tupleId } from '../../../src/counters/tuple.js';

const fixture = (name: string): string => readFileSync(join(__dirname, '../../fixtures/counters', name), 'utf8');

describe('nft -j output (recorded on nft 1.0.6)', () => {
  it('reads a flows set’s elements with their counters', () => {
    const flows = parseSets(fixture('nft-list-set-flows4.json')).get('flows4')!;
    expect(flows).toEqual([
      { tuple: { family: 4, saddr: '10.99.0.2', sport: 5021, daddr: '10.99.0.1', dport: 42001 }, counter: { packets: 16, bytes: 66376 } },
      { tuple: { family: 4, saddr: '10.99.0.1', sport: 42001, daddr: '10.99.0.2', dport: 5021 }, counter: { packets: 18, bytes: 50944 } },
    ]);
    expect(countsOf(flows[1], flows[0])).toEqual({ bytesOut: 50944, packetsOut: 18, bytesIn: 66376, packetsIn: 16 });
  });

  it('reads every set of our table, owners with their comments, IPv6 canonical', () => {
    const sets = parseSets(fixture('nft-list-table.json'));
    expect([...sets.keys()].sort()).toEqual(['flows4', 'flows6', 'owners4', 'owners6']);
    expect(sets.get('owners4')![0]!.comment).toBe('pid=5 job=j "x" $(y); \\ é */ #');
    expect(parseOwnerTag(sets.get('owners4')![0]!.comment!)).toEqual({ pid: 5, job: 'j "x" $(y); \\ é */ #' });
    const six = sets.get('owners6')![0]!;
    expect(six.tuple).toEqual({ family: 6, saddr: 'fd00:99::1', sport: 42002, daddr: 'fd00:99::2', dport: 80 });
    expect(sets.get('flows6')).toHaveLength(2);
  });

  it('refuses output it does not understand', () => {
    expect(() => parseSets('{"x":1}')).toThrow(/nftables/);
    expect(() => parseSets('{"nftables":[{"set":{"name":"flows4","type":["ipv4_addr"],"elem":[{"concat":[1]}]}}]}')).toThrow(/unexpected set element/);
  });
});

describe('element batches', () => {
  it('carry job ids as JSON strings, never as nft syntax', () => {
    const b = new ElementBatch('netprof').add('owners4', [{ tuple: { family: 4, saddr: '1.2.3.4', sport: 1, daddr: '5.6.7.8', dport: 2 }, comment: 'pid=1 job=} ; flush ruleset' }]);
    expect(JSON.parse(b.toJson())).toEqual({
      nftables: [{ add: { element: { family: 'inet', table: 'netprof', name: 'owners4', elem: [{ elem: { val: { concat: ['1.2.3.4', 1, '5.6.7.8', 2] }, comment: 'pid=1 job=} ; flush ruleset' } }] } } }],
    });
  });

  it('table text refuses names that could change its meaning', () => {
    const layout = { table: 'netprof', flowsSize: 10, ownersSize: 10, priority: 500 };
    expect(tableText({ ...layout, interfaces: ['lo', 'veth0'] })).toContain('oifname { "lo", "veth0" }');
    expect(() => tableText({ ...layout, interfaces: ['eth0" } accept #'] })).toThrow(/interface/);
    expect(() => tableText({ ...layout, table: 'x; flush ruleset' })).toThrow(/table name/);
  });

  it('table text: a failed add goes to the pend set, counted packets skip the retry', () => {
    const text = tableText({ table: 'netprof', flowsSize: 10, ownersSize: 10, priority: 500, pendTimeout: pendTimeoutFor(600) });
    expect(text).toContain('set pend6 { type ipv6_addr . inet_service . ipv6_addr . inet_service; size 10; flags dynamic,timeout; timeout 660s; }');
    const rules = text.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('meta nfproto ipv4'));
    const chain = rules.slice(0, 6); // output's IPv4 rules
    // Counting first, ending the chain; then the retry, which only packets without an element reach.
    expect(chain[0]).toMatch(/tcp flags & syn == 0 ip saddr \. tcp sport \. ip daddr \. tcp dport @flows4 accept$/);
    expect(chain[1]).toMatch(/tcp flags & syn == 0 ip saddr \. tcp sport \. ip daddr \. tcp dport @pend4 add @flows4 \{ ip saddr \. tcp sport \. ip daddr \. tcp dport \}$/);
    // Each add ends in accept; the rule after it (same match) runs only when the add failed.
    const fwd = '{ ip saddr . tcp sport . ip daddr . tcp dport }';
    for (const [i, flags] of [[2, 'syn'], [4, 'syn|ack']] as const) {
      const match = `meta nfproto ipv4 meta l4proto tcp tcp flags & (syn|ack) == ${flags}`;
      expect(chain[i]!.startsWith(`${match} `) && chain[i]!.endsWith(` add @flows4 ${fwd} accept`)).toBe(true);
      expect(chain[i + 1]).toBe(`${match} add @pend4 ${fwd}`);
    }
    // Non-TCP leaves at once; a non-SYN packet meets only its family's two rules, then leaves.
    const output = text.slice(text.indexOf('chain output')).split('\n').map((l) => l.trim());
    expect(output[1]).toBe('meta l4proto != tcp accept');
    expect(output.slice(2, 7).map((l) => l.replace(/ .*?@(\w+).*/, ' $1'))).toEqual(['meta flows4', 'meta pend4', 'meta flows6', 'meta pend6', 'tcp flags & syn == 0 accept']);
    expect(chain[2]).toContain('delete @pend4 { ip daddr . tcp dport . ip saddr . tcp sport } delete @pend4 { ip saddr . tcp sport . ip daddr . tcp dport }');
    expect(pendTimeoutFor(30)).toBe(PEND_TIMEOUT_S);
    // Only the configured interfaces' packets look in pend (the interface test comes first).
    const onVeth = tableText({ table: 'netprof', flowsSize: 10, ownersSize: 10, priority: 500, interfaces: ['veth0'] });
    expect(onVeth).toContain('tcp flags & syn == 0 oifname { "veth0" } ip saddr . tcp sport . ip daddr . tcp dport @pend4 add @flows4');
  });
});

describe('iptables -x -v -n -L (recorded on iptables 1.8.9 nf_tables)', () => {
  it('matches ports as whole fields and keeps comments with */ in them', () => {
    const rules = parseChainListing(4, fixture('iptables-NETPROF_IN.txt'));
    expect(rules.map((r) => [r.tuple.sport, r.tuple.dport, r.packets, r.bytes, r.owner?.job])).toEqual([
      [80, 40002, 0, 0, 'eighty'],
      [8080, 40001, 0, 0, 'x */ /* tcp spt:1 dpt:2 */'],
      [5004, 40000, 16, 60848, 'a "b" $(x); \\ é # \' `ls` }'],
    ]); // the foreign rule without our comment is ignored
    expect(rules.filter((r) => r.tuple.sport === 80)).toHaveLength(1);
  });

  it('reads ip6tables listings', () => {
    const [r] = parseChainListing(6, fixture('ip6tables-NETPROF_IN.txt'));
    expect(tupleId(r!.tuple)).toBe(`6|${canonicalAddr(6, 'fd00::2')}|80|${canonicalAddr(6, 'fd00::1')}|8080`);
    expect(r!.owner).toEqual({ pid: 2, job: 'j' });
  });

  it('quotes comments the way iptables-restore reads them', () => {
    expect(restoreQuote('a "b" \\ c')).toBe('"a \\"b\\" \\\\ c"');
    expect(ruleSpec({ family: 4, saddr: '1.2.3.4', sport: 1, daddr: '5.6.7.8', dport: 2 }, { pid: 3, job: 'j' })).toBe(
      '-p tcp -s 1.2.3.4/32 -d 5.6.7.8/32 --sport 1 --dport 2 -m comment --comment "netprof pid=3 job=j"',
    );
  });
});

describe('keys and owner tags', () => {
  it('spells an address one way', () => {
    expect(canonicalAddr(6, 'FD00:0::1')).toBe(canonicalAddr(6, 'fd00::0:1'));
    expect(canonicalAddr(6, '::ffff:1.2.3.4')).toBe('::ffff:1.2.3.4');
    expect(() => canonicalAddr(4, '1.2.3')).toThrow();
    expect(() => canonicalKey({ family: 4, localAddr: '1.2.3.4', localPort: 70000, remoteAddr: '1.2.3.4', remotePort: 1 })).toThrow(/port/);
  });

  it('tags owners within the kernel’s comment limit', () => {
    expect(ownerTag({ pid: 4194304, job: 'é'.repeat(50) })).toBe(`pid=4194304 job=${'é'.repeat(50)}`);
    expect(() => ownerTag({ pid: 1, job: 'x'.repeat(120) })).toThrow(/128 bytes/);
    expect(() => ownerTag({ pid: 1, job: 'a\nb' })).toThrow(/control/);
    expect(parseOwnerTag('pid=12 job= spaced  ')).toEqual({ pid: 12, job: ' spaced  ' });
  });
});
