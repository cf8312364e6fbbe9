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
 * As a browser's proxy: `--forward` makes it an HTTP forward proxy with
 * `CONNECT` (see `lib/forward.ts`): each request says where it goes, so
 * `curl -x http://127.0.0.1:8080 http://example.test/` and a browser started
 * with `--proxy-server=http://127.0.0.1:8080` both work.
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

import {
  CliError,
  type HostPort,
  parseCli,
  parseHostPort,
  parseSeconds,
  runMain,
  UsageError,
} from "./lib/cli.ts";
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
import { checkForwardPolicy, type ForwardHandlerOptions, isLoopback } from "./lib/forward.ts";
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
    // Offline, the lab's default upstream cannot work: say what to do instead.
    const hint = formatAddr(target) === formatAddr(DEFAULT_UPSTREAM)
      ? " (offline? start a local web server and give --upstream 127.0.0.1:PORT)"
      : "";
    log(
      `${who}: no relay, ${(err as Error).message}; closed the client after ${
        elapsedMs(started)
      }${hint}`,
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
  /** Be an HTTP forward proxy (each request names its host) instead of a relay. @default {false} */
  forward?: boolean;
  /** Forward mode: `--allow` patterns of hosts it may connect to; empty allows any. @default {[]} */
  allow?: string[];
  /** Forward mode: listen on a non-loopback address with no `allow` list anyway. @default {false} */
  open?: boolean;
}

/**
 * Whether a relay to `upstream` would reach the server bound at `bound`:
 * the same port, and an address that is (or may be) ours. Such a proxy
 * connects to itself for every client, without end.
 *
 * @example
 * ```ts
 * import { isSelfUpstream } from "./proxy_server.ts";
 * isSelfUpstream({ hostname: "localhost", port: 8080 }, { transport: "tcp", hostname: "0.0.0.0", port: 8080 }); // true
 * ```
 */
export function isSelfUpstream(upstream: HostPort, bound: Deno.NetAddr): boolean {
  if (upstream.port !== bound.port) return false;
  const host = upstream.hostname.toLowerCase();
  const anyAddress = bound.hostname === "0.0.0.0" || bound.hostname === "::";
  const unspecified = host === "0.0.0.0" || host === "::";
  if (host === bound.hostname.toLowerCase() || unspecified) return true;
  // "localhost" is 127.0.0.1 or ::1; 127.0.0.2 is only us when we listen on every address.
  if (host === "localhost") return anyAddress || isLoopback(bound.hostname);
  if (!anyAddress) return false;
  if (isLoopback(host)) return true;
  // Listening on every address: any of this machine's own addresses is us too (when we may ask).
  if (Deno.permissions.querySync({ name: "sys", kind: "networkInterfaces" }).state !== "granted") {
    return false;
  }
  return Deno.networkInterfaces().some((i) => i.address.toLowerCase() === host);
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
  const forward = options.forward ?? false;
  if (forward) checkForwardPolicy(hostname, options.allow ?? [], options.open ?? false);

  // The server half: socket(), bind() and listen() in one call.
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname, port, transport: "tcp" });
  } catch (err) {
    throw explainListenError(err, hostname, port);
  }
  if (!forward && isSelfUpstream(upstream, listener.addr)) {
    listener.close();
    throw new CliError(
      `--upstream ${formatAddr(upstream)} is this proxy itself: every client would make it ` +
        `connect to itself again, without end; give the web server's address`,
    );
  }
  if (forward) {
    // Each request says where it goes: the forward handler, loaded by URL in every mode.
    return serve(listener, {
      module: new URL("./lib/forward.ts", import.meta.url).href,
      name: "forwardHandler",
    }, {
      handlerOptions: {
        connectTimeoutSeconds: options.connectTimeoutSeconds ?? 10,
        idleTimeoutSeconds: options.idleTimeoutSeconds ?? 60,
        quiet: options.quiet ?? false,
        allow: options.allow ?? [],
        // A name no other proxy has: a request that comes back with it in Via went round a loop.
        via: `lab-proxy-${crypto.randomUUID().slice(0, 8)}`,
      } satisfies ForwardHandlerOptions,
      mode: options.mode,
      poolSize: options.poolSize,
      maxConns: options.maxConns,
      whenFull: options.whenFull,
      log: options.log,
    });
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
    whenFull: options.whenFull,
    log: options.log,
  });
}

const USAGE = `usage: deno run --allow-net proxy_server.ts [options]
  --upstream HOST:PORT   server to relay every client to (default www.google.com:80)
  --connect-timeout S    seconds allowed to reach the upstream (default 10)
  --idle-timeout S       close both sides after S seconds without traffic (default 60)
  --forward              be an HTTP forward proxy instead (curl -x, a browser's proxy setting):
                         each request names its host, CONNECT opens tunnels (HTTPS); not with
                         --upstream
  --allow PATTERN        with --forward, connect only to matching targets; repeat for more.
                         PATTERN: example.test (that host), *.example.test (its subdomains),
                         * (any host), each with an optional :PORT; [::1]:8000 for IPv6.
                         Without --allow any host is allowed, and only a loopback --host may be
                         used: an open proxy on 0.0.0.0 lets anyone who reaches this machine
                         browse, attack and send spam in its name, and reach hosts behind its
                         firewall (127.0.0.1, the local network)
  --open                 with --forward and no --allow, listen on a non-loopback --host anyway
${serverUsage(8080)}`;

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, USAGE, {
    ...serverFlags(8080),
    upstream: { type: "string" },
    "connect-timeout": { type: "string", default: "10" },
    "idle-timeout": { type: "string", default: "60" },
    forward: { type: "boolean", default: false },
    allow: { type: "string", multiple: true },
    open: { type: "boolean", default: false },
  });
  const forward = values.forward as boolean;
  const allow = (values.allow ?? []) as unknown as string[];
  if (forward && values.upstream !== undefined) {
    throw new UsageError(
      "--forward and --upstream do not go together: a forward proxy's clients name the host in each request",
    );
  }
  if (!forward && (allow.length > 0 || values.open)) {
    throw new UsageError(`${allow.length > 0 ? "--allow" : "--open"} only applies with --forward`);
  }
  const upstream = values.upstream === undefined
    ? DEFAULT_UPSTREAM
    : parseHostPort(values.upstream as string, "--upstream", 80);
  const server = await startProxyServer({
    ...readServerFlags(values),
    upstream,
    forward,
    allow,
    open: values.open as boolean,
    connectTimeoutSeconds: parseSeconds(values["connect-timeout"] as string, "--connect-timeout"),
    idleTimeoutSeconds: parseSeconds(values["idle-timeout"] as string, "--idle-timeout"),
  });
  if (forward) {
    const allowed = allow.length > 0 ? `only to ${allow.join(", ")}` : "to any host";
    announceServer(server, "proxy server", `, forwarding HTTP and CONNECT ${allowed}`);
    if (!values.quiet) {
      console.log(`try: curl -x http://${formatAddr(server.addr)} http://127.0.0.1:8000/`);
    }
    return;
  }
  announceServer(server, "proxy server", `, relaying to ${formatAddr(upstream)}`);
  if (!values.quiet) {
    console.log(`try: deno run --allow-net proxy_client.ts --proxy ${formatAddr(server.addr)}`);
  }
}

if (import.meta.main) runMain(USAGE, main);
