/**
 * A peer on the tracker's own host (issue 9, item 7), in the pure tracker
 * state: the tracker sees it on `127.0.0.1`, which a peer on another host
 * would take for itself, so that peer is shown the tracker's own address as
 * it reached it instead; peers on loopback still see `127.0.0.1`. The cached
 * encodings stay right and few. Connections are plain `Link` objects; the
 * end-to-end case across network namespaces is in `p2p_netns_test.ts`.
 */

import assert from "node:assert/strict";
import { encodeJson, type FileInfo, type PeerMessage } from "../p2p/protocol.ts";
import {
  isLoopbackIp,
  type Link,
  type Now,
  ownAddressFor,
  TrackerState,
  type ViewEntry,
} from "../p2p/tracker_state.ts";

const MTIME = 1_700_000_000; // seconds: an ordinary file time
const TIMEOUT_MS = 180_000; // the course's peer timeout
const OWN = "10.0.0.1"; // the tracker's address on the LAN
const SHA = "a".repeat(64); // a made-up SHA-256

/** A moment `ms` after the start, on both clocks. */
function at(ms: number): Now {
  return { wall: 1_800_000_000_000 + ms, mono: ms };
}

/** A connection from `ip` that reached the tracker at `localIp`. */
function link(ip: string, localIp: string): Link {
  return { ip, localIp, lastFiles: null };
}

function file(name: string, extra: Partial<FileInfo> = {}): FileInfo {
  return { name, mtime: MTIME, ...extra };
}

/** The reply as it goes on the wire to `to`, parsed. */
function replyTo(
  state: TrackerState,
  to: Link,
  features?: string[],
): Record<string, ViewEntry> {
  const own = ownAddressFor(to);
  const encoded = state.encodedDirectory(features, own);
  const line = new TextDecoder().decode(concat(encoded.parts));
  // The wire bytes are the plain-data view, as json.dumps would write it.
  assert.equal(line, encodeJson(state.directoryFor(features, own)) + "\n");
  return JSON.parse(line);
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/** `ip:port` of an entry's shown holder, then of each listed holder. */
function where(entry: ViewEntry | undefined): string[] {
  assert.ok(entry && "ip" in entry, `an entry with an address: ${JSON.stringify(entry)}`);
  return [`${entry.ip}:${entry.port}`, ...(entry.holders ?? []).map((h) => `${h.ip}:${h.port}`)];
}

/**
 * Peer A beside the tracker (127.0.0.1:8000) holding `a.txt` and `both.txt`,
 * peer B on another host (10.0.0.3:8001) holding `b.txt` and `both.txt`.
 */
function swarm(features?: string[]) {
  const state = new TrackerState({ peerTimeoutMs: TIMEOUT_MS, quiet: true });
  const a = link("127.0.0.1", "127.0.0.1");
  const b = link("10.0.0.3", OWN);
  const extra = (id: string): Partial<PeerMessage> => features ? { id, features } : {};
  const hashed = { size: 5, sha256: SHA };
  state.apply(
    a,
    { port: 8000, files: [file("a.txt"), file("both.txt", hashed)], ...extra("AAAAAAA") },
    at(0),
  );
  state.apply(
    b,
    { port: 8001, files: [file("b.txt"), file("both.txt", hashed)], ...extra("BBBBBBB") },
    at(1),
  );
  return { state, a, b };
}

Deno.test("ownAddressFor() gives the tracker's own address only to a peer off loopback", () => {
  assert.equal(ownAddressFor(link("10.0.0.3", OWN)), OWN);
  assert.equal(ownAddressFor(link("fd00::3", "fd00::1")), "fd00::1");
  for (const ip of ["127.0.0.1", "127.5.6.7", "::1", "::ffff:127.0.0.1"]) {
    assert.ok(isLoopbackIp(ip), ip);
    assert.equal(ownAddressFor(link(ip, ip)), undefined, ip);
  }
  // Local end unknown, or itself loopback: nothing better to offer.
  assert.equal(ownAddressFor({ ip: "10.0.0.3", lastFiles: null }), undefined);
  assert.equal(ownAddressFor(link("10.0.0.3", "127.0.0.1")), undefined);
  for (const ip of ["10.0.0.1", "128.0.0.1", "::2", "::ffff:10.0.0.1", "1127.0.0.1"]) {
    assert.ok(!isLoopbackIp(ip), ip);
  }
});

for (const features of [undefined, ["versions"]]) {
  const view = features ? "the versions view" : "the course's view";
  Deno.test(`TrackerState shows a loopback holder at the tracker's own address to a peer on another host (${view})`, () => {
    const { state, a, b } = swarm(features);
    // B, on another host, is told A is at the address B reached the tracker on.
    const toB = replyTo(state, b, features);
    assert.deepEqual(where(toB["a.txt"]), [`${OWN}:8000`, `${OWN}:8000`]);
    assert.deepEqual(where(toB["both.txt"]), [`${OWN}:8000`, `${OWN}:8000`, "10.0.0.3:8001"]);
    assert.deepEqual(where(toB["b.txt"]), ["10.0.0.3:8001", "10.0.0.3:8001"]);
    // A, beside the tracker, sees the loopback address as before.
    const toA = replyTo(state, a, features);
    assert.deepEqual(where(toA["a.txt"]), ["127.0.0.1:8000", "127.0.0.1:8000"]);
    assert.deepEqual(where(toA["both.txt"]), [
      "127.0.0.1:8000",
      "127.0.0.1:8000",
      "10.0.0.3:8001",
    ]);
    // Nothing else in an entry changes, and the state's own records keep the real address.
    const { ip: _shown, holders: _listed, ...rest } = toB["both.txt"] as Record<string, unknown>;
    const { ip: _real, holders: _real2, ...restA } = toA["both.txt"] as Record<string, unknown>;
    assert.deepEqual(rest, restA);
    assert.equal(state.directory()["a.txt"].ip, "127.0.0.1");
  });
}

Deno.test("TrackerState keeps the own-address reply cached, and shares the usual one while no peer is on loopback", () => {
  const state = new TrackerState({ peerTimeoutMs: TIMEOUT_MS, quiet: true });
  const b = link("10.0.0.3", OWN);
  const c = link("10.0.0.4", OWN);
  state.apply(b, { port: 8001, files: [file("b.txt")] }, at(0));
  // No peer on loopback: B gets the very reply a loopback peer would.
  assert.equal(state.encodedDirectory(undefined, OWN), state.encodedDirectory());

  const a = link("127.0.0.1", "127.0.0.1");
  state.apply(a, { port: 8000, files: [file("a.txt")] }, at(1));
  assert.deepEqual(where(replyTo(state, b)["a.txt"]), [`${OWN}:8000`, `${OWN}:8000`]);
  // Two peers that reached the same address share one encoding until something changes.
  assert.equal(state.encodedDirectory(undefined, OWN), state.encodedDirectory(undefined, OWN));
  assert.notEqual(state.encodedDirectory(undefined, OWN), state.encodedDirectory());
  assert.deepEqual(where(replyTo(state, c)["a.txt"]), [`${OWN}:8000`, `${OWN}:8000`]);
  // A change to A's files reaches the own-address view too.
  state.apply(a, { port: 8000, files: [file("a.txt"), file("new.txt")] }, at(2));
  assert.deepEqual(where(replyTo(state, b)["new.txt"]), [`${OWN}:8000`, `${OWN}:8000`]);

  // Every own address gets its view, and dropping the oldest of many keeps every reply right.
  for (let round = 0; round < 2; round++) {
    for (let i = 1; i <= 12; i++) {
      const lan = link("192.168.0.200", `192.168.0.${i}`);
      assert.deepEqual(where(replyTo(state, lan)["a.txt"]), [
        `192.168.0.${i}:8000`,
        `192.168.0.${i}:8000`,
      ]);
    }
  }

  // A expires: back to the one shared reply.
  state.apply(b, { port: 8001 }, at(TIMEOUT_MS));
  state.sweep(at(TIMEOUT_MS + 10), []);
  assert.equal(state.directory()["a.txt"], undefined);
  assert.equal(state.encodedDirectory(undefined, OWN), state.encodedDirectory());
});

Deno.test("TrackerState.handOutNotices() says once per own address that a loopback peer is shown there", () => {
  const state = new TrackerState({ peerTimeoutMs: TIMEOUT_MS, quiet: true });
  const a = link("127.0.0.1", "127.0.0.1");
  state.apply(a, { port: 8000, files: [] }, at(0));
  // Nothing to hand out yet, and nothing for a peer on loopback.
  assert.deepEqual(state.handOutNotices(OWN), []);
  state.apply(a, { port: 8000, files: [file("a.txt")] }, at(1));
  assert.deepEqual(state.handOutNotices(undefined), []);
  assert.deepEqual(state.handOutNotices(OWN), [
    `peer 127.0.0.1:8000 is on this host's loopback: peers on other hosts are told ${OWN}:8000, ` +
    `where they reached the tracker (it must serve files there too, not only on 127.0.0.1)`,
  ]);
  assert.deepEqual(state.handOutNotices(OWN), []);
  assert.equal(state.handOutNotices("fd00::1").length, 1);
  assert.match(state.handOutNotices("192.168.0.1")[0], /told 192\.168\.0\.1:8000/);
});
