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
    // A head nearly always arrives whole in one read: then it is cut out of the buffer in
    // one pass, decoded once and split once. Otherwise, line by line as it comes in.
    if (this.#end === this.#start && !this.#eof) {
      // As #fill() does with nothing buffered, without its promise.
      this.#start = this.#end = 0;
      const n = await this.#src.read(this.#buffer);
      if (n === null) this.#eof = true;
      else this.#end = n;
    }
    const whole = this.#wholeHead();
    if (whole !== null) return whole;
    const lines: string[] = [];
    let headBytes = 0;
    while (true) {
      const line = await this.#readLine("header line");
      if (line === null) {
        if (lines.length === 0 && headBytes === 0) return null;
        throw new HttpError(400, "the request ended in the middle of its head");
      }
      headBytes += line.length + 2;
      if (headBytes > MAX_HEAD_BYTES) throw headTooLong();
      if (line === "") {
        if (lines.length === 0) continue; // a stray CRLF between requests
        return lines;
      }
      lines.push(line);
    }
  }

  /**
   * The buffered head's lines, exactly as reading it line by line would give
   * them (and with the same errors), or `null` when its blank line has not
   * arrived yet. Consumes nothing unless it returns lines.
   */
  #wholeHead(): string[] | null {
    const buf = this.#buffer;
    const end = this.#end;
    let at = this.#start;
    let headBytes = 0;
    // Stray line ends before the request line: skipped, but they count toward the head.
    while (at < end) {
      if (buf[at] === 0x0a) at += 1;
      else if (buf[at] === 0x0d && at + 1 < end && buf[at + 1] === 0x0a) at += 2;
      else break;
      headBytes += 2;
    }
    if (headBytes > MAX_HEAD_BYTES) throw headTooLong();
    if (at === end) return null;
    // The head ends at a line end followed by an empty line (CRLF or bare LF).
    let lf = buf.indexOf(0x0a, at);
    let rest: number;
    while (true) {
      if (lf < 0 || lf >= end) return null; // bytes past #end are stale
      const next = lf + 1;
      if (next < end && buf[next] === 0x0a) {
        rest = next + 1;
        break;
      }
      if (next + 1 < end && buf[next] === 0x0d && buf[next + 1] === 0x0a) {
        rest = next + 2;
        break;
      }
      if (next >= end || (next + 1 === end && buf[next] === 0x0d)) return null;
      lf = buf.indexOf(0x0a, next);
    }
    const lines = latin1(buf.subarray(at, lf)).split("\n");
    for (let i = 0; i < lines.length; i++) {
      let line = lines[i];
      if (line.charCodeAt(line.length - 1) === 0x0d) lines[i] = line = line.slice(0, -1);
      if (line.length > MAX_LINE_BYTES) throw lineTooLong("header line");
      headBytes += line.length + 2;
      if (headBytes > MAX_HEAD_BYTES) throw headTooLong();
    }
    // The blank line counts too.
    if (headBytes + 2 > MAX_HEAD_BYTES) throw headTooLong();
    this.#start = rest;
    return lines;
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
    return this.takeChunk(max);
  }

  /**
   * Up to `max` of the bytes already read ahead, without reading: a view
   * into this reader's buffer, valid until the next read (empty when none).
   */
  takeChunk(max: number): Uint8Array {
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

function headTooLong(): HttpError {
  return new HttpError(400, `head longer than ${MAX_HEAD_BYTES} bytes`);
}

function lineTooLong(what: string): HttpError {
  return new HttpError(400, `${what} longer than ${MAX_LINE_BYTES} bytes`);
}

const asciiDecoder = new TextDecoder();
const asciiEncoder = new TextEncoder();

/** Bytes to text, one UTF-16 unit per byte, so nothing is lost on the way back. */
function latin1(bytes: Uint8Array): string {
  // Nearly every head is plain ASCII, which the native decoder reads fastest. It was ASCII
  // when each byte became one character and none became U+FFFD (a byte UTF-8 rejects).
  const text = asciiDecoder.decode(bytes);
  if (text.length === bytes.length && !text.includes("\ufffd")) return text;
  let out = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    out += String.fromCharCode(...bytes.subarray(i, i + 4096));
  }
  return out;
}

/** Text made by {@linkcode latin1} back to bytes. */
export function latin1Bytes(text: string): Uint8Array<ArrayBuffer> {
  // UTF-8 has one byte per character exactly when every character is ASCII: then the
  // native encoder's answer is the latin1 one, found without scanning the text first.
  const utf8 = asciiEncoder.encode(text);
  if (utf8.length === text.length) return utf8;
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

/** Which ASCII codes are RFC 9110's tchar (the characters of a method or header name). */
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  TCHAR[c.charCodeAt(0)] = 1;
}

/** Whether `text[from, to)` is a token: one or more tchar. Checked for every header name. */
function isToken(text: string, from = 0, to = text.length): boolean {
  if (to <= from) return false;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c >= 128 || TCHAR[c] === 0) return false;
  }
  return true;
}

/** Whether `text` holds a control character other than tab: never allowed in a value or target. */
function hasControl(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f) return true;
  }
  return false;
}

/** Splits header lines (from `lines[from]` on) into names and values. */
function parseHeaders(lines: string[], from: number, fail: (why: string) => Error): Header[] {
  const headers: Header[] = [];
  for (let i = from; i < lines.length; i++) {
    const line = lines[i];
    const first = line.charCodeAt(0);
    if (first === 0x20 || first === 0x09) {
      throw fail("folded header lines (starting with a space) are not allowed");
    }
    const colon = line.indexOf(":");
    if (colon <= 0 || !isToken(line, 0, colon)) {
      throw fail(`bad header line ${JSON.stringify(line.slice(0, 40))}`);
    }
    const name = line.slice(0, colon);
    const value = line.slice(colon + 1).trim();
    if (hasControl(value)) throw fail(`control character in header ${name}`);
    headers.push({ name, value });
  }
  return headers;
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
  if (parts.length !== 3 || !isToken(parts[0]) || parts[1] === "") {
    throw bad(`bad request line ${JSON.stringify(lines[0].slice(0, 60))}`);
  }
  const [method, target, version] = parts;
  if (version !== "HTTP/1.1" && version !== "HTTP/1.0") {
    throw bad(`unsupported HTTP version ${JSON.stringify(version.slice(0, 20))}`);
  }
  if (hasControl(target)) throw bad("control character in the request target");
  return { method, target, version, headers: parseHeaders(lines, 1, bad) };
}

/**
 * Parses a response head's lines.
 *
 * @throws {HttpError} 502 when the target's answer is not HTTP/1.x.
 */
export function parseResponseHead(lines: string[]): ResponseHead {
  const bad = (why: string) => new HttpError(502, `the target sent a bad response: ${why}`);
  // "HTTP/1.x NNN" and, after one more space, a reason of anything but CR (it may be empty).
  const line = lines[0];
  const version = line.slice(0, 8);
  if (
    (version !== "HTTP/1.1" && version !== "HTTP/1.0") || line.charCodeAt(8) !== 0x20 ||
    !isDigit(line, 9) || !isDigit(line, 10) || !isDigit(line, 11) ||
    (line.length > 12 && (line.charCodeAt(12) !== 0x20 || line.includes("\r", 13)))
  ) {
    throw bad(`status line ${JSON.stringify(line.slice(0, 60))}`);
  }
  return {
    version,
    status: Number(line.slice(9, 12)),
    reason: line.slice(13),
    headers: parseHeaders(lines, 1, bad),
  };
}

function isDigit(text: string, at: number): boolean {
  const c = text.charCodeAt(at);
  return c >= 0x30 && c <= 0x39;
}

/** Values of every header called `name` (any case), comma lists split and trimmed. */
export function headerList(headers: Header[], name: string): string[] {
  const lower = name.toLowerCase();
  const values: string[] = [];
  for (const h of headers) {
    if (!isNamed(h, lower)) continue;
    for (const part of h.value.split(",")) {
      const v = part.trim();
      if (v !== "") values.push(v);
    }
  }
  return values;
}

/** Whether `h` is called `lower` (given in lower case), in any case; the length is compared first. */
function isNamed(h: Header, lower: string): boolean {
  return h.name.length === lower.length && h.name.toLowerCase() === lower;
}

/** Whether a `Connection`-style list holds `token` (any case). */
export function hasToken(headers: Header[], name: string, token: string): boolean {
  const lower = name.toLowerCase();
  for (const h of headers) {
    if (!isNamed(h, lower)) continue;
    for (const part of h.value.split(",")) {
      const v = part.trim();
      if (v !== "" && v.toLowerCase() === token) return true;
    }
  }
  return false;
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
  const named = headerList(headers, "connection");
  const listed = named.length === 0 ? null : new Set(named.map((v) => v.toLowerCase()));
  const kept: Header[] = [];
  for (const h of headers) {
    const lower = h.name.toLowerCase();
    if (!HOP_BY_HOP.has(lower) && !listed?.has(lower)) kept.push(h);
  }
  return kept;
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

/** Authorities read lately, by default port and text: a client names the same few hosts again and again. */
const authorities = new Map<string, HostPort>();
/** Entries kept in `authorities` before it starts over. */
const MAX_CACHED_AUTHORITIES = 256;

/** `host[:port]` with one-line reasons; IPv6 in brackets. */
function readAuthority(text: string, defaultPort: number | undefined): HostPort {
  const key = `${defaultPort ?? ""} ${text}`;
  const known = authorities.get(key);
  if (known) return { hostname: known.hostname, port: known.port };
  if (text === "") throw new HttpError(400, "no host in the request target");
  if (text.includes("@")) throw new HttpError(400, "user names in URLs are not accepted");
  let read: HostPort;
  try {
    const { hostname, port } = parseHostPort(text, "the target", defaultPort);
    read = { hostname: hostname.toLowerCase().replace(/\.$/, ""), port };
  } catch (err) {
    throw new HttpError(400, (err as Error).message);
  }
  if (authorities.size >= MAX_CACHED_AUTHORITIES) authorities.clear();
  authorities.set(key, read);
  return { hostname: read.hostname, port: read.port };
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
  return latin1Bytes(headText(startLine, headers));
}

/**
 * Writes a head's bytes (as {@linkcode serializeHead} makes them) into the
 * start of `out`, a buffer the caller reuses, and returns how many there
 * are; `-1` when they do not fit or are not all ASCII (then use
 * `serializeHead`).
 *
 * @example
 * ```ts
 * import { encodeHead } from "./http1.ts";
 * const out = new Uint8Array(1024);
 * encodeHead("HTTP/1.1 204 No Content", [{ name: "Via", value: "1.1 lab" }], out); // 41
 * ```
 */
export function encodeHead(startLine: string, headers: Header[], out: Uint8Array): number {
  const text = headText(startLine, headers);
  const { read, written } = asciiEncoder.encodeInto(text, out);
  // Any character past ASCII takes two UTF-8 bytes: the counts part, and latin1 is needed.
  return read === text.length && written === read ? written : -1;
}

function headText(startLine: string, headers: Header[]): string {
  let text = `${startLine}\r\n`;
  for (const h of headers) text += `${h.name}: ${h.value}\r\n`;
  return `${text}\r\n`;
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
  if (framing.kind === "length" && src.buffered >= framing.bytes) {
    // The whole body is here already (a small reply): it leaves with the head in one write.
    const body = src.takeChunk(framing.bytes);
    const bytes = new Uint8Array(first.length + body.length);
    bytes.set(first);
    bytes.set(body, first.length);
    await writeAll(dst, bytes);
    return bytes.length;
  }
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
