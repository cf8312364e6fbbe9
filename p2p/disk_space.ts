/**
 * Room for a download: how many bytes the device under the shared folder
 * still has for this user, so a peer can refuse a file that cannot fit
 * before it asks a holder for a single byte.
 *
 * It uses `statfs` from `node:fs/promises`, which Deno allows only with
 * `--allow-sys=statfs` (and read access to the folder). Without that
 * permission the answer is "unknown" and the peer relies on the write
 * error instead (`LocalDiskError` in `files.ts`); nothing is asked or shown.
 *
 * @example
 * ```ts
 * import { freeBytes } from "./disk_space.ts";
 * const free = await freeBytes("/tmp"); // a number, or null without --allow-sys=statfs
 * ```
 * @module
 */

import { statfs } from "node:fs/promises";

/**
 * Bytes kept free beyond a download's own size: the file system rounds a
 * file up to whole blocks and needs room for its own records. Small, so a
 * small disk still takes the files that fit.
 */
export const SPACE_MARGIN_BYTES = 64 * 1024; // bytes

/**
 * Bytes free for an unprivileged user on the device holding `dir`, or
 * `null` when that cannot be known: the `sys` permission for `statfs` was
 * not granted, or the call failed.
 *
 * @example
 * ```ts
 * import { freeBytes } from "./disk_space.ts";
 * const free = await freeBytes(".");
 * if (free !== null) console.log(`${free} bytes free`);
 * ```
 */
export async function freeBytes(dir: string): Promise<number | null> {
  // query() never prompts: a peer run without the permission just skips the check.
  const permission = Deno.permissions.querySync({ name: "sys", kind: "statfs" });
  if (permission.state !== "granted") return null;
  try {
    const info = await statfs(dir);
    // `bavail` counts in fragment-size units; Deno reports `frsize`, Node only `bsize`.
    const unit = (info as { frsize?: number }).frsize || info.bsize;
    return Number(info.bavail) * Number(unit);
  } catch {
    return null;
  }
}

/**
 * Whether a file of `size` bytes fits in `free` bytes with
 * {@linkcode SPACE_MARGIN_BYTES} to spare.
 *
 * @example
 * ```ts
 * import { fits, SPACE_MARGIN_BYTES } from "./disk_space.ts";
 * fits(10, 10 + SPACE_MARGIN_BYTES); // true
 * fits(10, 10); // false
 * ```
 */
export function fits(size: number, free: number): boolean {
  return size + SPACE_MARGIN_BYTES <= free;
}
