/**
 * The relay between the main thread and a Worker or child (`lib/mux.ts`),
 * tested without threads, processes or sockets: a {@linkcode HostConn} on an
 * in-memory socket, a {@linkcode RemoteConn} for the guest, and two in-memory
 * links whose messages the test delivers itself, so every run is the same.
 */

import assert from "node:assert/strict";
import {
  encodeFrame,
  FrameDecoder,
  type GuestMessage,
  HostConn,
  type HostMessage,
  type Link,
  MESSAGE_COST_BYTES,
  RemoteConn,
  WINDOW_BYTES,
} from "../lib/mux.ts";
import { concatBytes, type Connection, writeAll } from "../lib/net.ts";

const ADDR: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: 1 };

/**
 * A socket in memory: the test queues what the client "sends" (one segment
 * per `read()`), and sees what the server wrote, in order with its
 * half-close and close. `stall()` makes writes wait, like a client that
 * stopped reading once the kernel's buffers are full.
 */
class MemorySocket implements Connection {
  readonly remoteAddr = ADDR;
  readonly localAddr = ADDR;
  /** What happened on the write side, in order: written chunks, then "closeWrite", "close". */
  readonly events: (Uint8Array | "closeWrite" | "close")[] = [];
  reads = 0;
  bytesRead = 0;
  #segments: Uint8Array[] = [];
  /** Segments still to come from `sendMany()`: how many, and their size. */
  #many = { left: 0, size: 0 };
  #ended = false;
  #error: Error | null = null;
  #closed = false;
  #stalled = false;
  #wake: (() => void) | null = null;
  #unstall: (() => void) | null = null;

  /** Queues segments the client sends. */
  send(...segments: Uint8Array[]): void {
    for (const segment of segments) this.#segments.push(segment);
    this.#poke();
  }
  /** Queues `count` segments of `size` bytes (byte i of the stream is `i & 0xff`), cheaply. */
  sendMany(count: number, size: number): void {
    this.#many = { left: count, size };
    this.#poke();
  }
  #next = 0; // the stream position of the next byte from sendMany()
  /** The client half-closes. */
  end(): void {
    this.#ended = true;
    this.#poke();
  }
  /** The client resets the connection. */
  reset(): void {
    this.#error = new Deno.errors.ConnectionReset("Connection reset by peer (os error 104)");
    this.#poke();
  }
  stall(): void {
    this.#stalled = true;
  }
  unstall(): void {
    this.#stalled = false;
    this.#unstall?.();
  }
  get closed(): boolean {
    return this.#closed;
  }
  /** Every byte written, joined. */
  written(): Uint8Array {
    return concatBytes(this.events.filter((e): e is Uint8Array => typeof e !== "string"));
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (true) {
      if (this.#closed) throw new Deno.errors.BadResource("closed");
      if (this.#error) throw this.#error;
      const head = this.#segments[0];
      if (head) {
        this.reads++;
        const n = Math.min(p.length, head.length);
        this.bytesRead += n;
        p.set(head.subarray(0, n));
        if (n === head.length) this.#segments.shift();
        else this.#segments[0] = head.subarray(n);
        return n;
      }
      if (this.#many.left > 0) {
        this.reads++;
        this.#many.left--;
        const n = Math.min(p.length, this.#many.size);
        for (let i = 0; i < n; i++) p[i] = (this.#next + i) & 0xff;
        this.#next += n;
        this.bytesRead += n;
        return n;
      }
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  async write(p: Uint8Array): Promise<number> {
    while (this.#stalled && !this.#closed) {
      await new Promise<void>((resolve) => this.#unstall = resolve);
    }
    if (this.#closed) throw new Deno.errors.BadResource("closed");
    this.events.push(p.slice());
    return p.length;
  }

  closeWrite(): Promise<void> {
    this.events.push("closeWrite");
    return Promise.resolve();
  }

  close(): void {
    if (this.#closed) throw new Deno.errors.BadResource("closed twice");
    this.#closed = true;
    this.events.push("close");
    this.#poke();
    this.#unstall?.();
  }

  #poke(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}

/** Lets pending promises and zero-delay timers run. */
function tick(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/**
 * A host connection and its guest over in-memory links. Nothing moves
 * between them until `deliver()`, which carries messages both ways until
 * neither side has anything more to say. With `copiesData`, messages go
 * through the binary framing, as to a child process.
 */
function relayPair(copiesData: boolean) {
  const socket = new MemorySocket();
  const toGuest: HostMessage[] = [];
  const toHost: GuestMessage[] = [];
  const sent = { data: 0, acks: 0, dataToHost: 0, acksToGuest: 0 };
  const framed = <M>(queue: M[]) => {
    const decoder = new FrameDecoder();
    return (message: M) => {
      if (copiesData) queue.push(...decoder.push(encodeFrame(message as HostMessage)) as M[]);
      else queue.push(message);
    };
  };
  const pushToGuest = framed(toGuest);
  const pushToHost = framed(toHost);
  const hostLink: Link<HostMessage> = {
    copiesData,
    send(message) {
      if (message.t === "data") sent.data++;
      if (message.t === "ack") sent.acksToGuest++;
      pushToGuest(message);
    },
  };
  const guestLink: Link<GuestMessage> = {
    copiesData,
    send(message) {
      if (message.t === "ack") sent.acks++;
      if (message.t === "data") sent.dataToHost++;
      pushToHost(message);
    },
  };
  const host = new HostConn(7, socket, hostLink);
  let guest: RemoteConn | null = null;
  return {
    socket,
    host,
    sent,
    guest: () => guest!,
    /** Messages waiting for the guest (queued by the host, not delivered). */
    pendingForGuest: () => toGuest.length,
    async deliver(): Promise<void> {
      for (let quiet = 0; quiet < 3;) {
        await tick();
        if (toGuest.length === 0 && toHost.length === 0) {
          quiet++;
          continue;
        }
        quiet = 0;
        for (const m of toGuest.splice(0)) {
          if (m.t === "open") guest = new RemoteConn(m.id, m.remote, m.local, guestLink);
          else guest!.receive(m);
        }
        for (const m of toHost.splice(0)) host.receive(m);
      }
    },
  };
}

/** Reads from the guest's connection until `null`, delivering messages between reads. */
async function readAll(pair: ReturnType<typeof relayPair>, bufferBytes = 64 * 1024) {
  const parts: Uint8Array[] = [];
  const buffer = new Uint8Array(bufferBytes);
  while (true) {
    const reading = pair.guest().read(buffer);
    await pair.deliver();
    const n = await reading;
    if (n === null) return concatBytes(parts);
    parts.push(buffer.slice(0, n));
  }
}

/** Reads from the guest's connection until `count` bytes have come. */
async function readSome(pair: ReturnType<typeof relayPair>, count: number) {
  const parts: Uint8Array[] = [];
  const buffer = new Uint8Array(64 * 1024);
  let total = 0;
  while (total < count) {
    const reading = pair.guest().read(buffer);
    await pair.deliver();
    const n = await reading;
    if (n === null) break;
    parts.push(buffer.slice(0, n));
    total += n;
  }
  return concatBytes(parts);
}

function bytesOf(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

for (const copiesData of [false, true]) {
  const kind = copiesData ? "child-process link" : "Worker link";

  Deno.test(`mux (${kind}): 1-byte segments to a guest that never reads: one window taken, in few messages`, async () => {
    const pair = relayPair(copiesData);
    pair.host.start();
    // Two million one-byte segments, and a guest that never reads.
    pair.socket.sendMany(2_000_000, 1);
    await pair.deliver();
    // Small reads are joined while the guest is behind, and the host stops taking once the
    // messages in flight cost a window: what the relay holds is bounded by cost, not count.
    const taken = pair.socket.bytesRead;
    assert.ok(taken <= WINDOW_BYTES + 16 * 1024, `${taken} bytes taken`);
    assert.ok(taken >= WINDOW_BYTES / 2, `${taken} bytes taken: the window was not used`);
    const most = Math.ceil(WINDOW_BYTES / (16 * 1024)) + 2;
    assert.ok(pair.sent.data <= most, `${pair.sent.data} messages for ${taken} bytes`);
    pair.host.finish();
    await pair.host.done;
  });

  Deno.test(`mux (${kind}): a small read reaches a waiting guest at once; one held back follows its ack`, async () => {
    const pair = relayPair(copiesData);
    pair.host.start();
    const text = (s: string) => new TextEncoder().encode(s);
    pair.socket.send(text("a"));
    await pair.deliver();
    assert.equal(pair.sent.data, 1, "the first small read went at once");
    // The guest has not read "a" yet: "b" and "c" wait, joined, for its acknowledgement.
    pair.socket.send(text("b"), text("c"));
    await pair.deliver();
    assert.equal(pair.sent.data, 1);
    const got = new TextDecoder().decode(await readSome(pair, 3));
    assert.equal(got, "abc");
    assert.equal(pair.sent.data, 2);
    // Caught up: the next small read goes at once again.
    pair.socket.send(text("d"));
    await pair.deliver();
    assert.equal(pair.sent.data, 3);
    pair.host.finish();
    await pair.host.done;
  });

  Deno.test(`mux (${kind}): a stream of 1-byte segments arrives whole and in order`, async () => {
    const pair = relayPair(copiesData);
    pair.host.start();
    pair.socket.sendMany(200_000, 1);
    pair.socket.end();
    await pair.deliver();
    const got = await readAll(pair, 1000);
    assert.equal(got.length, 200_000);
    assert.ok(got.every((b, i) => b === (i & 0xff)), "bytes out of order");
    assert.ok(pair.sent.data < 20_000, `${pair.sent.data} messages for 200,000 segments`);
    pair.guest().close();
    await pair.deliver();
    await pair.host.done;
  });

  Deno.test(`mux (${kind}): 64 KiB segments stop at the window too, and flow again as the guest reads`, async () => {
    const pair = relayPair(copiesData);
    pair.host.start();
    const data = bytesOf(8 * 1024 * 1024);
    for (let at = 0; at < data.length; at += 64 * 1024) {
      pair.socket.send(data.subarray(at, at + 64 * 1024));
    }
    pair.socket.end();
    await pair.deliver();
    // What the host took off the socket before the guest read anything: one window, at most
    // one read more.
    const taken = pair.socket.bytesRead;
    assert.ok(taken <= WINDOW_BYTES + 64 * 1024, `${taken} bytes taken before the guest read`);
    assert.ok(taken >= WINDOW_BYTES / 2, `${taken} bytes: the window was not used`);

    const got = await readAll(pair);
    assert.deepEqual(got, data);
    // Acknowledgements come in batches: far fewer than the data messages they answer.
    assert.ok(
      pair.sent.acks <= pair.sent.data / 2,
      `${pair.sent.acks} acks for ${pair.sent.data} data messages`,
    );
    pair.guest().close();
    await pair.deliver();
    await pair.host.done;
    assert.equal(pair.socket.closed, true);
  });

  Deno.test(`mux (${kind}): a reply written after the client's half-close arrives before our half-close`, async () => {
    const pair = relayPair(copiesData);
    pair.host.start();
    pair.socket.send(new TextEncoder().encode("hello"));
    pair.socket.end();
    await pair.deliver();
    const guest = pair.guest();
    const got = await readAll(pair);
    assert.equal(new TextDecoder().decode(got), "hello");
    // The guest answers only now, after the client finished sending.
    await writeAll(guest, new TextEncoder().encode("HELLO"));
    await writeAll(guest, bytesOf(300 * 1024));
    await guest.closeWrite();
    guest.close();
    await pair.deliver();
    await pair.host.done;
    const kinds = pair.socket.events.map((e) => typeof e === "string" ? e : "data");
    assert.deepEqual(kinds.slice(-2), ["closeWrite", "close"]);
    assert.deepEqual(
      pair.socket.written(),
      concatBytes([new TextEncoder().encode("HELLO"), bytesOf(300 * 1024)]),
    );
  });

  Deno.test(`mux (${kind}): a client that never reads stops the guest's writes at the window`, async () => {
    const pair = relayPair(copiesData);
    pair.host.start();
    pair.socket.stall();
    await pair.deliver();
    const guest = pair.guest();
    // The handler writes 1-byte chunks as fast as it can; the socket takes nothing.
    let written = 0;
    let blocked = false;
    for (let i = 0; i < 100_000 && !blocked; i++) {
      let done = false;
      const write = guest.write(Uint8Array.of(i & 0xff)).then(() => {
        written++;
        done = true;
      });
      // A write with room in the window completes within a few microtasks.
      for (let turn = 0; turn < 20 && !done; turn++) await Promise.resolve();
      blocked = !done;
      if (blocked) {
        await pair.deliver();
        assert.equal(done, false, "the write went through although the socket takes nothing");
        // Let the socket drain: the blocked write completes and nothing was lost.
        pair.socket.unstall();
        await pair.deliver();
        await write;
      }
    }
    assert.ok(blocked, "the guest's writes never waited");
    const most = Math.ceil(WINDOW_BYTES / (1 + MESSAGE_COST_BYTES)) + 1;
    assert.ok(written <= most, `${written} writes went out before waiting, at most ${most}`);
    await pair.deliver();
    assert.equal(pair.socket.written().length, written);
    guest.close();
    await pair.deliver();
    await pair.host.done;
  });

  Deno.test(`mux (${kind}): a client reset mid-transfer reaches the handler as an error, not a hang`, async () => {
    const pair = relayPair(copiesData);
    pair.host.start();
    pair.socket.send(bytesOf(10_000));
    await pair.deliver();
    pair.socket.reset();
    await pair.deliver();
    await pair.host.done;
    const guest = pair.guest();
    const buffer = new Uint8Array(64 * 1024);
    // What arrived before the reset is still readable; then the reset.
    assert.equal(await guest.read(buffer), 10_000);
    await assert.rejects(() => guest.read(buffer), Deno.errors.ConnectionReset);
    await assert.rejects(() => guest.write(Uint8Array.of(1)), Deno.errors.ConnectionReset);
    assert.equal(pair.socket.closed, true);
  });

  Deno.test(`mux (${kind}): a guest that dies mid-transfer closes the socket and ends the relay`, async () => {
    const pair = relayPair(copiesData);
    pair.host.start();
    pair.socket.send(bytesOf(3 * 1024 * 1024));
    await pair.deliver();
    const guest = pair.guest();
    await guest.write(bytesOf(100));
    // The guest is gone before reading or finishing: the pool calls finish().
    pair.host.finish();
    await pair.host.done;
    assert.equal(pair.socket.closed, true);
    // Late messages from the dead guest change nothing.
    await pair.deliver();
    pair.host.receive({ t: "data", id: 7, bytes: new Uint8Array(10) });
    pair.host.receive({ t: "close", id: 7 });
    await pair.deliver();
    assert.equal(pair.socket.events.filter((e) => e === "close").length, 1);
  });
}
