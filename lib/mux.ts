/**
 * The little protocol that lets a connection handler run away from the
 * socket it serves: the main thread (the *host*) keeps every `Deno.TcpConn`
 * and relays bytes to the Web Worker or child process (the *guest*) that
 * runs the handler, many connections multiplexed over one link.
 *
 * Why relay instead of handing the socket over: a `Deno.Conn` cannot be
 * sent to a child process at all, and transferring `conn.readable` /
 * `conn.writable` to a Worker lost the tail of large transfers here, while
 * the end of `conn.readable` closes the whole socket (deno#27510). The host
 * therefore uses plain `read()`/`write()`/`closeWrite()` calls, and the guest
 * gets a {@linkcode RemoteConn} that behaves like the socket: `read()` returns
 * `null` after the peer half-closed, `closeWrite()` half-closes for real.
 *
 * Flow control is a credit window per direction ({@linkcode WINDOW_BYTES}):
 * the host stops reading a socket while that much waits unconsumed in the
 * guest, and a guest's `write()` waits while that much is not yet written to
 * the socket. A client that stops reading therefore stops its handler, and
 * memory stays bounded.
 *
 * The window counts what a message costs, not the payload it carries: the
 * buffer that holds the bytes (which may be larger than the bytes) plus
 * {@linkcode MESSAGE_COST_BYTES} for the message itself. Counting payload
 * alone let a client that sends 1-byte segments queue a million messages,
 * each holding a 16 KiB buffer, inside a 1 MiB "window" (1.7 GB here).
 *
 * @module
 */

import { closeQuietly, concatBytes, type Connection, writeAll } from "./net.ts";

/** Cost of unacknowledged messages allowed per connection and direction, in bytes. */
export const WINDOW_BYTES = 1024 * 1024;

/**
 * What one message costs beyond the buffer it carries: the message object,
 * its place in a queue, the buffer's own header. An estimate on the high
 * side, so that a window of 1-byte messages holds at most about a thousand.
 */
export const MESSAGE_COST_BYTES = 1024;

/**
 * What a received data message holds: its whole buffer (a view may use only
 * part of it) plus the per-message cost. Sender and receiver count alike.
 */
export function messageCost(bytes: Uint8Array): number {
  return bytes.buffer.byteLength + MESSAGE_COST_BYTES;
}

/**
 * Most bytes the host asks for per socket read when relaying: larger than a
 * handler's reads, because every chunk costs a message between threads or
 * processes, and fewer, larger messages move more bytes per second.
 */
export const RELAY_READ_BYTES = 256 * 1024;

/**
 * First read size of a relayed connection. It doubles each time a read fills
 * it, up to {@linkcode RELAY_READ_BYTES}, so a busy connection soon reads in
 * large chunks while thousands of idle ones hold 16 KiB each, not 256 KiB.
 */
const FIRST_READ_BYTES = 16 * 1024;

/** A socket read shorter than this may be held back and joined with the next ones. */
const SMALL_READ_BYTES = 1024;

/** Most bytes of small reads held back before they are sent anyway. */
const HOLD_BYTES = 16 * 1024;

/** The guest acknowledges what its handler read once this much cost piles up (or it caught up). */
const ACK_BATCH_BYTES = WINDOW_BYTES / 4;

/** How a guest finds its handler: a module URL and the exported function's name. */
export interface HandlerRef {
  /** URL of the module, usually `import.meta.url` of the script. */
  module: string;
  /** Name of the exported `ConnectionHandler`. */
  name: string;
}

/** Messages from host to guest. */
export type HostMessage =
  | { t: "init"; handler: HandlerRef; options: unknown }
  | { t: "open"; id: number; remote: Deno.NetAddr; local: Deno.NetAddr }
  | { t: "data"; id: number; bytes: Uint8Array<ArrayBuffer> }
  | { t: "eof"; id: number }
  | { t: "ack"; id: number; n: number }
  | { t: "reset"; id: number; reason: string };

/** Messages from guest to host. */
export type GuestMessage =
  | { t: "ready" }
  | { t: "failed"; reason: string }
  | { t: "log"; line: string }
  | { t: "data"; id: number; bytes: Uint8Array<ArrayBuffer> }
  | { t: "eof"; id: number }
  | { t: "ack"; id: number; n: number }
  | { t: "close"; id: number };

/** Either direction. */
export type Message = HostMessage | GuestMessage;

/** One end of a link: sends messages; the owner routes what arrives. */
export interface Link<Out extends Message> {
  /**
   * Sends a message. A Worker link takes ownership of a data message's
   * buffer (it is transferred); a child-process link copies the bytes into a
   * frame before it returns, so the sender may reuse its buffer at once.
   */
  send(message: Out): void;
  /** True when `send()` copies data bytes before returning (child processes). */
  readonly copiesData: boolean;
}

// ---------------------------------------------------------------------------
// Binary framing for child processes (Workers pass the objects as they are).
// A frame is: type (1 byte), connection id (4), payload length (4), payload.

const FRAME_HEADER_BYTES = 9;
/** Largest payload a frame may carry; anything bigger means a broken link. */
const MAX_FRAME_PAYLOAD_BYTES = 16 * 1024 * 1024;
const TYPES = [
  "init",
  "open",
  "data",
  "eof",
  "ack",
  "reset",
  "ready",
  "log",
  "close",
  "failed",
] as const;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Encodes a message as one frame. */
export function encodeFrame(message: Message): Uint8Array {
  const id = "id" in message ? message.id : 0;
  let payload: Uint8Array;
  switch (message.t) {
    case "data":
      payload = message.bytes;
      break;
    case "eof":
    case "close":
    case "ready":
      payload = new Uint8Array(0);
      break;
    case "ack":
      payload = new Uint8Array(4);
      new DataView(payload.buffer).setUint32(0, message.n);
      break;
    default: {
      const { t: _t, id: _id, ...rest } = message as Message & { id?: number };
      payload = encoder.encode(JSON.stringify(rest));
    }
  }
  const frame = new Uint8Array(FRAME_HEADER_BYTES + payload.length);
  const view = new DataView(frame.buffer);
  view.setUint8(0, TYPES.indexOf(message.t));
  view.setUint32(1, id);
  view.setUint32(5, payload.length);
  frame.set(payload, FRAME_HEADER_BYTES);
  return frame;
}

/** Frames shorter than this are joined with their neighbours into one write. */
const SMALL_FRAME_BYTES = 4 * 1024;

/**
 * Sends messages as frames through one byte stream (a child's stdin, or a
 * child's own stdout), in order, one write at a time. Runs of small frames
 * (acknowledgements, ends, the tiny data chunks of a client that sends byte
 * by byte) are joined into one write instead of a write and a promise each;
 * large data frames go out as they are, without another copy.
 */
export class FrameWriter {
  #pending: Uint8Array[] = [];
  #flushing = false;
  #broken = false;

  /**
   * @param write writes all of one buffer.
   * @param onBroken called once when a write fails (the other end is gone).
   */
  constructor(
    readonly write: (bytes: Uint8Array) => Promise<void>,
    readonly onBroken: () => void = () => {},
  ) {}

  /** Queues one message; it is written after every message queued before it. */
  send(message: Message): void {
    if (this.#broken) return;
    this.#pending.push(encodeFrame(message));
    this.#flush();
  }

  async #flush(): Promise<void> {
    if (this.#flushing) return;
    this.#flushing = true;
    const pending = this.#pending;
    try {
      while (pending.length > 0 && !this.#broken) {
        let batch = pending.shift()!;
        if (batch.length < SMALL_FRAME_BYTES && pending[0]?.length < SMALL_FRAME_BYTES) {
          const parts = [batch];
          while (pending[0]?.length < SMALL_FRAME_BYTES) parts.push(pending.shift()!);
          batch = concatBytes(parts);
        }
        await this.write(batch);
      }
    } catch {
      this.#broken = true;
      pending.length = 0;
      this.onBroken();
    } finally {
      this.#flushing = false;
    }
  }
}

/**
 * Splits a byte stream back into messages, however the pipe cut it.
 * Throws on a frame that cannot be ours (unknown type or absurd length).
 */
export class FrameDecoder {
  #buffer: Uint8Array<ArrayBuffer> = new Uint8Array(256 * 1024);
  #start = 0;
  #end = 0;

  /** Feeds bytes; returns every message completed by them. */
  push(chunk: Uint8Array): Message[] {
    this.#append(chunk);
    const out: Message[] = [];
    while (this.#end - this.#start >= FRAME_HEADER_BYTES) {
      const view = new DataView(this.#buffer.buffer, this.#start);
      const type = TYPES[view.getUint8(0)];
      const id = view.getUint32(1);
      const length = view.getUint32(5);
      if (type === undefined || length > MAX_FRAME_PAYLOAD_BYTES) {
        throw new Error("corrupt frame on the guest link");
      }
      if (this.#end - this.#start < FRAME_HEADER_BYTES + length) break;
      const from = this.#start + FRAME_HEADER_BYTES;
      const payload = this.#buffer.slice(from, from + length);
      this.#start = from + length;
      out.push(decodePayload(type, id, payload));
    }
    return out;
  }

  #append(chunk: Uint8Array): void {
    if (this.#start === this.#end) this.#start = this.#end = 0;
    if (this.#end + chunk.length > this.#buffer.length) {
      const live = this.#buffer.subarray(this.#start, this.#end);
      const size = Math.max(this.#buffer.length, (live.length + chunk.length) * 2);
      const next = size > this.#buffer.length ? new Uint8Array(size) : this.#buffer;
      next.set(live, 0);
      this.#buffer = next;
      this.#end = live.length;
      this.#start = 0;
    }
    this.#buffer.set(chunk, this.#end);
    this.#end += chunk.length;
  }
}

function decodePayload(
  type: typeof TYPES[number],
  id: number,
  payload: Uint8Array<ArrayBuffer>,
): Message {
  switch (type) {
    case "data":
      return { t: "data", id, bytes: payload };
    case "eof":
    case "close":
      return { t: type, id };
    case "ready":
      return { t: "ready" };
    case "ack":
      return { t: "ack", id, n: new DataView(payload.buffer).getUint32(0) };
    default:
      return { t: type, id, ...JSON.parse(decoder.decode(payload)) } as Message;
  }
}

// ---------------------------------------------------------------------------
// Host side: one real socket, relayed to a guest.

/**
 * Relays one accepted socket to the guest that runs its handler. `done`
 * resolves once the socket is closed, whichever side ended it.
 */
export class HostConn {
  readonly done: Promise<void>;
  #finished = false;
  #resolveDone!: () => void;
  #unacked = 0; // cost of messages sent to the guest that its handler has not read yet
  #wakeReader: (() => void) | null = null;
  #outbox: Uint8Array[] = [];
  #writing = false;
  #guestEof = false;
  #wroteEof = false;
  #guestClosed = false;
  /** Small reads held back while the guest has not caught up (see `#readLoop`). */
  #held: Uint8Array<ArrayBuffer> | null = null;
  #heldBytes = 0;

  constructor(
    readonly id: number,
    readonly conn: Connection,
    readonly link: Link<HostMessage>,
  ) {
    this.done = new Promise((resolve) => this.#resolveDone = resolve);
  }

  /** Announces the connection to the guest and starts relaying. */
  start(): void {
    this.link.send({
      t: "open",
      id: this.id,
      remote: this.conn.remoteAddr as Deno.NetAddr,
      local: this.conn.localAddr as Deno.NetAddr,
    });
    this.#readLoop();
  }

  /** Routes a guest message for this connection. */
  receive(message: GuestMessage): void {
    switch (message.t) {
      case "data":
        this.#outbox.push(message.bytes);
        break;
      case "eof":
        this.#guestEof = true;
        break;
      case "close":
        this.#guestClosed = true;
        break;
      case "ack":
        this.#unacked -= message.n;
        // The guest made progress: what was held back for it goes now.
        this.#sendHeld();
        this.#wake();
        return;
      default:
        return;
    }
    this.#pump();
  }

  /** Closes the socket (the guest died, or the server stops). */
  finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    closeQuietly(this.conn);
    this.#wake();
    this.#resolveDone();
  }

  #wake(): void {
    const wake = this.#wakeReader;
    this.#wakeReader = null;
    wake?.();
  }

  // Socket -> guest: read only while the guest has room (backpressure).
  async #readLoop(): Promise<void> {
    let size = FIRST_READ_BYTES;
    // One buffer for this direction, refilled read after read. A copying link (a child's
    // pipe) copies out of it anyway; for a Worker, a read that fills most of it hands the
    // buffer itself over (no copy) and the next read gets a fresh one, while a small read is
    // copied out so that 1 byte does not travel (and count) as a 16 KiB buffer.
    let buffer: Uint8Array<ArrayBuffer> | null = null;
    try {
      while (!this.#finished) {
        if (this.#unacked >= WINDOW_BYTES) {
          await new Promise<void>((resolve) => this.#wakeReader = resolve);
          continue;
        }
        if (buffer === null || buffer.length !== size) buffer = new Uint8Array(size);
        const n = await this.conn.read(buffer);
        if (this.#finished) return;
        if (n === null) {
          this.#sendHeld();
          this.link.send({ t: "eof", id: this.id });
          return;
        }
        // Nagle's rule, one layer up: while the guest has not yet read what we sent, a small
        // read waits to be joined with the next ones, so a client that sends byte by byte
        // costs one message per guest round trip instead of one per byte. The guest always
        // acknowledges when it has read everything, which sends what was held: a handler
        // waiting for data never waits for this.
        if (n < SMALL_READ_BYTES && this.#unacked > 0) {
          if (this.#heldBytes + n > HOLD_BYTES) this.#sendHeld();
          this.#held ??= new Uint8Array(HOLD_BYTES);
          this.#held.set(buffer.subarray(0, n), this.#heldBytes);
          this.#heldBytes += n;
          continue;
        }
        this.#sendHeld();
        const handOver = !this.link.copiesData && n * 2 >= buffer.length;
        this.#sendData(buffer.subarray(0, n), handOver);
        if (handOver) buffer = null;
        if (n === size) size = Math.min(size * 2, RELAY_READ_BYTES);
      }
    } catch (err) {
      this.#fail(err);
    }
  }

  /** Sends the small reads held back, if any, as one message. */
  #sendHeld(): void {
    if (this.#heldBytes === 0 || this.#finished) return;
    const held = this.#held!.subarray(0, this.#heldBytes);
    this.#heldBytes = 0;
    this.#sendData(held, false);
  }

  /**
   * Sends bytes to the guest and counts what the message will hold there. A
   * copying link (a child's pipe) frames the bytes at once. A Worker gets
   * `view`'s whole buffer when `handOver` says the caller is done with it,
   * else a copy of just these bytes.
   */
  #sendData(view: Uint8Array<ArrayBuffer>, handOver: boolean): void {
    if (this.link.copiesData) {
      this.#unacked += view.length + MESSAGE_COST_BYTES;
      this.link.send({ t: "data", id: this.id, bytes: view });
      return;
    }
    const bytes = handOver ? view : view.slice();
    this.#unacked += messageCost(bytes);
    this.link.send({ t: "data", id: this.id, bytes });
  }

  // Guest -> socket, in order; each write is acknowledged once done.
  async #pump(): Promise<void> {
    if (this.#writing || this.#finished) return;
    this.#writing = true;
    try {
      let written = 0; // cost of messages written to the socket, not yet acknowledged
      while (!this.#finished) {
        const chunk = this.#outbox.shift();
        if (chunk) {
          await writeAll(this.conn, chunk);
          written += messageCost(chunk);
          // One acknowledgement per batch, or whenever the guest may be waiting for room.
          if (written >= ACK_BATCH_BYTES || this.#outbox.length === 0) {
            this.link.send({ t: "ack", id: this.id, n: written });
            written = 0;
          }
        } else if (this.#guestEof && !this.#wroteEof) {
          this.#wroteEof = true;
          await this.conn.closeWrite();
        } else {
          if (this.#guestClosed) this.finish();
          break;
        }
      }
    } catch (err) {
      this.#fail(err);
    } finally {
      this.#writing = false;
    }
  }

  #fail(err: unknown): void {
    if (this.#finished) return;
    const reason = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    this.link.send({ t: "reset", id: this.id, reason });
    this.finish();
  }
}

// ---------------------------------------------------------------------------
// Guest side: what the handler holds instead of a socket.

/**
 * Stands in for a `Deno.TcpConn` inside a Worker or child process. Reads
 * come from the host's relay; writes go back to it and wait while the
 * window is full.
 */
export class RemoteConn implements Connection {
  #chunks: Uint8Array[] = [];
  /** For each queued chunk, what its message costs beyond its bytes (credited when it is used up). */
  #extra: number[] = [];
  #eof = false;
  #error: Error | null = null;
  #closed = false;
  #wroteEof = false;
  #unacked = 0; // cost of data sent to the host that it has not written to the socket yet
  #consumed = 0; // cost of data read by the handler, not yet acknowledged to the host
  #wakeRead: (() => void) | null = null;
  #wakeWrite: (() => void) | null = null;

  constructor(
    readonly id: number,
    readonly remoteAddr: Deno.NetAddr,
    readonly localAddr: Deno.NetAddr,
    readonly link: Link<GuestMessage>,
  ) {}

  /** Routes a host message for this connection. */
  receive(message: HostMessage): void {
    switch (message.t) {
      case "data":
        this.#chunks.push(message.bytes);
        this.#extra.push(messageCost(message.bytes) - message.bytes.length);
        break;
      case "eof":
        this.#eof = true;
        break;
      case "ack":
        this.#unacked -= message.n;
        break;
      case "reset":
        this.#error ??= new Deno.errors.ConnectionReset(message.reason);
        break;
    }
    this.#wakeAll();
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (true) {
      if (this.#closed) throw new Deno.errors.BadResource("connection is closed");
      const head = this.#chunks[0];
      if (head) {
        const n = Math.min(p.length, head.length);
        p.set(head.subarray(0, n));
        this.#consumed += n;
        if (n === head.length) {
          this.#chunks.shift();
          this.#consumed += this.#extra.shift()!;
        } else {
          this.#chunks[0] = head.subarray(n);
        }
        if (this.#consumed >= ACK_BATCH_BYTES || this.#chunks.length === 0) {
          this.link.send({ t: "ack", id: this.id, n: this.#consumed });
          this.#consumed = 0;
        }
        return n;
      }
      if (this.#error) throw this.#error;
      if (this.#eof) return null;
      await new Promise<void>((resolve) => this.#wakeRead = resolve);
    }
  }

  async write(p: Uint8Array): Promise<number> {
    while (this.#unacked >= WINDOW_BYTES && !this.#error && !this.#closed) {
      await new Promise<void>((resolve) => this.#wakeWrite = resolve);
    }
    if (this.#error) throw this.#error;
    if (this.#closed) throw new Deno.errors.BadResource("connection is closed");
    if (this.#wroteEof) throw new Deno.errors.BrokenPipe("write after closeWrite()");
    if (p.length === 0) return 0;
    // Like a socket, take at most one message's worth; writeAll() loops for the rest.
    const part = p.length > RELAY_READ_BYTES ? p.subarray(0, RELAY_READ_BYTES) : p;
    // The host will hold exactly these bytes (a child's frame is decoded into its own buffer).
    this.#unacked += part.length + MESSAGE_COST_BYTES;
    const bytes = this.link.copiesData ? part as Uint8Array<ArrayBuffer> : part.slice();
    this.link.send({ t: "data", id: this.id, bytes });
    return part.length;
  }

  closeWrite(): Promise<void> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("connection is closed"));
    if (!this.#wroteEof) {
      this.#wroteEof = true;
      this.link.send({ t: "eof", id: this.id });
    }
    return Promise.resolve();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.link.send({ t: "close", id: this.id });
    this.#wakeAll();
  }

  /** Whether `close()` ran (the guest sends `close` once per connection). */
  get closed(): boolean {
    return this.#closed;
  }

  #wakeAll(): void {
    const read = this.#wakeRead;
    const write = this.#wakeWrite;
    this.#wakeRead = this.#wakeWrite = null;
    read?.();
    write?.();
  }
}
