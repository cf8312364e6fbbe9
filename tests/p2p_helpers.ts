/**
 * Test plumbing for the P2P tests: temp folders, files with a given mtime,
 * a folder's state (names, sizes, mtimes, hashes), waiting for folders to
 * converge, and starting the tracker and peers as a student runs them.
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { Mode } from "../lib/concurrency.ts";
import { peerPermissions } from "../p2p/peer.ts";
import { type Script, startScript, waitUntil } from "./helpers.ts";
import { STATE_DIR } from "../p2p/sync_state.ts";

/** The one `waitUntil` of the tests (`tests/helpers.ts`), for tests that import it from here. */
export { waitUntil };

export const MIB = 1024 * 1024;

/** A temp folder that `await using` removes with everything in it. */
export interface TempFolder extends AsyncDisposable {
  /** Its real path. */
  readonly path: string;
}

/** Makes an empty temp folder. */
export async function tempFolder(prefix = "p2p_test_"): Promise<TempFolder> {
  const path = await Deno.realPath(await Deno.makeTempDir({ prefix }));
  return {
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }).catch(() => {}),
  };
}

/** Writes a file and sets its mtime (whole seconds). */
export async function putFile(
  dir: string,
  name: string,
  bytes: Uint8Array,
  mtimeSeconds: number,
): Promise<void> {
  const path = `${dir}/${name}`;
  await Deno.writeFile(path, bytes);
  const when = new Date(mtimeSeconds * 1000);
  await Deno.utime(path, when, when);
}

/** One file as a folder holds it. */
export interface Seen {
  size: number;
  /** Whole seconds. */
  mtime: number;
  sha256: string;
}

/**
 * Every entry of a folder, hidden ones and temp files included (so a test
 * sees leftovers): files with size, mtime and SHA-256, anything else as `null`.
 */
export async function folderState(dir: string): Promise<Record<string, Seen | null>> {
  const state: Record<string, Seen | null> = {};
  for await (const entry of Deno.readDir(dir)) {
    // The peer's own memory of the folder, not a shared file.
    if (entry.name === STATE_DIR) continue;
    if (!entry.isFile) {
      state[entry.name] = null;
      continue;
    }
    const path = `${dir}/${entry.name}`;
    try {
      const info = await Deno.stat(path);
      using file = await Deno.open(path);
      const hash = createHash("sha256");
      const buffer = new Uint8Array(MIB);
      while (true) {
        const n = await file.read(buffer);
        if (n === null) break;
        hash.update(buffer.subarray(0, n));
      }
      state[entry.name] = {
        size: info.size,
        mtime: Math.floor(info.mtime!.getTime() / 1000),
        sha256: hash.digest("hex"),
      };
    } catch (err) {
      // Renamed or removed while we looked: a download in progress.
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  return state;
}

/** A folder state as text with its names in order, to compare states whatever their key order. */
export function canonical(state: Record<string, Seen | null>): string {
  return JSON.stringify(Object.entries(state).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** Names in a folder (cheap; for polling). */
export function namesIn(dir: string): string[] {
  // The peer's state folder is its own memory, not a file it shares or a leftover.
  return [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n !== STATE_DIR).sort();
}

/** Resolves when every folder holds the same files (same names, bytes and mtimes). */
export async function waitForSameFolders(
  dirs: string[],
  timeoutMs: number,
  scripts: Script[] = [],
): Promise<Record<string, Seen | null>> {
  let last: Record<string, Seen | null>[] = [];
  await waitUntil(
    async () => {
      last = await Promise.all(dirs.map(folderState));
      const first = canonical(last[0]);
      return last.every((s) => canonical(s) === first);
    },
    timeoutMs,
    "the folders to converge",
    () =>
      last.map((s, i) => `${dirs[i]}: ${JSON.stringify(s)}`).join("\n") + "\n" +
      scripts.map((s) => s.lines.join("\n")).join("\n---\n"),
  );
  return last[0];
}

/** Starts `p2p/tracker.ts` on loopback (port 0 unless given), status page on any port. */
export function startTrackerScript(args: string[] = [], port = 0): Promise<Script> {
  return startScript("p2p/tracker.ts", ["--port", String(port), "--http-port", "0", ...args]);
}

/** Starts `p2p/peer.ts` sharing `dir`, with the permissions its `--mode` needs. */
export function startPeerScript(
  dir: string,
  trackerPort: number,
  options: { mode?: Mode; interval?: number; args?: string[] } = {},
): Promise<Script> {
  const mode = options.mode ?? "async";
  const permissions = peerPermissions(dir, mode);
  return startScript(
    "p2p/peer.ts",
    [
      "127.0.0.1",
      String(trackerPort),
      "--dir",
      dir,
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      "--interval",
      String(options.interval ?? 0.3),
      "--mode",
      mode,
      "--workers",
      "2",
      ...(options.args ?? []),
    ],
    { permissions },
  );
}

/** Peak resident memory of a live process in bytes (Linux VmHWM). */
export function peakRssBytes(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) * 1024;
}

export { freePort } from "../lib/scripts.ts";
