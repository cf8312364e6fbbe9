/**
 * A line reader for newline-delimited protocols (the P2P tracker's JSON
 * messages, a peer's file request and its `Content-Length:` header) whose
 * memory stays bounded whatever the other side sends.
 *
 * It reads straight from a {@linkcode Reader} with `read()` (never
 * `conn.readable`, see `net.ts`), hands back one UTF-8 line at a time, and
 * gives up with {@linkcode LineTooLongError} as soon as a line grows past its
 * limit: a 64 MiB line without a newline costs at most the limit plus one
 * read, not 64 MiB. Bytes that arrived after the last line stay available
 * through `takeBuffered()`, so a peer can go on reading a file body.
 *
 * @example
 * ```ts
 * import { LineReader } from "./lines.ts";
 * const conn = await Deno.connect({ hostname: "127.0.0.1", port: 9000 });
 * const lines = new LineReader(conn, 1024 * 1024);
 * const reply = await lines.readLine(); // null once the tracker hung up
 * ```
 * @module
 */

import { READ_BUFFER_BYTES, type Reader } from "./net.ts";

/** First buffer size: most lines are short, and a tracker keeps one reader per peer. */
const INITIAL_BUFFER_BYTES = 4 * 1024; // bytes

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;

/** A line was longer than the reader's limit; the rest of the stream is not trustworthy. */
export class LineTooLongError extends Error {
  override name = "LineTooLongError";
  /** The limit that was exceeded, in bytes. */
  readonly maxLineBytes: number;
  constructor(maxLineBytes: number) {
    super(`line longer than ${maxLineBytes} bytes`);
    this.maxLineBytes = maxLineBytes;
  }
}

/**
 * Reads lines ending in `\n` (a `\r` before it is dropped too) from a byte
 * source, holding at most `maxLineBytes` plus one read in memory.
 */
export class LineReader {
  #src: Reader;
  #maxLineBytes: number;
  #buffer: Uint8Array;
  /** Unconsumed bytes are `#buffer[#start, #end)`. */
  #start = 0;
  #end = 0;
  /** Bytes before `#scanned` (counted from `#start`) hold no newline. */
  #scanned = 0;
  #eof = false;
  #decoder = new TextDecoder("utf-8", { fatal: true });

  /**
   * @param src where the bytes come from (a `Deno.Conn`, a `Connection`)
   * @param maxLineBytes the longest line accepted, newline not counted
   */
  constructor(src: Reader, maxLineBytes: number) {
    if (!Number.isSafeInteger(maxLineBytes) || maxLineBytes < 1) {
      throw new RangeError(`maxLineBytes must be a positive whole number, got ${maxLineBytes}`);
    }
    this.#src = src;
    this.#maxLineBytes = maxLineBytes;
    this.#buffer = new Uint8Array(Math.min(INITIAL_BUFFER_BYTES, this.#capacityLimit()));
  }

  /** Bytes read from the source but not yet handed out. */
  get bufferedBytes(): number {
    return this.#end - this.#start;
  }

  /**
   * Resolves with the next line without its `\n` (and without a `\r` just
   * before it), decoded as UTF-8. At the end of the stream it resolves with
   * the unterminated rest if there is one, then with `null`.
   *
   * @throws {LineTooLongError} when the line exceeds `maxLineBytes`.
   * @throws {TypeError} when the line is not valid UTF-8.
   */
  async readLine(): Promise<string | null> {
    while (true) {
      const pending = this.#buffer.subarray(this.#start, this.#end);
      const at = pending.indexOf(NEWLINE, this.#scanned);
      if (at >= 0) {
        this.#start += at + 1;
        this.#scanned = 0;
        return this.#decode(pending.subarray(0, at));
      }
      this.#scanned = pending.length;
      // One spare byte: a line of exactly the limit may still end in "\r\n".
      if (pending.length > this.#maxLineBytes + 1) {
        throw new LineTooLongError(this.#maxLineBytes);
      }
      if (this.#eof) {
        if (pending.length === 0) return null;
        this.#start = this.#end;
        this.#scanned = 0;
        return this.#decode(pending);
      }
      await this.#fill();
    }
  }

  /**
   * Hands over (and forgets) every byte read past the last line: the start
   * of whatever follows the lines, such as a file body after its
   * `Content-Length:` header. Read the rest from the source itself.
   */
  takeBuffered(): Uint8Array {
    const rest = this.#buffer.slice(this.#start, this.#end);
    this.#start = this.#end = this.#scanned = 0;
    return rest;
  }

  #decode(bytes: Uint8Array): string {
    if (bytes.length > 0 && bytes[bytes.length - 1] === CARRIAGE_RETURN) {
      bytes = bytes.subarray(0, bytes.length - 1);
    }
    if (bytes.length > this.#maxLineBytes) throw new LineTooLongError(this.#maxLineBytes);
    try {
      return this.#decoder.decode(bytes);
    } catch {
      throw new TypeError("line is not valid UTF-8");
    }
  }

  /** The largest buffer ever needed: a full line, its "\r", and one read. */
  #capacityLimit(): number {
    return this.#maxLineBytes + 1 + READ_BUFFER_BYTES;
  }

  /** Reads once more from the source, making room first. */
  async #fill(): Promise<void> {
    if (this.#start > 0) {
      // Move the unfinished line to the front so the free space is in one piece.
      this.#buffer.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    if (this.#end === this.#buffer.length) {
      const bigger = new Uint8Array(Math.min(this.#buffer.length * 2, this.#capacityLimit()));
      bigger.set(this.#buffer.subarray(0, this.#end));
      this.#buffer = bigger;
    }
    const free = this.#buffer.subarray(
      this.#end,
      Math.min(this.#buffer.length, this.#end + READ_BUFFER_BYTES),
    );
    const n = await this.#src.read(free);
    if (n === null) this.#eof = true;
    else this.#end += n;
  }
}
