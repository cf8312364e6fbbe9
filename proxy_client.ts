#!/usr/bin/env -S deno run --allow-net
/**
 * A client for the proxy server: it connects to the proxy (not to the web
 * server), sends an HTTP GET meant for `--host`, half-closes, and prints
 * every byte of the reply that the proxy relays back.
 *
 * Run it: `deno run --allow-net proxy_client.ts` (proxy on 127.0.0.1:8080,
 * started with `deno run --allow-net proxy_server.ts`).
 * Many clients at once: `--count 10` prints one summary line per client and
 * a total instead of the pages.
 *
 * With `--forward` it speaks to `proxy_server.ts --forward` as a browser
 * does: the request names the whole URL (`GET http://host:port/path`), so the
 * proxy knows where to go: `proxy_client.ts --forward --host 127.0.0.1:8000`.
 *
 * Lab 2 step answered: "proxy client" (and running several at the same time
 * against the forking proxy). The reply goes to stdout byte for byte, the
 * summary to stderr, so `proxy_client.ts > page.html` saves the page.
 *
 * The socket core: `Deno.connect()` to the proxy, then the lab client's own
 * `sendAndReceive()` (in `client.ts`): `write()` the GET, `closeWrite()`,
 * `read()` until `null`. Only the address differs, which is the point of a
 * proxy: to its client it is just another server.
 *
 * @module
 */

import { buildGetRequest, sendAndReceive } from "./client.ts";
import {
  CliError,
  errorMessage,
  type HostPort,
  parseCli,
  parseCount,
  parseHost,
  parseHostPort,
  parseHttpPath,
  parseSeconds,
  runMain,
} from "./lib/cli.ts";
import { elapsedMs, formatBytes, preview } from "./lib/log.ts";
import { connectWithin, formatAddr, writeAll, type Writer } from "./lib/net.ts";

/** Where the lab's proxy listens. */
const DEFAULT_PROXY: HostPort = { hostname: "127.0.0.1", port: 8080 };
/** Seconds allowed to connect to the proxy, and of silence while waiting for the reply. */
const DEFAULT_TIMEOUT_SECONDS = 10;
/** Bytes of the reply searched for its first line. */
const STATUS_LINE_BYTES = 256;

/** Options for {@linkcode fetchThroughProxy}. */
export interface ProxyFetchOptions {
  /** The proxy to connect to. @default {{ hostname: "127.0.0.1", port: 8080 }} */
  proxy?: HostPort;
  /** The web server the request is meant for (its `Host:` header). @default {"www.google.com"} */
  host?: string;
  /** Page to ask for. @default {"/"} */
  path?: string;
  /** Where the reply's bytes go; `null` only counts them. @default {Deno.stdout} */
  output?: Writer | null;
  /** Seconds allowed to connect, and of silence while waiting for the reply. @default {10} */
  timeoutSeconds?: number;
  /** Send the absolute form (`GET http://host:port/path`) a forward proxy needs. @default {false} */
  forward?: boolean;
  /** With `forward`: the web server's port. @default {80} */
  port?: number;
}

/**
 * The GET a browser sends to a forward proxy: the whole URL in the request
 * line (absolute form), so the proxy knows which server to ask. HTTP/1.0,
 * like the lab's client, so the reply arrives unchunked and ends with the
 * connection.
 *
 * @example
 * ```ts
 * import { buildForwardRequest } from "./proxy_client.ts";
 * buildForwardRequest("127.0.0.1", 8000, "/");
 * // "GET http://127.0.0.1:8000/ HTTP/1.0\r\nHost: 127.0.0.1:8000\r\nConnection: close\r\n\r\n"
 * ```
 */
export function buildForwardRequest(hostname: string, port: number, path: string): string {
  const name = hostname.includes(":") ? `[${hostname}]` : hostname;
  const host = port === 80 ? name : `${name}:${port}`;
  return `GET http://${host}${path} HTTP/1.0\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;
}

/** What came back through the proxy. */
export interface ProxyFetchResult {
  /** The reply's first line (`HTTP/1.0 200 OK`), or `(empty reply)`. */
  statusLine: string;
  /** Bytes received until the proxy closed its side. */
  bytes: number;
  /** Milliseconds from connecting to the end of the reply. */
  ms: number;
}

/**
 * Connects to the proxy, sends the GET, half-closes ("that is all I will
 * send"), and reads until the proxy closes its side.
 *
 * @example
 * ```ts
 * import { fetchThroughProxy } from "./proxy_client.ts";
 * const result = await fetchThroughProxy({ output: null });
 * console.log(`${result.statusLine}: ${result.bytes} bytes`);
 * ```
 */
export async function fetchThroughProxy(
  options: ProxyFetchOptions = {},
): Promise<ProxyFetchResult> {
  const proxy = options.proxy ?? DEFAULT_PROXY;
  const output = options.output === undefined ? Deno.stdout : options.output;
  const started = performance.now();
  // Keep the reply's first bytes for the status line while passing every byte on.
  const head = new Uint8Array(STATUS_LINE_BYTES);
  let headBytes = 0;
  const sink: Writer = {
    async write(chunk) {
      const take = Math.min(chunk.length, head.length - headBytes);
      if (take > 0) head.set(chunk.subarray(0, take), headBytes);
      headBytes += take;
      if (output) await writeAll(output, chunk);
      return chunk.length;
    },
  };
  // A relay passes our bytes on unchanged, so the request names the real web server; a
  // forward proxy reads the server from the URL in the request line.
  const request = options.forward
    ? buildForwardRequest(options.host ?? "www.google.com", options.port ?? 80, options.path ?? "/")
    : buildGetRequest(options.host ?? "www.google.com", 80, options.path ?? "/");
  const timeoutSeconds = options.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS;
  try {
    // Connect to the proxy, not to the web server: to its client the proxy is just a server.
    const conn = await connectWithin(
      proxy,
      timeoutSeconds,
      (signal) =>
        Deno.connect({ hostname: proxy.hostname, port: proxy.port, transport: "tcp", signal }),
    );
    const result = await sendAndReceive(conn, new TextEncoder().encode(request), {
      timeoutSeconds,
      output: sink,
      info: () => {},
    });
    return {
      statusLine: statusLine(head.subarray(0, headBytes)),
      bytes: result.received,
      ms: performance.now() - started,
    };
  } catch (err) {
    const message = errorMessage(err);
    const hint = /refused/.test(message) ? " (is proxy_server.ts running?)" : "";
    if (err instanceof CliError) throw new CliError(`${message}${hint}`);
    throw new CliError(`connection to ${formatAddr(proxy)} failed: ${message}`);
  }
}

/** The reply's first line, shown safely even when it is not text. */
function statusLine(head: Uint8Array): string {
  if (head.length === 0) return "(empty reply)";
  const end = head.indexOf(0x0a);
  const line = head.subarray(0, end === -1 ? head.length : end);
  const text = preview(line.at(-1) === 0x0d ? line.subarray(0, -1) : line, 80);
  // Plain text needs no quotes; escapes or a cut line keep them.
  return /^"[ -~]*"$/.test(text) && !text.includes("\\") ? text.slice(1, -1) : text;
}

const USAGE = `usage: deno run --allow-net proxy_client.ts [options]
  --proxy HOST:PORT   the proxy to connect to (default 127.0.0.1:8080)
  --host NAME         web server the GET is meant for, sent as its Host header (default www.google.com)
  --path PATH         page to GET (default /)
  --count N           run N clients at once (up to 10000), a summary line for each (default 1)
  --timeout S         seconds to connect and of silence before giving up (default 10)
  --forward           for proxy_server.ts --forward: send the whole URL (GET http://HOST/PATH),
                      as a browser does; --host may then carry a port: --host 127.0.0.1:8000
With --count 1 the reply goes to stdout byte for byte and a summary to stderr.`;

async function main(): Promise<number> {
  const { values } = parseCli(Deno.args, USAGE, {
    proxy: { type: "string", default: formatAddr(DEFAULT_PROXY) },
    host: { type: "string", default: "www.google.com" },
    path: { type: "string", default: "/" },
    count: { type: "string", default: "1" },
    timeout: { type: "string", default: String(DEFAULT_TIMEOUT_SECONDS) },
    forward: { type: "boolean", default: false },
  });
  const proxy = parseHostPort(values.proxy as string, "--proxy");
  const forward = values.forward as boolean;
  // An IPv6 address may come with or without brackets; buildGetRequest() puts them back in Host.
  // A forward proxy reads the port from the URL, so there --host may carry one.
  const target = forward
    ? parseHostPort(values.host as string, "--host", 80)
    : { hostname: parseHost(values.host as string, "--host", "the proxy's --upstream"), port: 80 };
  const host = target.hostname;
  const port = target.port;
  const path = parseHttpPath(values.path as string, "--path");
  const timeoutSeconds = parseSeconds(values.timeout as string, "--timeout");
  // Each client holds a socket, its promise and its buffers: far past this a typo runs the
  // machine out of file descriptors or memory rather than testing the proxy.
  const count = parseCount(values.count as string, "--count", 1, 10_000);

  if (count === 1) {
    const result = await fetchThroughProxy({ proxy, host, path, timeoutSeconds, forward, port });
    if (result.bytes === 0) {
      throw new CliError(
        `the proxy at ${
          formatAddr(proxy)
        } closed the connection without a reply (can it reach its upstream? see its log)`,
      );
    }
    console.error(
      `via ${formatAddr(proxy)}: ${result.statusLine}, ${formatBytes(result.bytes)} in ${
        result.ms.toFixed(1)
      } ms`,
    );
    return 0;
  }

  // N clients at once, as if N copies of the program ran side by side.
  const started = performance.now();
  let answered = 0;
  let received = 0;
  await Promise.all(Array.from({ length: count }, async (_, i) => {
    const name = `client ${String(i + 1).padStart(String(count).length)}`;
    try {
      const result = await fetchThroughProxy({
        proxy,
        host,
        path,
        timeoutSeconds,
        output: null,
        forward,
        port,
      });
      if (result.bytes > 0) answered++;
      received += result.bytes;
      console.log(
        `${name}: ${result.statusLine}, ${formatBytes(result.bytes)} in ${result.ms.toFixed(1)} ms`,
      );
    } catch (err) {
      console.log(`${name}: error: ${errorMessage(err)}`);
    }
  }));
  console.log(
    `total: ${answered} of ${count} clients got a reply, ${formatBytes(received)} in ${
      elapsedMs(started)
    }`,
  );
  return answered === count ? 0 : 1;
}

if (import.meta.main) runMain(USAGE, main);
