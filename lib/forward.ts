/**
 * The proxy's forward mode: what a browser or `curl -x` expects of an HTTP
 * proxy. Each client says where it wants to go, in every request:
 *
 * - `GET http://host:port/path HTTP/1.1` (absolute form) or `GET /path` with
 *   a `Host` header: the proxy connects to that host, sends the request on in
 *   origin form without the hop-by-hop headers and with `Via` added, and
 *   streams the answer back. The client's connection stays open across
 *   requests to different hosts; each host keeps one upstream connection,
 *   reused while its answers are fully framed.
 * - `CONNECT host:port`: the proxy opens a TCP tunnel, answers
 *   `200 Connection established`, and from then on is the two-way relay of
 *   `relay.ts` (half-closes and backpressure included). HTTPS goes this way:
 *   the proxy never sees inside.
 *
 * Refusals are HTTP answers with one readable line: 400 malformed request,
 * 403 not in `--allow`, 502 target refused or unknown, 504 no answer within
 * the connect timeout, 508 a loop (our own `Via` came back). A client that
 * sends half a request and stalls gets 408 after the idle timeout. The log
 * has one line per request: client, method, target, status, bytes each way,
 * time.
 *
 * {@linkcode forwardHandler} is a connection handler like `proxyHandler`, so
 * `serve()` runs it in every mode; Workers and child processes load it from
 * this module by URL.
 *
 * @example
 * ```ts
 * import { forwardHandler } from "./forward.ts";
 * const listener = Deno.listen({ port: 0 });
 * const client = await listener.accept();
 * await forwardHandler(client, {
 *   options: { connectTimeoutSeconds: 10, idleTimeoutSeconds: 60, quiet: false, allow: [], via: "lab-proxy" },
 *   log: console.log,
 * });
 * ```
 * @module
 */

import { CliError, parseHostPort, UsageError } from "./cli.ts";
import type { HandlerContext } from "./handler.ts";
import {
  BodyCutError,
  type BodyOutput,
  copyBody,
  type Destination,
  encodeHead,
  type Framing,
  hasToken,
  type Header,
  headerList,
  HttpError,
  HttpReader,
  parseDestination,
  parseRequestHead,
  parseResponseHead,
  requestFraming,
  type RequestHead,
  responseFraming,
  type ResponseHead,
  serializeHead,
  withoutHopByHop,
} from "./http1.ts";
import type { Log } from "./log.ts";
import { elapsedMs, formatBytes } from "./log.ts";
import { closeQuietly, type Connection, connectTo, formatAddr, writeAll } from "./net.ts";
import { relay } from "./relay.ts";

/** What the forward handler needs to know; the same in every mode, and JSON-safe. */
export interface ForwardHandlerOptions {
  /** Seconds allowed to connect to a target. */
  connectTimeoutSeconds: number;
  /** Seconds with no byte moving on a client's connection (or its tunnel) before it is closed; 0 never. */
  idleTimeoutSeconds: number;
  /** Log only failed requests (5xx and cut replies). */
  quiet: boolean;
  /** `--allow` patterns ({@linkcode parseAllowPattern}); empty allows any host. */
  allow: string[];
  /** This proxy's name in `Via` headers; a request that already names it is a loop. */
  via: string;
}

/** Idle upstream connections one client may keep (one per host): past this the oldest goes. */
const MAX_IDLE_UPSTREAMS = 8;
/** Longest target shown in a log line, in characters. */
const LOG_TARGET_CHARS = 200;
/** After a reply, how long a client may take to finish a request body nobody will read. */
const LINGER_MS = 2000;
/** Bytes kept per client for the request heads it sends upstream (longer ones get their own). */
const UP_HEAD_BYTES = 4 * 1024;
/** Bytes kept per client for a reply's head and a small body, sent in one write. */
const DOWN_REPLY_BYTES = 16 * 1024;

const REASONS: Record<number, string> = {
  200: "Connection established",
  400: "Bad Request",
  403: "Forbidden",
  408: "Request Timeout",
  502: "Bad Gateway",
  504: "Gateway Timeout",
  508: "Loop Detected",
};

// ---------------------------------------------------------------------------
// --allow patterns: decided without sockets.

/** One `--allow` pattern: a host (`*` any, `*.example.test` its subdomains) and maybe a port. */
export interface AllowRule {
  /** Lower-case host name or address, `*`, or `*.` and a domain. */
  host: string;
  /** The only port allowed, or `null` for any. */
  port: number | null;
}

/**
 * Reads an `--allow` pattern: `HOST`, `HOST:PORT`, `*.DOMAIN[:PORT]` (any
 * name under DOMAIN, not DOMAIN itself), `*` or `*:PORT` (any host), and
 * `[IPv6]` with an optional port.
 *
 * @example
 * ```ts
 * import { parseAllowPattern } from "./forward.ts";
 * parseAllowPattern("*.example.test:443"); // { host: "*.example.test", port: 443 }
 * ```
 *
 * @throws {UsageError} naming the pattern when it is none of these.
 */
export function parseAllowPattern(text: string): AllowRule {
  const wild = /^\*(\.[^:\]]+)?(?::(.*))?$/.exec(text);
  if (wild) {
    // Validate the domain and port with the same rules as any HOST:PORT.
    const domain = wild[1]?.slice(1) ?? "any.test";
    const probe = wild[2] === undefined ? domain : `${domain}:${wild[2]}`;
    const { hostname, port } = parseHostPort(probe, "--allow", 0);
    return {
      host: wild[1] ? `*.${normalizeHost(hostname)}` : "*",
      port: wild[2] === undefined ? null : port,
    };
  }
  const { hostname, port } = parseHostPort(text, "--allow", 0);
  return { host: normalizeHost(hostname), port: port === 0 ? null : port };
}

/**
 * Whether `rules` let the proxy connect to `hostname:port`; no rules allow
 * everything. The name is compared as the client wrote it (not resolved).
 *
 * @example
 * ```ts
 * import { isAllowed, parseAllowPattern } from "./forward.ts";
 * isAllowed([parseAllowPattern("*.example.test")], "www.example.test", 80); // true
 * ```
 */
export function isAllowed(rules: AllowRule[], hostname: string, port: number): boolean {
  if (rules.length === 0) return true;
  const host = normalizeHost(hostname);
  return rules.some((rule) =>
    (rule.port === null || rule.port === port) &&
    (rule.host === "*" || rule.host === host ||
      (rule.host.startsWith("*.") && host.endsWith(rule.host.slice(1))))
  );
}

/** Lower case, no trailing dot, no brackets, IPv6 in its shortest spelling. */
function normalizeHost(hostname: string): string {
  const host = hostname.toLowerCase().replace(/^\[(.*)\]$/, "$1").replace(/\.$/, "");
  if (host.includes(":")) {
    try {
      return new URL(`http://[${host}]/`).hostname.slice(1, -1);
    } catch {
      return host;
    }
  }
  return host;
}

/**
 * Whether an address is loopback: where an open proxy can only be reached
 * from this machine.
 */
export function isLoopback(hostname: string): boolean {
  const host = normalizeHost(hostname);
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host) ||
    /^::ffff:127\./.test(host);
}

/**
 * Checks the forward-mode policy before listening: `--allow` patterns must
 * parse, and without them only a loopback address may be used unless `open`.
 *
 * @throws {UsageError} for a bad pattern; {@linkcode CliError} for an open proxy on the network.
 */
export function checkForwardPolicy(hostname: string, allow: string[], open: boolean): void {
  for (const pattern of allow) parseAllowPattern(pattern);
  if (allow.length === 0 && !open && !isLoopback(hostname)) {
    throw new CliError(
      `refusing to run an open proxy on ${hostname}: anyone who can reach it could use this ` +
        `machine's address; give --allow HOST patterns, or --open if you really mean it`,
    );
  }
}

// ---------------------------------------------------------------------------
// The handler.

/**
 * Serves one client in forward mode: request after request, each to the host
 * it names, or one `CONNECT` tunnel. Never throws for bad input: every
 * failure is an HTTP answer or a closed connection with a logged reason.
 */
export async function forwardHandler(
  client: Connection,
  { options, log }: HandlerContext<ForwardHandlerOptions>,
): Promise<void> {
  const session = new Session(client, options, log);
  try {
    await session.run();
  } finally {
    session.closeAll();
  }
}

/** An upstream connection kept for one host. */
interface Upstream {
  key: string;
  conn: Connection;
  io: Connection;
  reader: HttpReader;
}

/** What one request did, for its log line. */
interface RequestLog {
  method: string;
  target: string;
  status: number;
  up: number;
  down: number;
  note: string;
  started: number;
}

/** One client connection: its reader, its idle timer, its upstreams. */
class Session {
  readonly who: string;
  readonly rules: AllowRule[];
  readonly clientIo: Connection;
  readonly clientIn: HttpReader;
  readonly upstreams = new Map<string, Upstream>();
  // Reused for every request: a head is built here, written, and the write awaited before
  // the next one (fresh buffers per request cost allocation and garbage collection).
  #upHead = new Uint8Array(UP_HEAD_BYTES);
  #downReply = new Uint8Array(DOWN_REPLY_BYTES);
  #lastActivity = performance.now();
  #idleTimer: ReturnType<typeof setTimeout> | undefined;
  #waitingForHead = false;
  #idleFired = false;
  #sent408 = false;
  #closed = false;

  constructor(
    readonly client: Connection,
    readonly options: ForwardHandlerOptions,
    readonly log: Log,
  ) {
    this.who = formatAddr(client.remoteAddr);
    this.rules = options.allow.map(parseAllowPattern);
    this.clientIo = this.#watched(client);
    this.clientIn = new HttpReader(this.clientIo);
    this.#armIdleTimer();
  }

  /** Request after request until the client finishes, asks to close, or breaks framing. */
  async run(): Promise<void> {
    while (!this.#closed) {
      let lines: string[] | null;
      this.#waitingForHead = true;
      try {
        lines = await this.clientIn.readHead();
      } catch (err) {
        if (err instanceof HttpError) {
          // A malformed or over-long head: the rest of the stream cannot be trusted.
          const record = this.#newRecord("-", "(unreadable request)");
          await this.#refuse(record, err, true);
          this.#logRecord(record);
        } else if (this.#sent408) this.#logIdleClose();
        return;
      } finally {
        this.#waitingForHead = false;
      }
      if (lines === null) return; // the client finished sending
      let keep = false;
      try {
        keep = await this.#serveRequest(lines);
      } catch (err) {
        // Whatever is left (a client gone mid-reply): this connection ends, the server goes on.
        if (!this.#closed) this.log(`${this.who}: closed: ${describe(err)}`);
        return;
      }
      if (!keep) return;
    }
  }

  /** Closes the client and every upstream (idempotent). */
  closeAll(): void {
    this.#closed = true;
    clearTimeout(this.#idleTimer);
    closeQuietly(this.client);
    for (const up of this.upstreams.values()) closeQuietly(up.conn);
    this.upstreams.clear();
  }

  /** Serves one request; resolves with whether the client connection may carry another. */
  async #serveRequest(lines: string[]): Promise<boolean> {
    const words = lines[0].split(" ");
    const record = this.#newRecord(words[0] ?? "-", words[1] ?? "");
    let head: RequestHead;
    let framing: Framing | null = null;
    try {
      head = parseRequestHead(lines);
      framing = requestFraming(head);
    } catch (err) {
      await this.#refuse(record, err as HttpError, true);
      this.#logRecord(record);
      return false;
    }
    const keepAlive = clientKeepsAlive(head);
    let keep = keepAlive;
    try {
      const dest = parseDestination(head);
      this.#checkLoop(head);
      if (!isAllowed(this.rules, dest.hostname, dest.port)) {
        throw new HttpError(
          403,
          `${formatAddr(dest)} is not in this proxy's --allow list`,
        );
      }
      if (head.method === "CONNECT") {
        await this.#tunnel(dest, record);
        return false;
      }
      keep = await this.#forward(head, dest, framing, keepAlive, record);
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      // Refused before anything was forwarded: the connection may go on if no body is left
      // unread and the request itself was well-formed.
      const close = !keepAlive || framing.kind !== "none" || err.status === 400;
      await this.#refuse(record, err, close);
      keep = !close;
    } finally {
      this.#logRecord(record);
    }
    return keep;
  }

  /** Forwards one plain request and its answer; resolves with whether to keep the client. */
  async #forward(
    head: RequestHead,
    dest: Destination,
    framing: Framing,
    keepAlive: boolean,
    record: RequestLog,
  ): Promise<boolean> {
    // Absolute form: the URL's host wins over any Host header (RFC 9112 section 3.2.2).
    const headers: Header[] = [{ name: "Host", value: dest.authority }];
    for (const h of withoutHopByHop(head.headers)) {
      if (h.name.length !== 4 || h.name.toLowerCase() !== "host") headers.push(h);
    }
    headers.push({ name: "Via", value: `${head.version.slice(5)} ${this.options.via}` });
    if (framing.kind === "chunked") headers.push({ name: "Transfer-Encoding", value: "chunked" });
    if (!keepAlive) headers.push({ name: "Connection", value: "close" });
    const startLine = `${head.method} ${dest.path} HTTP/1.1`;
    const headBytes = encodeHead(startLine, headers, this.#upHead);
    // The buffer is free again: the previous request's head was written (`sending` awaited).
    const requestHead = headBytes >= 0
      ? this.#upHead.subarray(0, headBytes)
      : serializeHead(startLine, headers);

    for (let attempt = 0;; attempt++) {
      // A kept connection is at hand without waiting; only a new one is awaited.
      const key = formatAddr(dest);
      const kept = this.upstreams.get(key);
      const reused = kept !== undefined;
      const up = kept ?? await this.#newUpstream(dest, key);
      // The body goes up while the answer comes down: a target may answer early (or send
      // 100 Continue), and must not wait on us.
      let isSent = false;
      let sendFailure: unknown = null;
      const sent = (bytes: number) => {
        record.up += bytes;
        isSent = true;
      };
      const failed = (err: unknown) => {
        sendFailure = err;
      };
      const sending = framing.kind === "none"
        ? writeAll(up.io, requestHead).then(() => sent(requestHead.length), failed)
        : (async () => {
          await writeAll(up.io, requestHead);
          record.up += requestHead.length;
          sent(await copyBody(this.clientIn, up.io, framing));
        })().catch(failed);

      let response: ResponseHead;
      try {
        response = await this.#readFinalHead(up, head, record);
      } catch (err) {
        this.#dropUpstream(up);
        const nothingSent = record.down === 0;
        // A kept connection the target had closed meanwhile: try once more on a fresh one.
        if (
          reused && attempt === 0 && framing.kind === "none" && nothingSent &&
          !(err instanceof HttpError)
        ) {
          await sending;
          record.up = 0;
          continue;
        }
        if (!nothingSent) throw err;
        throw err instanceof HttpError ? err : new HttpError(
          502,
          `the target closed the connection before answering (${describe(err)})`,
        );
      }
      return await this.#answer(
        head,
        response,
        up,
        record,
        keepAlive,
        () => isSent,
        sending,
        () => sendFailure,
      );
    }
  }

  /** Streams the final answer to the client; resolves with whether to keep the client. */
  async #answer(
    head: RequestHead,
    response: ResponseHead,
    up: Upstream,
    record: RequestLog,
    keepAlive: boolean,
    isSent: () => boolean,
    sending: Promise<void>,
    sendFailure: () => unknown,
  ): Promise<boolean> {
    const framing = responseFraming(head.method, response);
    const oldClient = head.version === "HTTP/1.0";
    let output: BodyOutput = "same";
    let closeClient = !keepAlive;
    const headers = withoutHopByHop(response.headers);
    if (framing.kind === "chunked" || framing.kind === "close") {
      // A length next to chunks means nothing (RFC 9112 section 6.3); drop it.
      removeHeader(headers, "content-length");
      if (oldClient) {
        // HTTP/1.0 knows no chunks: send the bare data and end it with the connection.
        output = framing.kind === "chunked" ? "dechunk" : "same";
        closeClient = true;
      } else {
        // Chunks pass through as they are; an answer ended by close is cut into chunks,
        // so the client's connection can stay open.
        output = framing.kind === "chunked" ? "same" : "chunk";
        headers.push({ name: "Transfer-Encoding", value: "chunked" });
      }
    }
    headers.push({ name: "Via", value: `${response.version.slice(5)} ${this.options.via}` });
    if (closeClient) headers.push({ name: "Connection", value: "close" });
    else if (oldClient) headers.push({ name: "Connection", value: "keep-alive" });
    record.status = response.status;
    const statusLine = `HTTP/1.1 ${response.status} ${response.reason}`.trimEnd();
    try {
      // A small reply whose body is all here already (the usual case): head and body in one
      // write from the reused buffer. Anything else streams through copyBody.
      const bodyBytes = framing.kind === "length" ? framing.bytes : 0;
      const headBytes = (framing.kind === "length" || framing.kind === "none") &&
          up.reader.buffered >= bodyBytes
        ? encodeHead(statusLine, headers, this.#downReply)
        : -1;
      if (headBytes >= 0 && headBytes + bodyBytes <= this.#downReply.length) {
        this.#downReply.set(up.reader.takeChunk(bodyBytes), headBytes);
        await writeAll(this.clientIo, this.#downReply.subarray(0, headBytes + bodyBytes));
        record.down += headBytes + bodyBytes;
      } else {
        const replyHead = serializeHead(statusLine, headers);
        record.down += await copyBody(up.reader, this.clientIo, framing, output, replyHead);
      }
    } catch (err) {
      // Cut in the middle: the client sees a short reply and the end of the connection.
      this.#dropUpstream(up);
      record.note = err instanceof BodyCutError
        ? `the target ${err.message}; the client got a short reply`
        : describe(err);
      return false;
    }
    if (!isSent()) {
      // The target answered before the request body was all there. Finish the reply, then
      // give the client a moment to finish sending; past that the connection cannot go on.
      closeClient = true;
      await Promise.race([sending, new Promise((resolve) => setTimeout(resolve, LINGER_MS))]);
    } else await sending;
    const reusable = isSent() && sendFailure() === null && framing.kind !== "close" &&
      response.version === "HTTP/1.1" && !hasToken(response.headers, "connection", "close") &&
      keepAlive;
    if (!reusable) this.#dropUpstream(up);
    if (sendFailure() !== null) {
      record.note = `request body not sent in full: ${describe(sendFailure())}`;
      return false;
    }
    return !closeClient;
  }

  /** Reads answers until a final one, passing 1xx on to HTTP/1.1 clients. */
  async #readFinalHead(up: Upstream, head: RequestHead, record: RequestLog): Promise<ResponseHead> {
    while (true) {
      let lines: string[] | null;
      try {
        lines = await up.reader.readHead();
      } catch (err) {
        throw err instanceof HttpError
          ? new HttpError(502, `the target sent a bad response: ${err.message}`)
          : err;
      }
      if (lines === null) throw new Error("end of data");
      const response = parseResponseHead(lines);
      if (response.status === 101) {
        throw new HttpError(502, "the target switched protocols, which this proxy does not relay");
      }
      if (response.status >= 200) return response;
      if (head.version === "HTTP/1.1") {
        const interim = serializeHead(
          `HTTP/1.1 ${response.status} ${response.reason}`.trimEnd(),
          withoutHopByHop(response.headers),
        );
        await writeAll(this.clientIo, interim);
        record.down += interim.length;
      }
    }
  }

  /** A `CONNECT` tunnel: 200, then the two-way relay until both sides are done. */
  async #tunnel(dest: Destination, record: RequestLog): Promise<void> {
    const upstream = await this.#connect(dest);
    try {
      const reply = serializeHead(`HTTP/1.1 200 ${REASONS[200]}`, [
        { name: "Via", value: `1.1 ${this.options.via}` },
      ]);
      await writeAll(this.clientIo, reply);
      record.status = 200;
      record.down += reply.length;
      // Bytes the client sent right behind its CONNECT (a TLS hello) belong in the tunnel.
      const early = this.clientIn.takeBuffered();
      if (early.length > 0) {
        await writeAll(upstream, early);
        record.up += early.length;
      }
      // From here it is the relay's job, with its own idle timeout.
      clearTimeout(this.#idleTimer);
      const result = await relay(this.client, upstream, {
        names: ["client", "target"],
        idleTimeoutSeconds: this.options.idleTimeoutSeconds,
      });
      record.up += result.forwarded;
      record.down += result.returned;
      record.note = `tunnel closed: ${result.reason}`;
    } finally {
      closeQuietly(upstream);
    }
  }

  /** A new connection to this host (`key`), kept for the requests after this one. */
  async #newUpstream(dest: Destination, key: string): Promise<Upstream> {
    if (this.upstreams.size >= MAX_IDLE_UPSTREAMS) {
      this.#dropUpstream(this.upstreams.values().next().value!);
    }
    const conn = await this.#connect(dest);
    const io = this.#watched(conn);
    const up = { key, conn, io, reader: new HttpReader(io) };
    this.upstreams.set(key, up);
    return up;
  }

  /** Connects to a target; refusals become 502, silence 504, ourselves 508. */
  async #connect(dest: Destination): Promise<Deno.TcpConn> {
    let conn: Deno.TcpConn;
    try {
      conn = await connectTo(dest.hostname, dest.port, this.options.connectTimeoutSeconds);
    } catch (err) {
      const message = describe(err);
      throw new HttpError(/timed out/.test(message) ? 504 : 502, message);
    }
    // The target is the very address the client reached us on: a loop, however it was named.
    if (formatAddr(conn.remoteAddr) === formatAddr(this.client.localAddr)) {
      closeQuietly(conn);
      throw new HttpError(508, `${formatAddr(dest)} is this proxy itself`);
    }
    return conn;
  }

  #dropUpstream(up: Upstream): void {
    closeQuietly(up.conn);
    if (this.upstreams.get(up.key) === up) this.upstreams.delete(up.key);
  }

  /** 508 when our own `Via` name is already on the request: it went round in a circle. */
  #checkLoop(head: RequestHead): void {
    const seen = headerList(head.headers, "via").some((hop) =>
      hop.split(/\s+/)[1] === this.options.via
    );
    if (seen) {
      throw new HttpError(508, `loop: this request already passed through ${this.options.via}`);
    }
  }

  /** Answers with `err`'s status and its line as the body. */
  async #refuse(record: RequestLog, err: HttpError, close: boolean): Promise<void> {
    record.status = err.status;
    record.note = err.message;
    const body = new TextEncoder().encode(`${err.message}\n`);
    const headers: Header[] = [
      { name: "Content-Type", value: "text/plain; charset=utf-8" },
      { name: "Content-Length", value: String(body.length) },
      { name: "Via", value: `1.1 ${this.options.via}` },
    ];
    if (close) headers.push({ name: "Connection", value: "close" });
    const head = serializeHead(`HTTP/1.1 ${err.status} ${REASONS[err.status] ?? "Error"}`, headers);
    const reply = new Uint8Array(head.length + body.length);
    reply.set(head);
    reply.set(body, head.length);
    try {
      await writeAll(this.clientIo, reply);
      record.down += reply.length;
    } catch {
      // The client left already; the log line still says why.
    }
  }

  #newRecord(method: string, target: string): RequestLog {
    return { method, target, status: 0, up: 0, down: 0, note: "", started: performance.now() };
  }

  #logRecord(r: RequestLog): void {
    if (this.#idleFired) {
      r.note = `no traffic for ${this.options.idleTimeoutSeconds} s (idle timeout)`;
    }
    const failed = r.status === 0 || r.status >= 500 || /short reply|not sent/.test(r.note);
    if (this.options.quiet && !failed) return;
    const cut = r.target.length > LOG_TARGET_CHARS
      ? `${r.target.slice(0, LOG_TARGET_CHARS)}…`
      : r.target;
    // A refused request may hold anything: quote and escape what is not plain text.
    const target = /^[\x21-\x7e…]*$/.test(cut) ? cut : JSON.stringify(cut);
    const method = /^[\x21-\x7e]*$/.test(r.method) ? r.method : JSON.stringify(r.method);
    this.log(
      `${this.who} ${method} ${target} ${r.status || "-"} (${formatBytes(r.up)} up, ${
        formatBytes(r.down)
      } down, ${elapsedMs(r.started)})${r.note ? `: ${r.note}` : ""}`,
    );
  }

  #logIdleClose(): void {
    this.log(
      `${this.who} - (incomplete request) 408: no complete request within ${this.options.idleTimeoutSeconds} s (idle timeout); closed`,
    );
  }

  /**
   * A view of `conn` whose every read and write counts as activity for the
   * idle timer. The time is taken when the call starts: the handler starts
   * its next read or write as soon as one ends, so that is when one ended,
   * without a promise more per call.
   */
  #watched(conn: Connection): Connection {
    return {
      read: (p) => {
        this.#lastActivity = performance.now();
        return conn.read(p);
      },
      write: (p) => {
        this.#lastActivity = performance.now();
        return conn.write(p);
      },
      closeWrite: () => conn.closeWrite(),
      close: () => conn.close(),
      get remoteAddr() {
        return conn.remoteAddr;
      },
      get localAddr() {
        return conn.localAddr;
      },
    };
  }

  /**
   * One timer per client, re-armed for the remaining time. When it fires with
   * half a request head in, the client hears 408 first; either way everything closes.
   */
  #armIdleTimer(): void {
    const idleMs = this.options.idleTimeoutSeconds * 1000;
    if (idleMs <= 0) return;
    const check = () => {
      const quietMs = performance.now() - this.#lastActivity;
      if (quietMs < idleMs) {
        this.#idleTimer = setTimeout(check, idleMs - quietMs);
        return;
      }
      this.#idleFired = true;
      if (this.#waitingForHead && this.clientIn.midHead) {
        this.#sent408 = true;
        const body = `no complete request within ${this.options.idleTimeoutSeconds} s\n`;
        const reply = new TextEncoder().encode(
          `HTTP/1.1 408 ${REASONS[408]}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
            `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
        );
        this.client.write(reply).catch(() => 0).finally(() => this.closeAll());
      } else this.closeAll();
    };
    this.#idleTimer = setTimeout(check, idleMs);
  }
}

/** HTTP/1.1 keeps a connection unless told `close`; HTTP/1.0 only when told `keep-alive`. */
function clientKeepsAlive(head: RequestHead): boolean {
  if (head.version === "HTTP/1.1") return !hasToken(head.headers, "connection", "close");
  return hasToken(head.headers, "connection", "keep-alive");
}

function removeHeader(headers: Header[], lower: string): void {
  for (let i = headers.length - 1; i >= 0; i--) {
    if (headers[i].name.toLowerCase() === lower) headers.splice(i, 1);
  }
}

/** One line for any failure. */
function describe(err: unknown): string {
  if (err instanceof Deno.errors.ConnectionReset) return "connection reset";
  if (err instanceof Deno.errors.BrokenPipe) return "the peer went away (broken pipe)";
  if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) {
    return "connection closed";
  }
  if (err instanceof UsageError || err instanceof CliError) return err.message;
  return err instanceof Error ? err.message : String(err);
}
