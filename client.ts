#!/usr/bin/env -S deno run --allow-net
/**
 * A TCP client that asks a web server for a page: connect, send an HTTP GET,
 * half-close, then print every byte that comes back until the server closes.
 *
 * Run it: `deno run --allow-net client.ts` (www.google.com:80, needs internet).
 * Offline: `deno task lab` starts a local web server; or point it anywhere
 * with `--host 127.0.0.1 --port 8000`. Talk to the echo server:
 * `deno run --allow-net client.ts --port 8001 --host 127.0.0.1 --message "Foobar"`.
 *
 * Lab 2 step answered: "client" (connect to www.google.com and print what it
 * sends back). Details of the connection go to stderr, the reply to stdout,
 * so `client.ts > page.html` saves exactly the bytes received.
 *
 * @module
 */

import {
  CliError,
  parseCli,
  parseHost,
  parseHttpPath,
  parseSeconds,
  parseTargetPort,
  runMain,
} from "./lib/cli.ts";
import { elapsedMs, formatBytes } from "./lib/log.ts";
import { connectWithin, formatAddr, READ_BUFFER_BYTES, writeAll, type Writer } from "./lib/net.ts";

/** The lab's default server. */
const DEFAULT_HOST = "www.google.com";

/** Options for {@linkcode fetchPage}. */
export interface FetchOptions {
  /** Server to connect to. @default {"www.google.com"} */
  hostname?: string;
  /** Its port. @default {80} */
  port?: number;
  /** Path to GET. @default {"/"} */
  path?: string;
  /** Bytes to send instead of the GET request, as is. @default {undefined} */
  message?: Uint8Array;
  /** Seconds allowed to connect, and of silence while waiting for the reply. @default {10} */
  timeoutSeconds?: number;
  /** Where the reply's bytes go. @default {Deno.stdout} */
  output?: Writer;
  /** Where the connection's details go. @default {console.error} */
  info?: (line: string) => void;
}

/** What happened on the connection. */
export interface FetchResult {
  /** Bytes we sent. */
  sent: number;
  /** Bytes the server sent back. */
  received: number;
  /** The server's address as connected (after name resolution). */
  remote: Deno.NetAddr;
  /** Our end's address. */
  local: Deno.NetAddr;
}

/**
 * Builds the request the lab's client sends: an HTTP/1.0 GET, which asks the
 * server to close the connection after its reply. An IPv6 address goes in
 * brackets in the `Host:` header (RFC 9110), with or without a port.
 *
 * @example
 * ```ts
 * import { buildGetRequest } from "./client.ts";
 * buildGetRequest("www.google.com", 80, "/"); // "GET / HTTP/1.0\r\nHost: www.google.com\r\nConnection: close\r\n\r\n"
 * buildGetRequest("::1", 8000, "/"); // "...Host: [::1]:8000..."
 * ```
 */
export function buildGetRequest(hostname: string, port: number, path: string): string {
  // "::1:8000" could not be told apart from an address; "[::1]:8000" can.
  const name = hostname.includes(":") && !hostname.startsWith("[") ? `[${hostname}]` : hostname;
  const host = port === 80 ? name : `${name}:${port}`;
  return `GET ${path} HTTP/1.0\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;
}

/**
 * Connects, sends the request (or `message`), half-closes, and copies the
 * reply to `output` until the server closes its side.
 *
 * @example
 * ```ts
 * import { fetchPage } from "./client.ts";
 * const result = await fetchPage({ hostname: "127.0.0.1", port: 8000 });
 * console.error(`${result.received} bytes`);
 * ```
 */
export async function fetchPage(options: FetchOptions = {}): Promise<FetchResult> {
  const hostname = options.hostname ?? DEFAULT_HOST;
  const port = options.port ?? 80;
  const timeout = options.timeoutSeconds ?? 10;

  // Steps 1-3 of the lab: create a socket and connect (Deno does both in one call).
  // connectWithin() gives up on a server that does not answer within the timeout.
  const conn = await connectWithin(
    { hostname, port },
    timeout,
    (signal) => Deno.connect({ hostname, port, transport: "tcp", signal }),
  );
  const request = options.message ??
    new TextEncoder().encode(buildGetRequest(hostname, port, options.path ?? "/"));
  return await sendAndReceive(conn, request, { ...options, hostname });
}

/**
 * The rest of the lab's client on a connected socket: send `request`,
 * half-close, and copy the reply to `output` until the server closes its
 * side; then close the socket. `proxy_client.ts` runs it on its connection
 * to the proxy.
 *
 * @example
 * ```ts
 * import { sendAndReceive } from "./client.ts";
 * const conn = await Deno.connect({ hostname: "127.0.0.1", port: 8001 });
 * await sendAndReceive(conn, new TextEncoder().encode("Foobar\n"));
 * ```
 */
export async function sendAndReceive(
  conn: Deno.TcpConn,
  request: Uint8Array,
  options: Pick<FetchOptions, "hostname" | "timeoutSeconds" | "output" | "info"> = {},
): Promise<FetchResult> {
  const timeout = options.timeoutSeconds ?? 10;
  const output = options.output ?? Deno.stdout;
  const info = options.info ?? ((line: string) => console.error(line));
  const started = performance.now();
  try {
    // Send small writes at once: Deno leaves Nagle's algorithm on by default.
    conn.setNoDelay(true);
    const remote = conn.remoteAddr;
    const local = conn.localAddr;
    if (options.hostname !== undefined && remote.hostname !== options.hostname) {
      info(`resolved ${options.hostname} to ${remote.hostname}`);
    }
    info(`connected from ${formatAddr(local)} to ${formatAddr(remote)}`);

    // Send the request, then half-close: "I am done sending", the server's cue.
    await writeAll(conn, request);
    await conn.closeWrite();

    // Read until read() returns null: the server has closed its side.
    const buffer = new Uint8Array(READ_BUFFER_BYTES);
    let received = 0;
    while (true) {
      const n = await readWithin(conn, buffer, timeout, formatAddr(remote));
      if (n === null) break;
      await writeAll(output, buffer.subarray(0, n));
      received += n;
    }
    info(
      `sent ${formatBytes(request.length)}, received ${formatBytes(received)} in ${
        elapsedMs(started)
      }; the server closed the connection`,
    );
    return { sent: request.length, received, remote, local };
  } finally {
    conn.close();
  }
}

// One read, abandoned (and the socket closed) after `seconds` of silence.
async function readWithin(
  conn: Deno.Conn,
  buffer: Uint8Array,
  seconds: number,
  who: string,
): Promise<number | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const silence = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new CliError(`no data from ${who} for ${seconds} s: giving up (--timeout)`)),
      seconds * 1000,
    );
  });
  try {
    return await Promise.race([conn.read(buffer), silence]);
  } finally {
    clearTimeout(timer);
  }
}

const USAGE = `usage: deno run --allow-net client.ts [options]
  --host NAME       web server to ask (default ${DEFAULT_HOST})
  --port N          its port (default 80)
  --path PATH       page to GET (default /)
  --message TEXT    send TEXT as is instead of a GET (e.g. to the echo server)
  --timeout S       seconds to connect and of silence before giving up (default 10)
The reply goes to stdout byte for byte; connection details go to stderr.`;

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, USAGE, {
    host: { type: "string", default: DEFAULT_HOST },
    port: { type: "string", default: "80" },
    path: { type: "string", default: "/" },
    message: { type: "string" },
    timeout: { type: "string", default: "10" },
  });
  const hostname = parseHost(values.host as string, "--host");
  const path = parseHttpPath(values.path as string, "--path");
  try {
    await fetchPage({
      hostname,
      port: parseTargetPort(values.port as string, "--port"),
      path,
      message: values.message === undefined
        ? undefined
        : new TextEncoder().encode(values.message as string),
      timeoutSeconds: parseSeconds(values.timeout as string, "--timeout"),
    });
  } catch (err) {
    if (err instanceof CliError && hostname === DEFAULT_HOST) {
      throw new CliError(
        `${err.message}; offline? try a local server: --host 127.0.0.1 --port PORT (deno task lab starts one)`,
      );
    }
    throw err;
  }
}

if (import.meta.main) runMain(USAGE, main);
