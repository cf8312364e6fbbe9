/**
 * Test plumbing for the P2P tests: temp folders, files with a given mtime,
 * a folder's state (names, sizes, mtimes, hashes), waiting for folders to
 * converge, starting the tracker and peers as a student runs them, and
 * stand-ins for a tracker and a holder that a test controls line by line.
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { Mode } from "../lib/concurrency.ts";
import { LineReader } from "../lib/lines.ts";
import { writeAll } from "../lib/net.ts";
import { peerPermissions } from "../p2p/peer.ts";
import { type Directory, encodeLine } from "../p2p/protocol.ts";
import { concat, readAll, type Script, sha256, startScript, waitUntil } from "./helpers.ts";
import { startCommand } from "../lib/scripts.ts";
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

/**
 * Every file under `dir` and its subfolders, by relative path with `/`: size,
 * mtime and SHA-256. The peer's state folder is left out; temp files are in
 * (so a test sees leftovers).
 */
export async function folderTree(dir: string, under = ""): Promise<Record<string, Seen>> {
  const out: Record<string, Seen> = {};
  for await (const entry of Deno.readDir(under === "" ? dir : `${dir}/${under}`)) {
    const path = under === "" ? entry.name : `${under}/${entry.name}`;
    if (path === STATE_DIR) continue;
    if (entry.isDirectory) {
      Object.assign(out, await folderTree(dir, path));
    } else if (entry.isFile) {
      try {
        const bytes = await Deno.readFile(`${dir}/${path}`);
        const info = await Deno.stat(`${dir}/${path}`);
        out[path] = {
          size: bytes.length,
          mtime: Math.floor(info.mtime!.getTime() / 1000),
          sha256: sha256(bytes),
        };
      } catch (err) {
        // Renamed or removed while we looked: a download in progress.
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    }
  }
  return out;
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

/** The course-style Python peer (standard library only) that the interoperability tests run. */
export const PYTHON_PEER = new URL("./fixtures/python_peer.py", import.meta.url);

/**
 * Starts the course-style Python peer ({@linkcode PYTHON_PEER}) sharing
 * `dir`, its code copied into `dir` as `peer.py` first: as in the course,
 * a peer's own code lives in its folder and is not shared. With
 * `directoryLog`, it appends every directory line it gets to that file
 * (which must lie outside `dir`, or the peer would share it).
 */
export async function startPythonPeer(
  dir: string,
  trackerPort: number,
  options: { interval?: number; directoryLog?: string } = {},
): Promise<Script> {
  await Deno.copyFile(PYTHON_PEER, `${dir}/peer.py`);
  return startCommand(
    "python3",
    [
      `${dir}/peer.py`,
      "127.0.0.1",
      String(trackerPort),
      dir,
      String(options.interval ?? 0.3),
      ...(options.directoryLog === undefined ? [] : [options.directoryLog]),
    ],
    { label: "peer.py" },
  );
}

const encoder = new TextEncoder();

/** Closes a connection that may be closed already (by the test, the peer or a sweep). */
function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Closed already.
  }
}

/** A tracker stand-in on loopback, started by {@linkcode fakeTracker}. */
export interface FakeTracker extends AsyncDisposable {
  /** The port it listens on (127.0.0.1). */
  readonly port: number;
  /** Every message it got, parsed, one list per connection in the order they were accepted. */
  readonly messages: Record<string, unknown>[][];
  /** Drops every peer connection, as a restarting tracker would. */
  dropAll(): void;
  /** Stops listening, closes every connection and waits for their handlers. */
  close(): Promise<void>;
}

/**
 * Starts a tracker stand-in that records every message and answers each
 * one with `reply()`: a directory (sent as our tracker encodes it) or a raw
 * line (sent as it is, with a newline: a course tracker's text, or garbage).
 *
 * @example
 * ```ts
 * import { fakeTracker } from "./p2p_helpers.ts";
 * await using tracker = fakeTracker(() => ({}));
 * console.log(`point a peer at 127.0.0.1:${tracker.port}`);
 * ```
 */
export function fakeTracker(reply: () => Directory | string): FakeTracker {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const messages: Record<string, unknown>[][] = [];
  const conns = new Set<Deno.Conn>();
  const served = new Set<Promise<void>>();
  const serve = async (conn: Deno.Conn) => {
    const mine: Record<string, unknown>[] = [];
    messages.push(mine);
    // Our tracker's limit on a message line.
    const lines = new LineReader(conn, MIB);
    try {
      while (true) {
        const line = await lines.readLine();
        if (line === null) break;
        mine.push(JSON.parse(line));
        const answer = reply();
        await writeAll(
          conn,
          typeof answer === "string" ? encoder.encode(answer + "\n") : encodeLine(answer),
        );
      }
    } catch {
      // Closed by the test or by the peer.
    } finally {
      conns.delete(conn);
      closeQuietly(conn);
    }
  };
  const accepting = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      const job = serve(conn).finally(() => served.delete(job));
      served.add(job);
    }
  })();
  const close = async () => {
    listener.close();
    await accepting;
    for (const conn of conns) closeQuietly(conn);
    await Promise.allSettled([...served]);
  };
  return {
    port: (listener.addr as Deno.NetAddr).port,
    messages,
    dropAll() {
      for (const conn of conns) closeQuietly(conn);
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** How a {@linkcode fakeHolder} answers one request: anything it likes on `conn`. */
export type HolderResponse = (name: string, conn: Deno.Conn) => Promise<void>;

/** A holder stand-in on loopback, started by {@linkcode fakeHolder}. */
export interface FakeHolder extends AsyncDisposable {
  /** The port it listens on (127.0.0.1). */
  readonly port: number;
  /** Every request line (the name asked for), in order. */
  readonly requests: string[];
  /** When each request came (`performance.now()`, ms), in the same order. */
  readonly times: number[];
  /** Stops listening and waits for the requests in progress. */
  close(): Promise<void>;
}

/** What a holder sends for a file: `Content-Length: N\n` and then its N bytes. */
export function holderReply(content: Uint8Array): Uint8Array {
  return concat([encoder.encode(`Content-Length: ${content.length}\n`), content]);
}

/**
 * Starts a holder stand-in: it reads one request line per connection and
 * answers from `files` as a peer does (a name it does not hold gets
 * `Content-Length: 0`), or lets `files` (a {@linkcode HolderResponse}) send
 * anything, a broken transfer included. Then it half-closes and waits for
 * the downloader to hang up, so nothing in flight is reset.
 *
 * @example
 * ```ts
 * import { fakeHolder } from "./p2p_helpers.ts";
 * await using holder = fakeHolder(new Map([["a.txt", new TextEncoder().encode("hello\n")]]));
 * console.log(`a.txt is held at 127.0.0.1:${holder.port}`);
 * ```
 */
export function fakeHolder(files: Map<string, Uint8Array> | HolderResponse): FakeHolder {
  const respond: HolderResponse = typeof files === "function"
    ? files
    : (name, conn) => writeAll(conn, holderReply(files.get(name) ?? new Uint8Array()));
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const requests: string[] = [];
  const times: number[] = [];
  const served = new Set<Promise<void>>();
  const serve = async (conn: Deno.Conn) => {
    try {
      // Room for a request of the longest path (4096 bytes) and more, so the peer's limit decides.
      const name = await new LineReader(conn, 8192).readLine();
      if (name === null) return;
      requests.push(name);
      times.push(performance.now());
      await respond(name, conn);
      await conn.closeWrite();
      await readAll(conn);
    } catch {
      // The downloader went away (or gave up: some tests are about that).
    } finally {
      closeQuietly(conn);
    }
  };
  const accepting = (async () => {
    for await (const conn of listener) {
      const job = serve(conn).finally(() => served.delete(job));
      served.add(job);
    }
  })();
  const close = async () => {
    listener.close();
    await accepting;
    await Promise.allSettled([...served]);
  };
  return {
    port: (listener.addr as Deno.NetAddr).port,
    requests,
    times,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** Peak resident memory of a live process in bytes (Linux VmHWM). */
export function peakRssBytes(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) * 1024;
}

export { freePort } from "../lib/scripts.ts";
