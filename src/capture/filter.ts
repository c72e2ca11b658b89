/**
 * The in-kernel (BPF) filter: only TCP segments that open or close a connection — SYN, FIN or
 * RST — cross into user space, so a busy data transfer costs the daemon nothing.
 *
 * IPv4: libpcap's tcp[] knows the IPv4 header length and rejects non-first fragments.
 * IPv6: libpcap cannot index tcp[] behind IPv6, so the flags byte is read at a fixed offset:
 * next header (byte 6) must be TCP and the TCP flags are byte 13 of a header starting right
 * after the 40-byte fixed header. IPv6 extension headers are NOT followed: a TCP segment behind
 * hop-by-hop, routing, fragment or destination options headers is not seen. Linux TCP does not
 * send such headers by default.
 * Tags from 802.1Q VLANs are normally stripped by the NIC/kernel before the filter sees the
 * frame; an in-band tagged frame would need a `vlan and (…)` clause and is not matched.
 */
export const CONNECTION_FILTER =
  '(tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0) or (ip6 and ip6[6] == 6 and ip6[53] & 0x07 != 0)';

/**
 * Bytes captured per packet. Enough for the largest header stack decode reads: SLL2 (20) or
 * Ethernet with two VLAN tags (22) + IPv4 with options (60) + the first 14 bytes of TCP = 96.
 */
export const SNAPLEN = 128;
