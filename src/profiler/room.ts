/**
 * How the flows sets' room is shared: every counted connection needs two elements (one per
 * direction), and so does every unclaimed connection the grace list keeps for a late
 * registration. The default SET_SIZE (262,144) holds RULES_THRESHOLD counted connections plus a
 * grace list of ~100,000 (2,000 unprofiled connections a second for 30 s is 60,000); the grace
 * list is bounded below what is left, so that a profiled connection's SYN always finds room.
 */
export function maxUnclaimed(capacity: number, setSize: number): number {
  // 10 % headroom for what the datapath adds that nobody told us of (a SYN capture missed).
  return Math.max(0, Math.floor(((setSize - 2 * capacity) / 2) * 0.9));
}
