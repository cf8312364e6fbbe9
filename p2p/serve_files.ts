/**
 * The peer's step 1 (handout 002, peer to peer): bind the file-serving port
 * and answer each request, a file name and `\n`, with `Content-Length: N\n`
 * and the bytes. Unlike the course's peer it streams (constant memory) and
 * refuses any name that is not a plain shared file inside the folder: a
 * relative path (extension "paths") is served with the same checks as the
 * listing makes (no `..`, nothing hidden, no symlinked folder on the way, no
 * symlink leading out, nothing the ignore rules of `.p2pignore` leave out).
 * With the extensions "range" and "pipeline" a request is a JSON line that
 * may start at an offset, and many such requests share one connection,
 * answered in order (see `p2p/PROTOCOL.md`).
 *
 * {@linkcode fileRequestHandler} is the per-connection handler; it runs
 * inline, in a Web Worker or in a child process (`lib/concurrency.ts`
 * loads it by this module's URL), so this module has no side effects.
 *
 * @example
 * ```ts
 * import { listenFromPort, serveFiles } from "./serve_files.ts";
 * const listener = listenFromPort({ hostname: "127.0.0.1", port: 8000, portSearch: 1000 });
 * await using server = await serveFiles(listener, { dir: await Deno.realPath(".") });
 * console.log(`serving files on port ${server.addr.port}`);
 * ```
 * @module
 */

import { CliError, errorMessage } from "../lib/cli.ts";
import {
  type ConnectionServer,
  type HandlerContext,
  type Mode,
  serve,
} from "../lib/concurrency.ts";
import { LineReader, LineTooLongError } from "../lib/lines.ts";
import { elapsedMs, formatBytes, type Log, preview, printLog, silentLog } from "../lib/log.ts";
import { closeQuietly, type Connection, formatAddr, listenOn, writeAll } from "../lib/net.ts";
import {
  IdleWriter,
  MAX_REQUEST_BYTES,
  openSharedFile,
  RefusedError,
  SMALL_FILE_BYTES,
  TRANSFER_BUFFER_BYTES,
} from "./files.ts";
import { IgnoreFile } from "./ignore.ts";

/** Seconds a client may take to send its file request. */
const REQUEST_TIMEOUT_SECONDS = 10;
/** Seconds a client may read nothing of the file we send before we close its connection. */
const SEND_TIMEOUT_SECONDS = 30;
/** Seconds a served connection may stay open after the file, waiting for the client to close. */
const LINGER_SECONDS = 30;
/** Bytes a client may send after its request before we stop waiting for it to close. */
const LINGER_MAX_BYTES = 64 * 1024;
/**
 * Longest extended request line: a JSON object with a path of at most 4096
 * bytes (each `"` in it escaped to two) and an offset.
 */
const MAX_EXTENDED_REQUEST_BYTES = 2 * MAX_REQUEST_BYTES + 256; // bytes
/** Answers collected before they go out in one write: many small files per system call. */
const OUT_BUFFER_BYTES = 64 * 1024; // bytes

/** Each shared folder's `.p2pignore`, read again only when it changes (one per Worker or child). */
const ignoreFiles = new Map<string, IgnoreFile>();

/** What the file-request handler needs; the same in every mode. */
export interface FileHandlerOptions {
  /** The shared folder, as a real path (no symlinks in it). */
  dir: string;
  /** No line per served file (refusals are still logged). @default {false} */
  quiet?: boolean;
  /** Seconds a client may take to send its request. @default {10} */
  requestTimeoutSeconds?: number;
  /** Seconds a client may read nothing of the file before its connection is closed. @default {30} */
  sendTimeoutSeconds?: number;
}

/**
 * Serves one connection's file requests. A course request, a name and `\n`
 * (at most 4096 bytes of relative path), gets `Content-Length: N\n` and
 * exactly N bytes, one buffer at a time, and the connection ends, as in the
 * course; anything not servable closes the connection with a log line and
 * no reply.
 *
 * An extended request (extensions "range" and "pipeline", see
 * `p2p/PROTOCOL.md`) is one JSON line, `{"name": "a/b.txt", "offset": 4096}`:
 * it gets `Content-Length: N\n` with N the bytes from `offset` to the end,
 * then those bytes, or `Error: REASON\n` when it cannot be served; either
 * way the connection stays open for the next request, answered in order,
 * until the client closes its side or sends nothing for the request timeout.
 *
 * @example
 * ```ts
 * import { serveConnections } from "../lib/concurrency.ts";
 * await using server = await serveConnections({
 *   handler: { module: new URL("./serve_files.ts", import.meta.url).href, name: "fileRequestHandler" },
 *   handlerOptions: { dir: await Deno.realPath("share") },
 * });
 * ```
 */
export async function fileRequestHandler(
  conn: Connection,
  { options, log }: HandlerContext<FileHandlerOptions>,
): Promise<void> {
  const who = formatAddr(conn.remoteAddr);
  const requestTimeout = options.requestTimeoutSeconds ?? REQUEST_TIMEOUT_SECONDS;
  // A client that stops reading must not hold the connection: each write that completes re-arms this.
  const sendTimeout = options.sendTimeoutSeconds ?? SEND_TIMEOUT_SECONDS;
  const out = new BufferedWriter(new IdleWriter(conn, sendTimeout * 1000));
  // Answers wait in `out` while more requests are already here; they go out before we wait for more.
  const lines = new LineReader({
    read: async (p) => {
      await out.flush();
      return await conn.read(p);
    },
  }, MAX_EXTENDED_REQUEST_BYTES);
  const served = { requests: 0 };
  try {
    while (true) {
      // A client that never sends its (next) request must not hold the connection.
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        conn.close();
      }, requestTimeout * 1000);
      let line: string | null;
      try {
        line = await lines.readLine();
      } catch (err) {
        // After a pipelined request, a client that goes quiet or away is just done.
        if (served.requests > 0 && (timedOut || !(err instanceof LineTooLongError))) return;
        log(
          `refused ${who}: ${
            timedOut
              ? `no request within ${requestTimeout} s`
              : err instanceof LineTooLongError
              ? `request longer than ${MAX_REQUEST_BYTES} bytes`
              : errorMessage(err)
          }`,
        );
        return;
      } finally {
        clearTimeout(timer);
      }
      if (line === null) {
        if (served.requests === 0) {
          if (!options.quiet) log(`${who} closed the connection without asking for a file`);
        }
        return;
      }
      const request = parseRequest(line);
      if (request === null) {
        // The course's request: one file, then the connection ends.
        if (new TextEncoder().encode(line).length > MAX_REQUEST_BYTES) {
          log(`refused ${who}: request longer than ${MAX_REQUEST_BYTES} bytes`);
          return;
        }
        await serveOne(conn, out, { name: line, offset: 0 }, false, who, options, log);
        return;
      }
      served.requests++;
      if (!await serveOne(conn, out, request, true, who, options, log)) return;
    }
  } finally {
    await out.flush().catch(() => {});
  }
}

/** One request: the path, and where in the file to start ("range"). */
interface FileRequest {
  name: string;
  offset: number;
}

/**
 * An extended request line, `{"name": PATH, "offset": N}` (offset optional,
 * 0 by default), or `null` for anything else: a course request, the name
 * itself (a file really named like a JSON object is the one name a course
 * peer cannot ask us for).
 */
function parseRequest(line: string): FileRequest | null {
  if (!line.startsWith("{")) return null;
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return null;
  const { name, offset } = value as { name?: unknown; offset?: unknown };
  if (typeof name !== "string") return null;
  if (offset === undefined) return { name, offset: 0 };
  // A bad offset is answered with an error, not taken for a file name.
  return {
    name,
    offset: Number.isSafeInteger(offset) && (offset as number) >= 0 ? offset as number : -1,
  };
}

/**
 * Answers one request. A course request (`extended` false) gets the file and
 * then the end of the connection, or only the end when it cannot be served.
 * An extended one gets `Content-Length:` and the bytes from its offset, or
 * `Error: REASON`; resolves `true` when the connection can take the next
 * request.
 */
async function serveOne(
  conn: Connection,
  out: BufferedWriter,
  request: FileRequest,
  extended: boolean,
  who: string,
  options: FileHandlerOptions,
  log: Log,
): Promise<boolean> {
  const say: Log = options.quiet ? silentLog : log;
  const started = performance.now();
  const shown = preview(new TextEncoder().encode(request.name));
  const refuse = async (reason: string) => {
    log(`refused ${who}'s request for ${shown}: ${reason}`);
    if (!extended) return false;
    await out.write(new TextEncoder().encode(`Error: ${reason.replace(/[\r\n]/g, " ")}\n`));
    return true;
  };
  if (request.offset < 0) return await refuse("the offset must be a whole number of bytes");
  let opened;
  try {
    // The rules as they are now: a file the user has just ignored is no longer served.
    let ignore = ignoreFiles.get(options.dir);
    if (!ignore) ignoreFiles.set(options.dir, ignore = new IgnoreFile(options.dir));
    opened = await openSharedFile(options.dir, request.name, (await ignore.read()).rules);
  } catch (err) {
    if (!(err instanceof RefusedError)) throw err;
    return await refuse(err.message);
  }
  const { file, info } = opened;
  const sendTimeout = options.sendTimeoutSeconds ?? SEND_TIMEOUT_SECONDS;
  const { offset } = request;
  const total = info.size - offset;
  let sent = 0;
  try {
    if (total < 0) {
      file.close();
      return await refuse(`offset ${offset} is past the end (${info.size} B)`);
    }
    if (offset > 0) await file.seek(offset, Deno.SeekMode.Start);
    await out.write(new TextEncoder().encode(`Content-Length: ${total}\n`));
    // Stream exactly the announced length: one buffer in memory, whatever the size.
    const buffer = new Uint8Array(Math.max(1, Math.min(TRANSFER_BUFFER_BYTES, total)));
    // A small file's read only copies from the page cache: done here, it saves the round trip
    // to a worker thread that an async read costs (most of a small file's time).
    const small = total <= SMALL_FILE_BYTES;
    while (sent < total) {
      const piece = buffer.subarray(0, Math.min(buffer.length, total - sent));
      const n = small ? file.readSync(piece) : await file.read(piece);
      if (n === null) break;
      await out.write(buffer.subarray(0, n));
      sent += n;
    }
    const what = offset > 0 ? `${shown} from byte ${offset}` : shown;
    if (sent < total) {
      await out.flush();
      log(`${what} shrank while being sent to ${who}: closing after ${sent} of ${total} B`);
      return false;
    }
    if (!extended) {
      await out.flush();
      await conn.closeWrite();
      await lingerUntilClosed(conn);
    }
    say(`sent ${what} (${formatBytes(sent)}) to ${who} in ${elapsedMs(started)}`);
    return extended;
  } catch (err) {
    if (out.timedOut) {
      log(
        `closed ${who}: it read nothing for ${sendTimeout} s (${sent} of ${total} B of ${shown} sent)`,
      );
      return false;
    }
    // Counted in the log, so a resumed download can be checked against what was sent before.
    log(
      `stopped sending ${shown} to ${who} after ${formatBytes(out.written(sent))} of ${
        formatBytes(total)
      }: ${errorMessage(err)}`,
    );
    return false;
  } finally {
    closeQuietly(file);
  }
}

/**
 * Collects small writes (an answer's header, a small file, the next
 * answers of pipelined requests) into one buffer, so that many small files
 * go out in few system calls; big writes pass straight through. Call
 * `flush()` before waiting for the client.
 */
class BufferedWriter {
  #buffer = new Uint8Array(OUT_BUFFER_BYTES);
  #used = 0;

  constructor(readonly inner: IdleWriter) {}

  get timedOut(): boolean {
    return this.inner.timedOut;
  }

  /** Of `sent` bytes of a body given to `write()`, how many reached the kernel. */
  written(sent: number): number {
    return Math.max(0, sent - Math.min(this.#used, sent));
  }

  async write(p: Uint8Array): Promise<void> {
    if (this.#used + p.length > this.#buffer.length) await this.flush();
    if (p.length >= this.#buffer.length) {
      await writeAll(this.inner, p);
      return;
    }
    this.#buffer.set(p, this.#used);
    this.#used += p.length;
  }

  async flush(): Promise<void> {
    if (this.#used === 0) return;
    const pending = this.#buffer.subarray(0, this.#used);
    this.#used = 0;
    await writeAll(this.inner, pending);
  }
}

/**
 * Waits until the client has closed its side too (at most {@linkcode LINGER_SECONDS}).
 * Closing a socket whose last bytes are still in flight hands them to the
 * kernel, which resets such orphaned sockets when it runs short of memory:
 * the client would lose the end of the file.
 */
async function lingerUntilClosed(conn: Connection): Promise<void> {
  const timer = setTimeout(() => conn.close(), LINGER_SECONDS * 1000);
  try {
    const scratch = new Uint8Array(1024);
    for (let ignored = 0; ignored < LINGER_MAX_BYTES;) {
      const n = await conn.read(scratch);
      if (n === null) return;
      ignored += n;
    }
  } catch {
    // Reset by the client, or closed by the timer: either way we are done.
  } finally {
    clearTimeout(timer);
  }
}

/** Where to bind the file server, for {@linkcode listenFromPort}. */
export interface FilePortOptions {
  /** Address to bind. @default {"127.0.0.1"} */
  hostname?: string;
  /** Port to bind; 0 picks a free one. @default {0} */
  port?: number;
  /**
   * Ports to try from `port` upward, as the course's peer counts up from
   * 8000: a port in use moves on to the next one, any other error (an
   * address this machine lacks, no permission) is thrown at once. @default {1}
   */
  portSearch?: number;
}

/**
 * Binds the file-serving port: `options.port`, or the next port up while
 * ports are in use (`options.portSearch` of them). The real bind decides, so
 * two peers started at once never get the same port: the one that loses the
 * race moves on. A quick throwaway bind first skips ports that are plainly
 * taken.
 *
 * @example
 * ```ts
 * import { listenFromPort } from "./serve_files.ts";
 * const listener = listenFromPort({ port: 8000, portSearch: 1000 }); // 8000, else 8001, ...
 * listener.close();
 * ```
 * @throws {CliError} saying why no port could be bound.
 */
export function listenFromPort(options: FilePortOptions = {}): Deno.TcpListener {
  const hostname = options.hostname ?? "127.0.0.1";
  const first = options.port ?? 0;
  const last = first === 0 ? 0 : Math.min(first + Math.max(1, options.portSearch ?? 1) - 1, 65535);
  let port = first;
  while (port < last && portInUse(hostname, port)) port++;
  while (true) {
    try {
      return listenOn({ hostname, port });
    } catch (err) {
      // Only "in use" moves on; the error of the bind itself says what else went wrong.
      if (port === 0 || !portInUse(hostname, port)) throw err;
      if (port < last) {
        port++;
      } else if (last > first) {
        throw new CliError(`no free port from ${first} to ${last} on ${hostname}`);
      } else {
        throw err;
      }
    }
  }
}

/** Whether `port` is taken on `hostname` right now (any other failure is not "taken"). */
function portInUse(hostname: string, port: number): boolean {
  try {
    Deno.listen({ hostname, port }).close();
    return false;
  } catch (err) {
    return err instanceof Deno.errors.AddrInUse;
  }
}

/** Options for {@linkcode serveFiles}: the handler's, and where it runs. */
export interface ServeFilesOptions extends FileHandlerOptions {
  /** Where file requests are served. @default {"async"} */
  mode?: Mode;
  /** Workers or child processes kept warm (worker and process modes). @default {CPU count, at least 2} */
  poolSize?: number;
  /** Where lines go. @default {console.log} */
  log?: Log;
}

/**
 * Serves every connection `listener` accepts with {@linkcode fileRequestHandler},
 * in the chosen mode. From then on the server owns the listener.
 *
 * @example
 * ```ts
 * import { serveFiles } from "./serve_files.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * await using server = await serveFiles(listener, { dir: await Deno.realPath("."), mode: "worker" });
 * ```
 */
export function serveFiles(
  listener: Deno.TcpListener,
  options: ServeFilesOptions,
): Promise<ConnectionServer> {
  return serve<FileHandlerOptions>(
    listener,
    { module: import.meta.url, name: "fileRequestHandler" },
    {
      handlerOptions: {
        dir: options.dir,
        quiet: options.quiet ?? false,
        requestTimeoutSeconds: options.requestTimeoutSeconds,
        sendTimeoutSeconds: options.sendTimeoutSeconds,
      },
      mode: options.mode,
      poolSize: options.poolSize,
      log: options.log ?? printLog,
      // Child processes only read the shared folder; the parent keeps the sockets.
      childPermissions: [`--allow-read=${options.dir}`],
    },
  );
}
