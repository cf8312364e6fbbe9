#!/usr/bin/env -S deno run --allow-net
/**
 * A TCP proxy: each client that connects gets its own connection to one
 * fixed upstream server (www.google.com:80 by default), and every byte is
 * relayed both ways until both sides have finished, half-closes included.
 *
 * Run it: `deno run --allow-net proxy_server.ts` (port 8080, like the lab).
 * Try it: `deno run --allow-net proxy_client.ts`, or
 * `curl http://127.0.0.1:8080/ -H "Host: www.google.com"`. Offline, point it
 * at a local web server: `--upstream 127.0.0.1:8000`.
 * Many clients at once: `--mode async` (default), `--mode worker` (add
 * `--allow-read=.`) or `--mode process` (add `--allow-read=. --allow-run`).
 *
 * Lab 2 steps answered: "proxy server" and "make the proxy forking" (the
 * modes). Unlike a single `recv(1024)`, it copies until the end of the data,
 * so no page is cut short.
 *
 * The socket core: {@linkcode startProxyServer} calls `Deno.listen()` and
 * hands the listener to `serve()`, which accepts each client and runs
 * {@linkcode proxyHandler} on it: `Deno.connect()` to the upstream (in
 * `connectTo()`), then two copy loops, one per direction.
 *
 * @module
 */

import { type HostPort, parseCli, parseHostPort, parseSeconds, runMain } from "./lib/cli.ts";
import {
  type ConnectionServer,
  type HandlerContext,
  serve,
  type ServerOptions,
} from "./lib/concurrency.ts";
import { elapsedMs, formatBytes, preview } from "./lib/log.ts";
import {
  closeQuietly,
  type Connection,
  connectTo,
  explainListenError,
  formatAddr,
} from "./lib/net.ts";
import { relay } from "./lib/relay.ts";
import { announceServer, readServerFlags, serverFlags, serverUsage } from "./lib/server_cli.ts";

/** The lab's upstream server. */
export const DEFAULT_UPSTREAM: HostPort = { hostname: "www.google.com", port: 80 };

/** What the proxy handler needs to know; the same in every mode, and JSON-safe. */
export interface ProxyHandlerOptions {
  /** The server every client is relayed to. */
  upstream: HostPort;
  /** Seconds allowed to connect to the upstream. */
  connectTimeoutSeconds: number;
  /** Seconds with no traffic either way before both sides are closed; 0 never. */
  idleTimeoutSeconds: number;
  /** Log only failures to reach the upstream: no per-connection lines. */
  quiet: boolean;
}

/**
 * Serves one client: connects to the upstream, then relays both ways until
 * both have finished sending. Logs who connected, where to, a preview of the
 * request, the bytes each way, how long it took and why it ended. If the
 * upstream cannot be reached, says why in one line and closes the client.
 *
 * @example
 * ```ts
 * import { proxyHandler } from "./proxy_server.ts";
 * const listener = Deno.listen({ port: 0 });
 * const client = await listener.accept();
 * await proxyHandler(client, {
 *   options: {
 *     upstream: { hostname: "127.0.0.1", port: 8000 },
 *     connectTimeoutSeconds: 10,
 *     idleTimeoutSeconds: 60,
 *     quiet: false,
 *   },
 *   log: console.log,
 * });
 * ```
 */
export async function proxyHandler(
  client: Connection,
  { options, log }: HandlerContext<ProxyHandlerOptions>,
): Promise<void> {
  const { upstream: target, quiet } = options;
  const who = formatAddr(client.remoteAddr);
  const started = performance.now();
  let upstream: Deno.TcpConn;
  try {
    // The client's bytes wait in the kernel while we connect.
    upstream = await connectTo(target.hostname, target.port, options.connectTimeoutSeconds);
  } catch (err) {
    client.close();
    log(
      `${who}: no relay, ${(err as Error).message}; closed the client after ${elapsedMs(started)}`,
    );
    return;
  }
  try {
    // Name the upstream as given, and where it resolved to when that differs.
    const resolved = formatAddr(upstream.remoteAddr);
    const there = resolved === formatAddr(target)
      ? resolved
      : `${formatAddr(target)} (${resolved})`;
    if (!quiet) log(`Connected by ${who}, relaying to ${there}`);
    let previewed = false;
    const result = await relay(client, upstream, {
      names: ["client", "upstream"],
      idleTimeoutSeconds: options.idleTimeoutSeconds,
      // Only the first chunk is shown: enough to see which page was asked for.
      onForward: quiet ? undefined : (chunk) => {
        if (previewed) return;
        previewed = true;
        log(`${who} request: ${preview(chunk)}`);
      },
    });
    if (!quiet) {
      log(
        `Closed ${who} <-> ${there} (${result.reason}): ${
          formatBytes(result.forwarded)
        } to upstream, ${formatBytes(result.returned)} back, in ${elapsedMs(started)}`,
      );
    }
  } finally {
    closeQuietly(client);
    closeQuietly(upstream);
  }
}

/** Options for {@linkcode startProxyServer}. */
export interface ProxyServerOptions extends ServerOptions {
  /** The server every client is relayed to. @default {{ hostname: "www.google.com", port: 80 }} */
  upstream?: HostPort;
  /** Seconds allowed to connect to the upstream. @default {10} */
  connectTimeoutSeconds?: number;
  /** Seconds with no traffic either way before both sides are closed; 0 never. @default {60} */
  idleTimeoutSeconds?: number;
}

/**
 * Starts a proxy server and resolves once it accepts connections.
 *
 * @example
 * ```ts
 * import { startProxyServer } from "./proxy_server.ts";
 * await using proxy = await startProxyServer({
 *   upstream: { hostname: "127.0.0.1", port: 8000 },
 *   quiet: true,
 * });
 * console.log(`proxying on port ${proxy.addr.port}`);
 * ```
 */
export function startProxyServer(options: ProxyServerOptions = {}): Promise<ConnectionServer> {
  const hostname = options.hostname ?? "127.0.0.1";
  const port = options.port ?? 0;
  const upstream = options.upstream ?? DEFAULT_UPSTREAM;

  // The server half: socket(), bind() and listen() in one call.
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname, port, transport: "tcp" });
  } catch (err) {
    throw explainListenError(err, hostname, port);
  }

  // Accept each client and run proxyHandler on it (the client half: it connects upstream and
  // relays), inline or in a Worker or child process, depending on the mode.
  return serve(listener, { module: import.meta.url, name: "proxyHandler" }, {
    handlerOptions: {
      upstream: { hostname: upstream.hostname, port: upstream.port },
      connectTimeoutSeconds: options.connectTimeoutSeconds ?? 10,
      idleTimeoutSeconds: options.idleTimeoutSeconds ?? 60,
      quiet: options.quiet ?? false,
    } satisfies ProxyHandlerOptions,
    mode: options.mode,
    poolSize: options.poolSize,
    maxConns: options.maxConns,
    log: options.log,
  });
}

const USAGE = `usage: deno run --allow-net proxy_server.ts [options]
  --upstream HOST:PORT   server to relay every client to (default www.google.com:80)
  --connect-timeout S    seconds allowed to reach the upstream (default 10)
  --idle-timeout S       close both sides after S seconds without traffic (default 60)
${serverUsage(8080)}`;

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, USAGE, {
    ...serverFlags(8080),
    upstream: { type: "string", default: formatAddr(DEFAULT_UPSTREAM) },
    "connect-timeout": { type: "string", default: "10" },
    "idle-timeout": { type: "string", default: "60" },
  });
  const upstream = parseHostPort(values.upstream as string, "--upstream", 80);
  const server = await startProxyServer({
    ...readServerFlags(values),
    upstream,
    connectTimeoutSeconds: parseSeconds(values["connect-timeout"] as string, "--connect-timeout"),
    idleTimeoutSeconds: parseSeconds(values["idle-timeout"] as string, "--idle-timeout"),
  });
  announceServer(server, "proxy server", `, relaying to ${formatAddr(upstream)}`);
  if (!values.quiet) {
    console.log(`try: deno run --allow-net proxy_client.ts --proxy ${formatAddr(server.addr)}`);
  }
}

if (import.meta.main) runMain(USAGE, main);
