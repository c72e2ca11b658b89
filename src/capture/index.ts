/** The capture module's public face: what the profiler and the daemon import. */
export { Capture, type CaptureOptions, type CaptureEvents, type CaptureGap, type CaptureDown, type InterfaceStats } from './capture.js';
export type { ConnEvent, ConnEventKind } from './events.js';
export { LocalAddresses, normalizeAddress } from './addresses.js';
export { CONNECTION_FILTER, SNAPLEN } from './filter.js';
