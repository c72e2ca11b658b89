import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { PerformanceObserver } from 'node:perf_hooks';

/** How often the cap is re-asserted besides after collections (see below). */
const REASSERT_MS = 100;

/**
 * Caps V8's young generation at `semiSpaceMb` per semi-space, from inside the process: V8 reads
 * --max-semi-space-size only at start-up, which `node dist/cli.js daemon` (npm start, the
 * systemd unit, the benchmark) would each have to pass. Left alone, V8 doubles the semi-spaces
 * up to 16 MB each as soon as a burst keeps objects alive across scavenges (10,000 connections
 * opening at once): 32 MB of the daemon's RSS, never given back. The growth factor, unlike the
 * maximum, is read at every collection: it is set to 1 once the semi-spaces reach the cap (they
 * take power-of-two sizes from 1 MB, so a power-of-two cap is met exactly).
 *
 * Every new isolate puts a growth factor below 2 back to 2 (V8's heap set-up does), and the
 * tracer starts a worker thread (again whenever bpftrace restarts): so the factor is checked
 * after every collection and every REASSERT_MS — a heap-space query and, at the cap, a flag
 * string parsed, microseconds. Returns the stop function.
 */
export function capYoungGeneration(semiSpaceMb: number): () => void {
  if (!(semiSpaceMb > 0)) return () => undefined;
  const cap = 2 * semiSpaceMb * 1024 * 1024; // new_space counts both semi-spaces
  const youngSize = (): number => getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;
  let factor = 0;
  const check = (): void => {
    // Below the cap (not reached yet, or shrunk while idle) V8's own doubling goes on.
    const want = youngSize() >= cap ? 1 : 2;
    if (want === 2 && factor === 2) return;
    factor = want;
    try {
      setFlagsFromString(`--semi-space-growth-factor=${want}`);
    } catch {
      /* a V8 with frozen flags: the young generation grows as V8 decides */
    }
  };
  check();
  const observer = new PerformanceObserver(check);
  observer.observe({ entryTypes: ['gc'] });
  const timer = setInterval(check, REASSERT_MS).unref();
  return () => {
    observer.disconnect();
    clearInterval(timer);
  };
}
