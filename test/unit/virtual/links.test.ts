import { describe, expect, it } from 'vitest';
import { parseIpLinks } from '../../../src/resolve/links.js';
import { tuples } from '../../../src/daemon-links.js';
import { linkSegmentEvents } from '../../../src/capture/events.js';
import { tableText } from '../../../src/counters/nft-ruleset.js';

describe('link discovery and NAT parsing', () => {
  it('reads veth peers and bridge ports from ip -j link show', () => {
    // Recorded: a podman container's view (eth0, peer index 7) and the host's (its veth, a port of podman0).
    const inside = '[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP"],"link_type":"loopback"},{"ifindex":2,"link_index":7,"ifname":"eth0","flags":["UP"],"link_type":"ether","link_netnsid":0}]';
    const host = '[{"ifindex":3,"ifname":"podman0","link_type":"ether"},{"ifindex":7,"link_index":2,"ifname":"veth8a1f2b3c","master":"podman0","link_type":"ether","link_netnsid":1}]';
    expect(parseIpLinks(inside)).toEqual([{ ifindex: 1, ifname: 'lo' }, { ifindex: 2, ifname: 'eth0', link_index: 7 }]);
    expect(parseIpLinks(host)[1]).toEqual({ ifindex: 7, ifname: 'veth8a1f2b3c', link_index: 2, master: 'podman0' });
    expect(() => parseIpLinks('{}')).toThrow(/not a list/);
  });

  it('finds where masquerade and DNAT put the job’s end in conntrack’s listing', () => {
    const snat = 'tcp      6 431999 ESTABLISHED src=10.88.0.2 dst=10.3.0.2 sport=40000 dport=8000 src=10.3.0.2 dst=10.3.0.1 sport=8000 dport=40000 [ASSURED] mark=0 use=1\n';
    expect(tuples(snat)).toEqual({ orig: { src: '10.88.0.2', dst: '10.3.0.2', sport: 40000, dport: 8000 }, reply: { src: '10.3.0.2', dst: '10.3.0.1', sport: 8000, dport: 40000 } });
    expect(tuples('conntrack v1.4.7 (conntrack-tools): 0 flow entries have been shown.\n')).toBeUndefined();
  });

  it('takes the job’s end of a segment from the direction it crossed the link', () => {
    const seg = { family: 4 as const, src: '10.3.0.2', dst: '10.77.0.2', srcPort: 5000, dstPort: 80, flags: 0x02 };
    expect(linkSegmentEvents(seg, 1, 'br0', false)).toEqual([
      { kind: 'syn', time: 1, iface: 'br0', sent: false, key: { family: 4, localAddr: '10.77.0.2', localPort: 80, remoteAddr: '10.3.0.2', remotePort: 5000 } },
    ]);
    expect((linkSegmentEvents({ ...seg, flags: 0x12 }, 1, 'br0', true) as Array<{ key: { localAddr: string } }>)[0]!.key.localAddr).toBe('10.3.0.2');
  });

  it('hooks a link’s table on the device’s ingress and egress, and refuses a bad device name', () => {
    const text = tableText({ table: 'netprof_l7', flowsSize: 1024, ownersSize: 64, priority: 500, link: 'veth8a1f2b3c' });
    expect(text).toContain('table netdev netprof_l7 {');
    expect(text).toContain('hook ingress device "veth8a1f2b3c"');
    expect(text).toContain('hook egress device "veth8a1f2b3c"');
    expect(() => tableText({ table: 'netprof_l7', flowsSize: 1024, ownersSize: 64, priority: 500, link: 'a"; flush ruleset' })).toThrow(/bad interface name/);
  });
});
