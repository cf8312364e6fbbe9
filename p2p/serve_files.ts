/**
 * The peer's step 1 (handout 002, peer to peer): bind the file-serving port
 * and answer each request, a file name and `\n`, with `Content-Length: N\n`
 * and the bytes. Unlike the course's peer it streams (constant memory) and
 * refuses any name that is not a plain shared file inside the folder: a
 * relative path (extension "paths") is served with the same checks as the
 * listing makes (no `..`, nothing hidden, no symlinked folder on the way, no
 * symlink leading out, nothing the ignore rules of `.p2pignore` leave out).
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
import { type Connection, formatAddr, listenOn, writeAll } from "../lib/net.ts";
import {
  IdleWriter,
  MAX_REQUEST_BYTES,
  openSharedFile,
  RefusedError,
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
 * Serves one file request: reads the name (one line, a relative path of at
 * most 4096 bytes), and if it is a plain shared file in the folder, answers
 * `Content-Length: N\n` and streams exactly N bytes, one buffer at a time.
 * Anything else closes the connection with a log line and no reply.
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
  const say: Log = options.quiet ? silentLog : log;
  const who = formatAddr(conn.remoteAddr);
  const started = performance.now();
  // A client that never sends its request must not hold the connection.
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    conn.close();
  }, (options.requestTimeoutSeconds ?? REQUEST_TIMEOUT_SECONDS) * 1000);
  let name: string | null;
  try {
    name = await new LineReader(conn, MAX_REQUEST_BYTES).readLine();
  } catch (err) {
    log(
      `refused ${who}: ${
        timedOut
          ? `no request within ${options.requestTimeoutSeconds ?? REQUEST_TIMEOUT_SECONDS} s`
          : err instanceof LineTooLongError
          ? `request longer than ${MAX_REQUEST_BYTES} bytes`
          : errorMessage(err)
      }`,
    );
    return;
  } finally {
    clearTimeout(timer);
  }
  if (name === null) {
    say(`${who} closed the connection without asking for a file`);
    return;
  }
  const shown = preview(new TextEncoder().encode(name));
  let opened;
  try {
    // The rules as they are now: a file the user has just ignored is no longer served.
    let ignore = ignoreFiles.get(options.dir);
    if (!ignore) ignoreFiles.set(options.dir, ignore = new IgnoreFile(options.dir));
    opened = await openSharedFile(options.dir, name, (await ignore.read()).rules);
  } catch (err) {
    if (!(err instanceof RefusedError)) throw err;
    log(`refused ${who}'s request for ${shown}: ${err.message}`);
    return;
  }
  const { file, info } = opened;
  // A client that stops reading must not hold the connection: each write that completes re-arms this.
  const sendTimeout = options.sendTimeoutSeconds ?? SEND_TIMEOUT_SECONDS;
  const out = new IdleWriter(conn, sendTimeout * 1000);
  let sent = 0;
  try {
    await writeAll(out, new TextEncoder().encode(`Content-Length: ${info.size}\n`));
    // Stream exactly the announced length: one buffer in memory, whatever the size.
    const buffer = new Uint8Array(Math.max(1, Math.min(TRANSFER_BUFFER_BYTES, info.size)));
    while (sent < info.size) {
      const n = await file.read(buffer.subarray(0, Math.min(buffer.length, info.size - sent)));
      if (n === null) break;
      await writeAll(out, buffer.subarray(0, n));
      sent += n;
    }
    if (sent < info.size) {
      log(`${shown} shrank while being sent to ${who}: closing after ${sent} of ${info.size} B`);
      return;
    }
    await conn.closeWrite();
    await lingerUntilClosed(conn);
    say(`sent ${shown} (${formatBytes(sent)}) to ${who} in ${elapsedMs(started)}`);
  } catch (err) {
    if (!out.timedOut) throw err;
    log(
      `closed ${who}: it read nothing for ${sendTimeout} s (${sent} of ${info.size} B of ${shown} sent)`,
    );
  } finally {
    file.close();
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
