import { diag } from '../util/diag.js';
import type { ElementStore } from './element-store.js';
import type { Kernel } from './kernel.js';
import { NetlinkStore } from './netlink-store.js';
import { NftStore } from './nft-store.js';
import type { TableFamily } from './nft-ruleset.js';

export type ElementPath = 'auto' | 'netlink' | 'nft';

/**
 * The element store an engine uses: netlink unless told otherwise; with `auto`, a missing or
 * unloadable addon falls back to nft with one warning that carries the fix; `netlink` throws it.
 */
export function openElementStore(want: ElementPath, table: string, kernel: Kernel, netns?: string, addonPath?: string, family: TableFamily = 'inet'): ElementStore {
  if (want !== 'nft') {
    try {
      return new NetlinkStore(table, netns, addonPath, family);
    } catch (e) {
      if (want === 'netlink') throw e;
      diag.warn('counting through the nft program instead of netlink (slower)', { error: (e as Error).message });
    }
  }
  return new NftStore(kernel, table, family);
}
