/**
 * HTTP/1.x as a proxy needs it, and nothing more: read a request or response
 * head with bounded memory, pick out the target, drop the hop-by-hop headers,
 * and move a body framed by `Content-Length`, by chunks, or by the end of the
 * connection — passing chunks through verbatim, removing them for an
 * HTTP/1.0 client, or adding them when an HTTP/1.1 client should keep its
 * connection. Every piece of HTTP parsing in the project lives here.
 *
 * Header text is kept byte for byte (each byte one UTF-16 unit, "latin1"),
 * so whatever a client sent is forwarded unchanged.
 *
 * @example
 * ```ts
 * import { HttpReader, parseRequestHead } from "./http1.ts";
 * const listener = Deno.listen({ port: 0 });
 * const conn = await listener.accept();
 * const reader = new HttpReader(conn);
 * const lines = await reader.readHead();
 * if (lines) console.log(parseRequestHead(lines).method);
 * ```
 * @module
 */

import { type HostPort, parseHostPort } from "./cli.ts";
import { concatBytes, READ_BUFFER_BYTES, type Reader, writeAll, type Writer } from "./net.ts";

/** Longest header line (or request line, or chunk-size line) accepted, in bytes. */
export const MAX_LINE_BYTES = 8 * 1024;
/** Longest whole head (request line and every header) accepted, in bytes. */
export const MAX_HEAD_BYTES = 64 * 1024;

/**
 * A request the proxy refuses, with the status to answer and one line that
 * says why (the body of the answer).
 */
export class HttpError extends Error {
  override name = "HttpError";
  /** The HTTP status to answer with: 400, 403, 502, 504, 508, ... */
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** A body ended before its framing said it would: the reply is short or chunk-broken. */
export class BodyCutError extends Error {
  override name = "BodyCutError";
}

/** One header line, name and value as received (value trimmed of surrounding blanks). */
export interface Header {
  name: string;
  value: string;
}

/** A parsed request line and its headers. */
export interface RequestHead {
  method: string;
  /** The request target as sent: `http://host/path`, `/path`, `host:443` or `*`. */
  target: string;
  version: "HTTP/1.0" | "HTTP/1.1";
  headers: Header[];
}

/** A parsed status line and its headers. */
export interface ResponseHead {
  version: string;
  status: number;
  reason: string;
  headers: Header[];
}

/** How a body is delimited on the wire. */
export type Framing =
  | { kind: "none" }
  | { kind: "length"; bytes: number }
  | { kind: "chunked" }
  | { kind: "close" };

/**
 * Reads from a connection through a buffer: whole heads as lines, then body
 * bytes. Memory stays bounded: a head is given up as soon as one line passes
 * {@linkcode MAX_LINE_BYTES} or the head passes {@linkcode MAX_HEAD_BYTES}.
 */
export class HttpReader {
  #src: Reader;
  #buffer = new Uint8Array(READ_BUFFER_BYTES);
  #start = 0;
  #end = 0;
  #eof = false;

  constructor(src: Reader) {
    this.#src = src;
  }

  /** Bytes read ahead and not handed out yet (the start of a body, a pipelined request). */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /**
   * Reads one head up to its blank line and returns its lines (without line
   * ends), or `null` when the peer finished sending before a single byte of
   * it. Empty lines before a request line are skipped, as RFC 9112 allows.
   *
   * @throws {HttpError} 400 for an over-long line or head, or a head cut short.
   */
  async readHead(): Promise<string[] | null> {
    const lines: string[] = [];
    let headBytes = 0;
    while (true) {
      const line = await this.#readLine("header line");
      if (line === null) {
        if (lines.length === 0 && headBytes === 0) return null;
        throw new HttpError(400, "the request ended in the middle of its head");
      }
      headBytes += line.length + 2;
      if (headBytes > MAX_HEAD_BYTES) {
        throw new HttpError(400, `head longer than ${MAX_HEAD_BYTES} bytes`);
      }
      if (line === "") {
        if (lines.length === 0) continue; // a stray CRLF between requests
        return lines;
      }
      lines.push(line);
    }
  }

  /** Whether bytes of a head have arrived that do not make a whole head yet. */
  get midHead(): boolean {
    return this.#end > this.#start;
  }

  /** Reads body bytes: buffered ones first, then straight from the source. */
  async read(p: Uint8Array): Promise<number | null> {
    if (this.#end > this.#start) {
      const n = Math.min(p.length, this.#end - this.#start);
      p.set(this.#buffer.subarray(this.#start, this.#start + n));
      this.#start += n;
      return n;
    }
    if (this.#eof) return null;
    const n = await this.#src.read(p);
    if (n === null) this.#eof = true;
    return n;
  }

  /**
   * Reads up to `max` body bytes and returns them as a view into this
   * reader's own buffer (no copy, no allocation): valid until the next read.
   * `null` at the end of data.
   */
  async readChunk(max: number): Promise<Uint8Array | null> {
    if (this.#end === this.#start) {
      if (this.#eof) return null;
      this.#start = this.#end = 0;
      const n = await this.#src.read(this.#buffer);
      if (n === null) {
        this.#eof = true;
        return null;
      }
      this.#end = n;
    }
    const n = Math.min(max, this.#end - this.#start);
    const chunk = this.#buffer.subarray(this.#start, this.#start + n);
    this.#start += n;
    return chunk;
  }

  /** Hands over (and forgets) the bytes read ahead, for a tunnel that relays the rest. */
  takeBuffered(): Uint8Array {
    const rest = this.#buffer.slice(this.#start, this.#end);
    this.#start = this.#end = 0;
    return rest;
  }

  /** Reads one line (CRLF or bare LF), as latin1 text; null at the end of data. */
  async readLine(): Promise<string | null> {
    return await this.#readLine("line");
  }

  /** A line; `what` names it in the error when it is too long. */
  async #readLine(what: string): Promise<string | null> {
    let scanned = 0;
    while (true) {
      const at = this.#buffer.subarray(this.#start + scanned, this.#end).indexOf(0x0a);
      if (at >= 0) {
        const end = this.#start + scanned + at;
        const lineEnd = end > this.#start && this.#buffer[end - 1] === 0x0d ? end - 1 : end;
        if (lineEnd - this.#start > MAX_LINE_BYTES) throw lineTooLong(what);
        const line = latin1(this.#buffer.subarray(this.#start, lineEnd));
        this.#start = end + 1;
        return line;
      }
      scanned = this.#end - this.#start;
      // One spare byte for the "\r" of a line of exactly the limit.
      if (scanned > MAX_LINE_BYTES + 1) throw lineTooLong(what);
      if (this.#eof) {
        if (scanned === 0) return null;
        throw new HttpError(400, "the data ended in the middle of a line");
      }
      await this.#fill();
    }
  }

  async #fill(): Promise<void> {
    if (this.#start > 0) {
      this.#buffer.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    // A full buffer with no line end: reading into no space would return 0 bytes forever.
    if (this.#end === this.#buffer.length) throw lineTooLong("line");
    const n = await this.#src.read(this.#buffer.subarray(this.#end));
    if (n === null) this.#eof = true;
    else this.#end += n;
  }
}

function lineTooLong(what: string): HttpError {
  return new HttpError(400, `${what} longer than ${MAX_LINE_BYTES} bytes`);
}

const asciiDecoder = new TextDecoder();
const asciiEncoder = new TextEncoder();

/** Bytes to text, one UTF-16 unit per byte, so nothing is lost on the way back. */
function latin1(bytes: Uint8Array): string {
  // Nearly every head is plain ASCII, which the native decoder reads fastest.
  let ascii = true;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return asciiDecoder.decode(bytes);
  let out = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    out += String.fromCharCode(...bytes.subarray(i, i + 4096));
  }
  return out;
}

/** Text made by {@linkcode latin1} back to bytes. */
export function latin1Bytes(text: string): Uint8Array<ArrayBuffer> {
  // deno-lint-ignore no-control-regex -- the ASCII range, for the native encoder's fast path
  if (/^[\x00-\x7f]*$/.test(text)) return asciiEncoder.encode(text);
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

/** A token (method, header name): RFC 9110's tchar. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Control characters other than tab: never allowed in a header value or a target. */
// deno-lint-ignore no-control-regex -- finding control characters is the point
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/;

/** Splits header lines into names and values. */
function parseHeaders(lines: string[], fail: (why: string) => Error): Header[] {
  return lines.map((line) => {
    if (line[0] === " " || line[0] === "\t") {
      throw fail("folded header lines (starting with a space) are not allowed");
    }
    const colon = line.indexOf(":");
    const name = line.slice(0, colon);
    if (colon <= 0 || !TOKEN.test(name)) {
      throw fail(`bad header line ${JSON.stringify(line.slice(0, 40))}`);
    }
    const value = line.slice(colon + 1).trim();
    if (CONTROL.test(value)) throw fail(`control character in header ${name}`);
    return { name, value };
  });
}

/**
 * Parses a request head's lines.
 *
 * @example
 * ```ts
 * import { parseRequestHead } from "./http1.ts";
 * parseRequestHead(["GET http://example.test/ HTTP/1.1", "Host: example.test"]).target;
 * // "http://example.test/"
 * ```
 *
 * @throws {HttpError} 400 when it is not a well-formed HTTP/1.0 or 1.1 request.
 */
export function parseRequestHead(lines: string[]): RequestHead {
  const bad = (why: string) => new HttpError(400, why);
  const parts = lines[0].split(" ");
  if (parts.length !== 3 || !TOKEN.test(parts[0]) || parts[1] === "") {
    throw bad(`bad request line ${JSON.stringify(lines[0].slice(0, 60))}`);
  }
  const [method, target, version] = parts;
  if (version !== "HTTP/1.1" && version !== "HTTP/1.0") {
    throw bad(`unsupported HTTP version ${JSON.stringify(version.slice(0, 20))}`);
  }
  if (CONTROL.test(target)) throw bad("control character in the request target");
  return { method, target, version, headers: parseHeaders(lines.slice(1), bad) };
}

/**
 * Parses a response head's lines.
 *
 * @throws {HttpError} 502 when the target's answer is not HTTP/1.x.
 */
export function parseResponseHead(lines: string[]): ResponseHead {
  const bad = (why: string) => new HttpError(502, `the target sent a bad response: ${why}`);
  const match = /^(HTTP\/1\.[01]) (\d{3})(?: (.*))?$/.exec(lines[0]);
  if (!match) throw bad(`status line ${JSON.stringify(lines[0].slice(0, 60))}`);
  return {
    version: match[1],
    status: Number(match[2]),
    reason: match[3] ?? "",
    headers: parseHeaders(lines.slice(1), bad),
  };
}

/** Values of every header called `name` (any case), comma lists split and trimmed. */
export function headerList(headers: Header[], name: string): string[] {
  const lower = name.toLowerCase();
  return headers
    .filter((h) => h.name.toLowerCase() === lower)
    .flatMap((h) => h.value.split(","))
    .map((v) => v.trim())
    .filter((v) => v !== "");
}

/** Whether a `Connection`-style list holds `token` (any case). */
export function hasToken(headers: Header[], name: string, token: string): boolean {
  return headerList(headers, name).some((v) => v.toLowerCase() === token);
}

/** Headers meant for one hop only: never forwarded as they are. */
const HOP_BY_HOP = new Set([
  "connection",
  "proxy-connection",
  "keep-alive",
  "proxy-authorization",
  "proxy-authenticate",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/**
 * The headers without the hop-by-hop ones: the fixed list above, and every
 * header that a `Connection` header names. The caller adds its own framing.
 *
 * @example
 * ```ts
 * import { withoutHopByHop } from "./http1.ts";
 * withoutHopByHop([
 *   { name: "Connection", value: "X-Secret" },
 *   { name: "X-Secret", value: "1" },
 *   { name: "Accept", value: "*\/*" },
 * ]); // [{ name: "Accept", value: "*\/*" }]
 * ```
 */
export function withoutHopByHop(headers: Header[]): Header[] {
  const listed = new Set(headerList(headers, "connection").map((v) => v.toLowerCase()));
  return headers.filter((h) => {
    const lower = h.name.toLowerCase();
    return !HOP_BY_HOP.has(lower) && !listed.has(lower);
  });
}

/** Where a request is meant to go, read from its target (and `Host` for origin form). */
export interface Destination extends HostPort {
  /** What to send upstream as the target: the path and query (`/` at least), or `host:port` for CONNECT. */
  path: string;
  /** `host[:port]` as the URL or Host header gave it, for the `Host` header upstream. */
  authority: string;
}

/**
 * Reads where a request goes: absolute form (`http://host:port/path`, what a
 * client says to a proxy), authority form for `CONNECT` (`host:port`), or
 * origin form (`/path`) with the `Host` header.
 *
 * @example
 * ```ts
 * import { parseDestination } from "./http1.ts";
 * parseDestination({ method: "GET", target: "http://example.test:8000/a?b", version: "HTTP/1.1", headers: [] });
 * // { hostname: "example.test", port: 8000, path: "/a?b", authority: "example.test:8000" }
 * ```
 *
 * @throws {HttpError} 400 when there is no host, the port is bad, or the scheme is not http.
 */
export function parseDestination(head: RequestHead): Destination {
  if (head.method === "CONNECT") {
    // A port is required: CONNECT names a TCP endpoint, not a URL.
    return { ...readAuthority(head.target, undefined), path: head.target, authority: head.target };
  }
  const absolute = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/([^/?#]*)([^#]*)/.exec(head.target);
  if (absolute) {
    const scheme = absolute[1].toLowerCase();
    if (scheme !== "http") {
      throw new HttpError(
        400,
        scheme === "https"
          ? `https:// URLs go through CONNECT, not a plain request (got ${head.target})`
          : `only http:// URLs can be fetched, got ${scheme}://`,
      );
    }
    const rest = absolute[3];
    const path = rest === "" ? "/" : rest.startsWith("?") ? `/${rest}` : rest;
    return { ...readAuthority(absolute[2], 80), path, authority: absolute[2] };
  }
  if (!head.target.startsWith("/")) {
    throw new HttpError(400, `bad request target ${JSON.stringify(head.target.slice(0, 60))}`);
  }
  const hosts = head.headers.filter((h) => h.name.toLowerCase() === "host");
  if (hosts.length !== 1 || hosts[0].value === "") {
    throw new HttpError(
      400,
      "no host: send the full URL (GET http://host/path) or one Host header",
    );
  }
  return { ...readAuthority(hosts[0].value, 80), path: head.target, authority: hosts[0].value };
}

/** `host[:port]` with one-line reasons; IPv6 in brackets. */
function readAuthority(text: string, defaultPort: number | undefined): HostPort {
  if (text === "") throw new HttpError(400, "no host in the request target");
  if (text.includes("@")) throw new HttpError(400, "user names in URLs are not accepted");
  try {
    const { hostname, port } = parseHostPort(text, "the target", defaultPort);
    return { hostname: hostname.toLowerCase().replace(/\.$/, ""), port };
  } catch (err) {
    throw new HttpError(400, (err as Error).message);
  }
}

/**
 * How a request's body is framed.
 *
 * @throws {HttpError} 400 for a framing a proxy cannot trust: both
 * `Content-Length` and `Transfer-Encoding`, an encoding other than chunked,
 * or a length that is not one number.
 */
export function requestFraming(head: RequestHead): Framing {
  const codings = headerList(head.headers, "transfer-encoding").map((v) => v.toLowerCase());
  const lengths = head.headers.filter((h) => h.name.toLowerCase() === "content-length");
  if (codings.length > 0) {
    // Both at once is how requests are smuggled past a proxy: refuse rather than guess.
    if (lengths.length > 0) {
      throw new HttpError(400, "both Content-Length and Transfer-Encoding in one request");
    }
    if (codings.length !== 1 || codings[0] !== "chunked") {
      throw new HttpError(400, `unsupported Transfer-Encoding "${codings.join(", ")}"`);
    }
    return { kind: "chunked" };
  }
  const bytes = contentLength(head.headers, (why) => new HttpError(400, why));
  return bytes === null || bytes === 0 ? { kind: "none" } : { kind: "length", bytes };
}

/**
 * How a response's body is framed (RFC 9112 section 6.3), which depends on
 * the request: a `HEAD` answer, 1xx, 204 and 304 never have one.
 *
 * @throws {HttpError} 502 when the length is not one number.
 */
export function responseFraming(method: string, head: ResponseHead): Framing {
  if (method === "HEAD" || head.status < 200 || head.status === 204 || head.status === 304) {
    return { kind: "none" };
  }
  const codings = headerList(head.headers, "transfer-encoding").map((v) => v.toLowerCase());
  if (codings.length > 0) {
    return codings.at(-1) === "chunked" ? { kind: "chunked" } : { kind: "close" };
  }
  const bytes = contentLength(
    head.headers,
    (why) => new HttpError(502, `the target sent a bad response: ${why}`),
  );
  return bytes === null ? { kind: "close" } : { kind: "length", bytes };
}

function contentLength(headers: Header[], fail: (why: string) => Error): number | null {
  const values = headerList(headers, "content-length");
  if (values.length === 0) return null;
  // Repeats of one value are harmless; different values are not.
  if (!values.every((v) => v === values[0]) || !/^\d{1,15}$/.test(values[0])) {
    throw fail(`bad Content-Length "${values.join(", ")}"`);
  }
  return Number(values[0]);
}

/** A head's bytes: the start line, the headers, the blank line. */
export function serializeHead(startLine: string, headers: Header[]): Uint8Array<ArrayBuffer> {
  let text = `${startLine}\r\n`;
  for (const h of headers) text += `${h.name}: ${h.value}\r\n`;
  return latin1Bytes(`${text}\r\n`);
}

/** How {@linkcode copyBody} writes what it reads. */
export type BodyOutput = "same" | "dechunk" | "chunk";

const CRLF = Uint8Array.of(0x0d, 0x0a);
const LAST_CHUNK = latin1Bytes("0\r\n\r\n");

/**
 * Copies one body from `src` to `dst` as `framing` delimits it, and resolves
 * with the bytes written. `"same"` passes the body verbatim (chunks and
 * trailers included); `"dechunk"` writes only the data of a chunked body (for
 * an HTTP/1.0 client, which then sees the end of the connection); `"chunk"`
 * writes a close-delimited body as chunks (so an HTTP/1.1 client can keep
 * its connection). `first` holds bytes to send before the body (its head).
 *
 * @throws {BodyCutError} when `src` ends before the body does.
 */
export async function copyBody(
  src: HttpReader,
  dst: Writer,
  framing: Framing,
  output: BodyOutput = "same",
  first: Uint8Array = new Uint8Array(0),
): Promise<number> {
  let written = 0;
  let pending: Uint8Array | null = first.length > 0 ? first : null;
  // The head goes out with the first piece of body in one write (one packet for small
  // replies), and a chunk with its size line and CRLF.
  const put = async (...parts: Uint8Array[]) => {
    if (pending) parts.unshift(pending);
    pending = null;
    const bytes = parts.length === 1 ? parts[0] : concatBytes(parts);
    await writeAll(dst, bytes);
    written += bytes.length;
  };
  // Chunks are views into the reader's buffer: each is written before the next read.
  if (framing.kind === "length") {
    let left = framing.bytes;
    while (left > 0) {
      const chunk = await src.readChunk(left);
      if (chunk === null) {
        throw new BodyCutError(
          `ended after ${framing.bytes - left} of ${framing.bytes} body bytes`,
        );
      }
      await put(chunk);
      left -= chunk.length;
    }
  } else if (framing.kind === "close") {
    while (true) {
      const chunk = await src.readChunk(READ_BUFFER_BYTES);
      if (chunk === null) break;
      if (output === "chunk") {
        await put(latin1Bytes(`${chunk.length.toString(16)}\r\n`), chunk, CRLF);
      } else await put(chunk);
    }
    if (output === "chunk") await put(LAST_CHUNK);
  } else if (framing.kind === "chunked") {
    const same = output !== "dechunk";
    while (true) {
      const sizeLine = await src.readLine();
      if (sizeLine === null) throw new BodyCutError("ended in the middle of a chunked body");
      const size = /^([0-9a-fA-F]{1,12})[ \t]*(;.*)?$/.exec(sizeLine);
      if (!size) throw new BodyCutError(`bad chunk size line ${JSON.stringify(sizeLine)}`);
      if (same) await put(latin1Bytes(`${sizeLine}\r\n`));
      let left = parseInt(size[1], 16);
      if (left === 0) break;
      while (left > 0) {
        const chunk = await src.readChunk(left);
        if (chunk === null) throw new BodyCutError("ended in the middle of a chunk");
        await put(chunk);
        left -= chunk.length;
      }
      const end = await src.readLine();
      if (end !== "") throw new BodyCutError("a chunk did not end with CRLF");
      if (same) await put(CRLF);
    }
    // Trailer lines, then the blank line that ends the body.
    while (true) {
      const line = await src.readLine();
      if (line === null) throw new BodyCutError("ended in the trailer of a chunked body");
      if (same) await put(latin1Bytes(`${line}\r\n`));
      if (line === "") break;
    }
  }
  if (pending) await put();
  return written;
}
