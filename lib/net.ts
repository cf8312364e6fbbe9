/**
 * Socket plumbing shared by every script: the {@linkcode Connection} shape a
 * handler sees, `writeAll()`, the one-direction `copy()` that a relay is made
 * of, `connectTo()` and `listenOn()` with one-line errors, and address
 * formatting.
 *
 * Everything here reads with `conn.read()` loops and never touches
 * `conn.readable`: when that stream ends Deno closes the whole socket
 * (deno#27510), which would drop a reply still to be written after the peer
 * half-closed.
 *
 * @example
 * ```ts
 * import { connectTo, writeAll } from "./net.ts";
 * const conn = await connectTo("127.0.0.1", 8001, 5);
 * await writeAll(conn, new TextEncoder().encode("Foobar\n"));
 * await conn.closeWrite();
 * ```
 * @module
 */

import { CliError } from "./cli.ts";

/** Closes a connection or file that may be closed already (by the peer's reset, say). */
export function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch {
    // Closed already: nothing left to release.
  }
}

/**
 * Joins byte arrays into one.
 *
 * @example
 * ```ts
 * concatBytes([Uint8Array.of(1), Uint8Array.of(2, 3)]); // Uint8Array [1, 2, 3]
 * ```
 */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Bytes asked for per `read()`: 64 KiB measured fastest here on loopback. */
export const READ_BUFFER_BYTES = 64 * 1024;

/**
 * What a connection handler may do with its connection. A `Deno.TcpConn`
 * satisfies it directly; in the worker and process modes the handler gets a
 * stand-in with the same behaviour (see `concurrency.ts`).
 */
export interface Connection {
  /** Reads into `p`; resolves to the byte count, or `null` once the peer has finished sending. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes some of `p`; resolves to how many bytes were taken. */
  write(p: Uint8Array): Promise<number>;
  /** Half-close: tells the peer we are done sending; reading still works. */
  closeWrite(): Promise<void>;
  /** Closes both directions. */
  close(): void;
  /** The peer's address. */
  readonly remoteAddr: Deno.Addr;
  /** Our end's address. */
  readonly localAddr: Deno.Addr;
}

/** Anything with `write()` as `Deno.Conn` has it. */
export interface Writer {
  write(p: Uint8Array): Promise<number>;
}

/** Anything with `read()` as `Deno.Conn` has it. */
export interface Reader {
  read(p: Uint8Array): Promise<number | null>;
}

/** Writes every byte of `data`: `write()` may take fewer than asked. */
export async function writeAll(w: Writer, data: Uint8Array): Promise<void> {
  let written = 0;
  while (written < data.length) {
    written += await w.write(data.subarray(written));
  }
}

/** Options for {@linkcode copy}. */
export interface CopyOptions {
  /** Bytes per read. @default {READ_BUFFER_BYTES} */
  bufferBytes?: number;
  /** Sees each chunk after it was written (for previews and counters). */
  onChunk?: (chunk: Uint8Array) => void;
}

/**
 * Copies `src` to `dst` until `src` ends; returns the byte count. A plain
 * read/write loop: it never reads again before the last chunk was written,
 * so a slow `dst` slows `src` down (backpressure) and memory stays at one
 * buffer.
 */
export async function copy(
  src: Reader,
  dst: Writer,
  options: CopyOptions = {},
): Promise<number> {
  const buffer = new Uint8Array(options.bufferBytes ?? READ_BUFFER_BYTES);
  let total = 0;
  while (true) {
    const n = await src.read(buffer);
    if (n === null) return total;
    const chunk = buffer.subarray(0, n);
    await writeAll(dst, chunk);
    total += n;
    options.onChunk?.(chunk);
  }
}

/**
 * Formats an address as a student writes it: `127.0.0.1:8001`,
 * `[::1]:8001`.
 */
export function formatAddr(addr: Deno.Addr | HostPortLike): string {
  if ("hostname" in addr) {
    const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
    return `${host}:${addr.port}`;
  }
  return "path" in addr ? String(addr.path) : String(addr);
}

interface HostPortLike {
  hostname: string;
  port: number;
}

/**
 * Explains a failed `Deno.connect()` in one line a student can act on.
 */
export function describeConnectError(
  err: unknown,
  hostname: string,
  port: number,
): string {
  const where = formatAddr({ hostname, port });
  if (err instanceof Deno.errors.ConnectionRefused) {
    return `connection to ${where} refused: nothing is listening there`;
  }
  if (err instanceof Deno.errors.TimedOut) {
    return `connection to ${where} timed out`;
  }
  if (err instanceof Deno.errors.NotCapable) {
    return `no permission to connect to ${where}: run with --allow-net`;
  }
  const message = err instanceof Error ? err.message : String(err);
  if (/lookup address|Name or service|nodename|No address/i.test(message)) {
    return `cannot resolve host "${hostname}" (no DNS or no network here?)`;
  }
  if (/unreachable/i.test(message)) {
    return `cannot reach ${where}: network unreachable`;
  }
  return `cannot connect to ${where}: ${message.split("\n")[0]}`;
}

/**
 * Runs `connect` (a `Deno.connect()` call, given the signal) with a time
 * limit. Failures become a {@linkcode CliError} whose message names the host
 * and says what went wrong in plain words.
 *
 * @example
 * ```ts
 * import { connectWithin } from "./net.ts";
 * const target = { hostname: "127.0.0.1", port: 8000 };
 * const conn = await connectWithin(target, 10, (signal) => Deno.connect({ ...target, signal }));
 * conn.close();
 * ```
 */
export async function connectWithin(
  target: { hostname: string; port: number },
  timeoutSeconds: number,
  connect: (signal: AbortSignal) => Promise<Deno.TcpConn>,
): Promise<Deno.TcpConn> {
  const abort = new AbortController();
  const timer = setTimeout(
    () => abort.abort(new Deno.errors.TimedOut("connect timed out")),
    timeoutSeconds * 1000,
  );
  try {
    return await connect(abort.signal);
  } catch (err) {
    const reason = abort.signal.aborted
      ? `connection to ${formatAddr(target)} timed out after ${timeoutSeconds} s`
      : describeConnectError(err, target.hostname, target.port);
    throw new CliError(reason);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Connects with a time limit ({@linkcode connectWithin}), with TCP_NODELAY on.
 */
export async function connectTo(
  hostname: string,
  port: number,
  timeoutSeconds: number,
): Promise<Deno.TcpConn> {
  const conn = await connectWithin(
    { hostname, port },
    timeoutSeconds,
    (signal) => Deno.connect({ hostname, port, signal }),
  );
  // As on accepted connections: no Nagle delay for small writes (see lib/concurrency.ts).
  conn.setNoDelay(true);
  return conn;
}

/** Options for {@linkcode listenOn}. */
export interface ListenOptions {
  /** Address to bind. @default {"127.0.0.1"} */
  hostname?: string;
  /** Port to bind; 0 picks a free one. @default {0} */
  port?: number;
  /** Pending connections the kernel may queue before refusing. @default {511} */
  backlog?: number;
}

/**
 * Explains a failed `Deno.listen()` in one line: a port in use, an address
 * this host does not have, a privileged port, a missing permission.
 *
 * @example
 * ```ts
 * import { explainListenError } from "./net.ts";
 * try {
 *   Deno.listen({ hostname: "127.0.0.1", port: 8001 });
 * } catch (err) {
 *   console.error(explainListenError(err, "127.0.0.1", 8001).message);
 * }
 * ```
 */
export function explainListenError(err: unknown, hostname: string, port: number): CliError {
  const where = formatAddr({ hostname, port });
  if (err instanceof Deno.errors.AddrInUse) {
    return new CliError(`port ${port} is already in use on ${hostname} (another server running?)`);
  }
  if (err instanceof Deno.errors.AddrNotAvailable) {
    return new CliError(`cannot listen on ${where}: this machine has no such address`);
  }
  if (err instanceof Deno.errors.PermissionDenied) {
    return new CliError(`cannot listen on ${where}: ports below 1024 need root`);
  }
  if (err instanceof Deno.errors.NotCapable) {
    return new CliError(`no permission to listen on ${where}: run with --allow-net`);
  }
  return new CliError(`cannot listen on ${where}: ${(err as Error).message}`);
}

/**
 * `Deno.listen()` with one-line errors ({@linkcode explainListenError}).
 */
export function listenOn(options: ListenOptions = {}): Deno.TcpListener {
  const hostname = options.hostname ?? "127.0.0.1";
  const port = options.port ?? 0;
  try {
    return Deno.listen({
      hostname,
      port,
      transport: "tcp",
      tcpBacklog: options.backlog ?? 511,
    });
  } catch (err) {
    throw explainListenError(err, hostname, port);
  }
}
