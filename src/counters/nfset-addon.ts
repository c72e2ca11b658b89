import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** The native addon of native/nfset (nf_tables elements over netlink through libnftnl). */

export type NfsetHandle = { readonly __nfset: unique symbol };

/** [op (0 add, 1 destroy, 2 delete), set, keyLen, keys, comments or null] */
export type NfsetOp = [number, string, number, Buffer, Array<string | null> | null];

/** [found (1/0 per key), counters (packets, bytes per key), comments] */
export type NfsetGot = [Uint8Array, Float64Array, Array<string | undefined>];
/** [keys, keyLen, counters (packets, bytes per element), comments] */
export type NfsetDumped = [Buffer, number, Float64Array, Array<string | undefined>];

export interface NfsetAddon {
  /** family: NFPROTO_INET (1) or NFPROTO_NETDEV (5). */
  open(nsPath: string | null, table: string, family: number): NfsetHandle;
  close(h: NfsetHandle): void;
  apply(h: NfsetHandle, ops: NfsetOp[]): void;
  /** The same transaction on libuv's thread pool (handle busy until it settles, as getAsync). */
  applyAsync(h: NfsetHandle, ops: NfsetOp[]): Promise<void>;
  get(h: NfsetHandle, set: string, keyLen: number, keys: Buffer): NfsetGot;
  /** The same exchange on libuv's thread pool. Until it settles, every other call on the
   * handle throws EBUSY (one request at a time on a socket); close() waits for it. */
  getAsync(h: NfsetHandle, set: string, keyLen: number, keys: Buffer): Promise<NfsetGot>;
  dump(h: NfsetHandle, set: string): NfsetDumped;
  dumpAsync(h: NfsetHandle, set: string): Promise<NfsetDumped>;
  rules(h: NfsetHandle, chain: string): number;
}

/** Errors the addon throws: errno and its name, as Node's own system errors have. */
export interface NfsetError extends Error {
  errno: number;
  code: string;
}

export const isNfsetError = (e: unknown): e is NfsetError => e instanceof Error && typeof (e as Partial<NfsetError>).errno === 'number';

export const DEFAULT_ADDON = fileURLToPath(new URL('../../native/nfset/build/Release/nfset.node', import.meta.url));

const FIX = 'run `npm run setup` (scripts/setup.sh installs libnftnl-dev, libmnl-dev, pkg-config and a C compiler, then builds it with node-gyp)';

const loaded = new Map<string, NfsetAddon | Error>();

/** Loads the addon once per path; throws an Error that names the fix if it cannot. */
export function loadNfset(path = DEFAULT_ADDON): NfsetAddon {
  let a = loaded.get(path);
  if (!a) {
    try {
      a = createRequire(import.meta.url)(path) as NfsetAddon;
    } catch (e) {
      a = new Error(`netlink counter path unavailable: cannot load ${path} (${(e as Error).message.split('\n')[0]}); ${FIX}`);
    }
    loaded.set(path, a);
  }
  if (a instanceof Error) throw a;
  return a;
}
