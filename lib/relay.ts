/**
 * A two-way relay between two connections, as a proxy needs it: every byte
 * is copied both ways until both directions have ended, a half-close on one
 * side is passed on to the other, and a relay with no traffic for a while is
 * closed. The two directions are two small named copy functions built on
 * `copy()` from `net.ts`, so each reads again only after the last chunk was
 * written: a side that stops reading slows the other down instead of filling
 * memory.
 *
 * @example
 * ```ts
 * import { relay } from "./relay.ts";
 * const listener = Deno.listen({ port: 8080 });
 * const client = await listener.accept();
 * const upstream = await Deno.connect({ hostname: "127.0.0.1", port: 8000 });
 * const result = await relay(client, upstream, { names: ["client", "upstream"] });
 * console.log(`${result.forwarded} B up, ${result.returned} B back: ${result.reason}`);
 * client.close();
 * upstream.close();
 * ```
 * @module
 */

import { closeQuietly, type Connection, copy, type Reader, type Writer } from "./net.ts";

/** Options for {@linkcode relay}. */
export interface RelayOptions {
  /** How the two ends are called in {@linkcode RelayResult.reason}. @default {["a", "b"]} */
  names?: [string, string];
  /** Seconds with no byte moving in either direction before both sides are closed; 0 never. @default {0} */
  idleTimeoutSeconds?: number;
  /** Sees each chunk that went from the first end to the second, after it was written. */
  onForward?: (chunk: Uint8Array) => void;
  /** Sees each chunk that went from the second end back to the first, after it was written. */
  onReturn?: (chunk: Uint8Array) => void;
}

/** How a relay ended. */
export interface RelayResult {
  /** Bytes copied from the first end to the second. */
  forwarded: number;
  /** Bytes copied from the second end back to the first. */
  returned: number;
  /** Why it ended, in words: `"client finished first, then upstream"`, `"upstream reset the connection"`, ... */
  reason: string;
  /** True when both directions ended with an orderly end of data, false after an error or a timeout. */
  clean: boolean;
}

/** A failure on one named end, so the log can say whose fault it was. */
class EndError extends Error {
  constructor(readonly end: string, readonly op: "read" | "write", original: unknown) {
    super(describeEndError(end, original), { cause: original });
  }
}

/**
 * Relays between `a` and `b` until both directions have ended, then
 * resolves; it never throws. When one end finishes sending, the other's
 * write side is closed (`closeWrite()`) and the opposite direction keeps
 * flowing. A reset or error on either end closes both; so does the idle
 * timeout. The caller still owns both connections and closes them after.
 */
export async function relay(
  a: Connection,
  b: Connection,
  options: RelayOptions = {},
): Promise<RelayResult> {
  const [aName, bName] = options.names ?? ["a", "b"];
  const result: RelayResult = { forwarded: 0, returned: 0, reason: "", clean: false };
  const finished: string[] = []; // ends that finished sending, in order
  let failure: string | null = null;
  let lastActivity = performance.now();

  // Something broke: both sides are closed, which also ends the other direction's wait.
  const abort = (reason: string) => {
    failure ??= reason;
    closeQuietly(a);
    closeQuietly(b);
  };

  // First end to second: the request side of a proxy.
  async function forward(): Promise<void> {
    await copyHalf(a, aName, b, bName, (chunk) => {
      result.forwarded += chunk.length;
      lastActivity = performance.now();
      options.onForward?.(chunk);
    });
    finished.push(aName);
  }

  // Second end back to the first: the reply side of a proxy.
  async function giveBack(): Promise<void> {
    await copyHalf(b, bName, a, aName, (chunk) => {
      result.returned += chunk.length;
      lastActivity = performance.now();
      options.onReturn?.(chunk);
    });
    finished.push(bName);
  }

  // An end that fails a read or a write (reset, gone) is gone for both directions, so the
  // whole relay ends: the other direction may be blocked writing to a peer that stopped
  // reading, and would otherwise hold both connections until the idle timeout. Orderly
  // ends (half-closes) are not errors and keep the other direction flowing.
  const onError = (err: unknown) => abort(err instanceof Error ? err.message : String(err));

  const idleMs = (options.idleTimeoutSeconds ?? 0) * 1000;
  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  if (idleMs > 0) {
    // One timer per relay, re-armed for the remaining time instead of on every chunk.
    const check = () => {
      const quietMs = performance.now() - lastActivity;
      if (quietMs >= idleMs) {
        abort(`no traffic for ${options.idleTimeoutSeconds} s (idle timeout)`);
      } else idleTimer = setTimeout(check, idleMs - quietMs);
    };
    idleTimer = setTimeout(check, idleMs);
  }
  try {
    await Promise.all([forward().catch(onError), giveBack().catch(onError)]);
  } finally {
    clearTimeout(idleTimer);
  }
  result.clean = failure === null;
  result.reason = failure ?? `${finished[0]} finished first, then ${finished[1]}`;
  return result;
}

/**
 * Copies `src` to `dst` until `src` has finished sending, then half-closes
 * `dst` so it sees the end too. Errors are tagged with the end at fault.
 */
async function copyHalf(
  src: Connection,
  srcName: string,
  dst: Connection,
  dstName: string,
  onChunk: (chunk: Uint8Array) => void,
): Promise<void> {
  await copy(blameReads(src, srcName), blameWrites(dst, dstName), { onChunk });
  try {
    await dst.closeWrite();
  } catch (err) {
    throw new EndError(dstName, "write", err);
  }
}

function blameReads(conn: Connection, name: string): Reader {
  return {
    read: (p) =>
      conn.read(p).catch((err) => {
        throw new EndError(name, "read", err);
      }),
  };
}

function blameWrites(conn: Connection, name: string): Writer {
  return {
    write: (p) =>
      conn.write(p).catch((err) => {
        throw new EndError(name, "write", err);
      }),
  };
}

/** Says in words what happened to the connection called `end`. */
function describeEndError(end: string, err: unknown): string {
  if (err instanceof Deno.errors.ConnectionReset) return `${end} reset the connection`;
  if (err instanceof Deno.errors.BrokenPipe || err instanceof Deno.errors.NotConnected) {
    return `${end} went away (broken pipe)`;
  }
  if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) {
    return `${end} connection was closed by the server`;
  }
  return `${end} failed: ${err instanceof Error ? err.message : String(err)}`;
}
