/**
 * Test plumbing shared by every test file: run a script as a student runs
 * it, wait for its "listening on" line, talk to servers over real sockets,
 * hash what came back, and count open file descriptors.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { closeQuietly, concatBytes, listenOn, READ_BUFFER_BYTES, writeAll } from "../lib/net.ts";

export {
  haveCommand,
  projectPath,
  ROOT,
  runScript,
  type Script,
  startScript,
} from "../lib/scripts.ts";

/** SHA-256 of some bytes, as hex. */
export function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** `n` pseudo-random bytes (fast, not for secrets), the same for the same seed. */
export function randomBytes(n: number, seed = 1): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  const words = new Uint32Array(out.buffer, 0, Math.floor(n / 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  for (let i = words.length * 4; i < n; i++) out[i] = i & 0xff;
  return out;
}

/** What {@linkcode exchange} got back. */
export interface Exchange {
  /** Every byte received until the server closed its side. */
  received: Uint8Array;
  /** SHA-256 of `received`. */
  sha256: string;
}

/**
 * Connects, sends `data` while reading concurrently, half-closes, and reads
 * until the server ends its side. Hashes as it goes when `keep` is false, so
 * 64 MiB need not be held twice.
 */
export async function exchange(
  port: number,
  data: Uint8Array,
  options: { keep?: boolean; hostname?: string } = {},
): Promise<Exchange & { bytes: number }> {
  const conn = await Deno.connect({ hostname: options.hostname ?? "127.0.0.1", port });
  try {
    const sending = (async () => {
      for (let at = 0; at < data.length; at += 1024 * 1024) {
        await writeAll(conn, data.subarray(at, at + 1024 * 1024));
      }
      await conn.closeWrite();
    })();
    const hash = createHash("sha256");
    const kept: Uint8Array[] = [];
    const buffer = new Uint8Array(READ_BUFFER_BYTES);
    let bytes = 0;
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      hash.update(buffer.subarray(0, n));
      if (options.keep !== false) kept.push(buffer.slice(0, n));
      bytes += n;
    }
    await sending;
    return { received: concat(kept), sha256: hash.digest("hex"), bytes };
  } finally {
    conn.close();
  }
}

/** Joins byte arrays (the one in `lib/net.ts`). */
export const concat = concatBytes;

/** Reads a connection to its end. */
export async function readAll(conn: Deno.Conn): Promise<Uint8Array<ArrayBuffer>> {
  const parts: Uint8Array[] = [];
  const buffer = new Uint8Array(READ_BUFFER_BYTES);
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) return concat(parts);
    parts.push(buffer.slice(0, n));
  }
}

/** Open file descriptors of a process (Linux). */
export function countFds(pid: number): number {
  let n = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
  return n;
}

/** Resident memory of a process in bytes (Linux). */
export function rssBytes(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return kb * 1024;
}

/** Process ids of a process's direct children (Linux), e.g. a server's pool in process mode. */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
    const text = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/children`).trim();
    if (text) out.push(...text.split(/\s+/).map(Number));
  }
  return out;
}

/**
 * Polls `condition` every 20 ms until it holds; fails after `timeoutMs`
 * with `what` (and `explain()`, when given, for the state seen last).
 */
export async function waitUntil(
  condition: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
  explain?: () => string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${explain ? "\n" + explain() : ""}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Resolves like `promise`, or rejects once `ms` have passed. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Open file descriptors of a process and its direct children together (Linux). */
export function treeFds(pid: number): number {
  return [pid, ...childrenOf(pid)].reduce((sum, p) => sum + countFds(p), 0);
}

/**
 * Serves 300 connections, 25 at a time, through `connectOnce`, and checks
 * that the server's file descriptors (its children's included) after the
 * last 200 are no more than after the first 100, once the closes in flight
 * have landed (up to 5 s): nothing leaks per connection.
 */
export async function assertFdsLevelOff(
  pid: number,
  connectOnce: () => Promise<void>,
): Promise<void> {
  const round = async (count: number) => {
    for (let i = 0; i < count; i += 25) {
      await Promise.all(Array.from({ length: 25 }, connectOnce));
    }
  };
  await round(100);
  await new Promise((resolve) => setTimeout(resolve, 200));
  const after100 = treeFds(pid);
  await round(200);
  // Closes finish asynchronously (in process mode through a child and a message back): on a
  // loaded machine the last ones can still be under way, so wait up to 5 s for them to land.
  let after300 = treeFds(pid);
  for (let waited = 0; after300 > after100 + 4 && waited < 5000; waited += 100) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    after300 = treeFds(pid);
  }
  if (after300 > after100 + 4) {
    throw new Error(`file descriptors grew from ${after100} to ${after300} over 200 connections`);
  }
}

/** A raw TCP origin started by {@linkcode startRawOrigin}. */
export interface RawOrigin extends AsyncDisposable {
  port: number;
  /** Resolves with the result of `serve` for the n-th connection (0-based). */
  served(n: number): Promise<unknown>;
}

/**
 * A raw TCP origin on 127.0.0.1 for the proxy tests: runs `serve` on each
 * connection it accepts (with the connection's 0-based index), and closes
 * them all at the end.
 */
export function startRawOrigin(
  serve: (conn: Deno.TcpConn, index: number) => Promise<unknown>,
): RawOrigin {
  const listener = listenOn();
  const conns = new Set<Deno.TcpConn>();
  const results: Promise<unknown>[] = [];
  const waiting: ((result: Promise<unknown>) => void)[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      // Connections stay open until the end of the test: closing one whose reply is still
      // queued in the kernel could turn into a reset under memory pressure, and lose its tail.
      conns.add(conn);
      const result = serve(conn, results.length);
      result.catch(() => {});
      results.push(result);
      waiting.shift()?.(result);
    }
  })().catch(() => {});
  return {
    port: listener.addr.port,
    served: (n) =>
      n < results.length
        ? results[n]
        : new Promise<Promise<unknown>>((resolve) => waiting.push(resolve)).then((r) => r),
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      for (const conn of conns) closeQuietly(conn);
      await Promise.allSettled(results);
    },
  };
}
