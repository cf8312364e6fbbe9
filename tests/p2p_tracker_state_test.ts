/**
 * The tracker's rules (`p2p/tracker_state.ts`), case by case without
 * sockets: which version each directory entry names, how a file list
 * replaces the last one, one connection standing for one peer, and expiry
 * moving an entry to the next holder. Connections are plain `Link` objects
 * and the time is passed in, so expiry needs no waiting.
 */

import assert from "node:assert/strict";
import { encodeJson, type FileInfo } from "../p2p/protocol.ts";
import {
  type Link,
  MAX_LISTED_HOLDERS,
  type Now,
  peerIp,
  TrackerState,
} from "../p2p/tracker_state.ts";

const MTIME = 1_700_000_000; // seconds: an ordinary file time
const TIMEOUT_MS = 180_000; // the course's peer timeout

/** A moment `ms` after the start, on both clocks. */
function at(ms: number): Now {
  return { wall: 1_800_000_000_000 + ms, mono: ms };
}

function link(ip: string): Link {
  return { ip, lastFiles: null };
}

function file(name: string, mtime = MTIME, extra: Partial<FileInfo> = {}): FileInfo {
  return { name, mtime, ...extra };
}

/** The directory's entries as `ip:port` of the chosen holder, by name. */
function chosen(state: TrackerState): Record<string, string> {
  return Object.fromEntries(
    Object.entries(state.directory()).map(([name, e]) => [name, `${e.ip}:${e.port}`]),
  );
}

Deno.test("TrackerState.apply() lists a joining peer's files and says who joined", () => {
  const state = new TrackerState({ peerTimeoutMs: TIMEOUT_MS });
  const said = state.apply(
    link("10.0.0.2"),
    { port: 8001, files: [file("a.txt", MTIME, { size: 3 }), file("b.txt")] },
    at(0),
  );
  assert.deepEqual(said, ["peer 10.0.0.2:8001 joined with 2 files"]);
  assert.deepEqual(state.directory()["a.txt"], {
    ip: "10.0.0.2",
    port: 8001,
    mtime: MTIME,
    size: 3,
    holders: [{ ip: "10.0.0.2", port: 8001, mtime: MTIME }],
  });
  assert.equal(state.counters.peersJoined, 1);
  assert.equal(state.counters.fileLists, 1);
});

Deno.test("TrackerState: the newest mtime wins; of equal ones the first announced, the others listed after it", () => {
  const state = new TrackerState({ peerTimeoutMs: TIMEOUT_MS });
  state.apply(link("10.0.0.2"), { port: 8001, files: [file("a.txt"), file("b.txt")] }, at(0));
  state.apply(
    link("10.0.0.3"),
    { port: 8001, files: [file("a.txt"), file("b.txt", MTIME + 1)] },
    at(1),
  );
  assert.deepEqual(chosen(state), { "a.txt": "10.0.0.2:8001", "b.txt": "10.0.0.3:8001" });
  assert.deepEqual(state.directory()["a.txt"].holders!.map((h) => h.ip), [
    "10.0.0.2",
    "10.0.0.3",
  ]);
  // The holder of the older b.txt is not offered for the newer version.
  assert.deepEqual(state.directory()["b.txt"].holders!.map((h) => h.ip), ["10.0.0.3"]);
});

Deno.test("TrackerState: holders whose size or hash differ are not listed as the same version", () => {
  const state = new TrackerState({ peerTimeoutMs: TIMEOUT_MS });
  const [x, y] = ["a".repeat(64), "b".repeat(64)];
  state.apply(
    link("10.0.0.2"),
    { port: 8001, files: [file("a.txt", MTIME, { sha256: x })] },
    at(0),
  );
  state.apply(
    link("10.0.0.3"),
    { port: 8001, files: [file("a.txt", MTIME, { sha256: y })] },
    at(0),
  );
  state.apply(link("10.0.0.4"), { port: 8001, files: [file("a.txt", MTIME)] }, at(0));
  // 10.0.0.4 gave no hash: nothing says it differs.
  assert.deepEqual(state.directory()["a.txt"].holders!.map((h) => h.ip), [
    "10.0.0.2",
    "10.0.0.4",
  ]);
});

Deno.test(`TrackerState lists at most ${MAX_LISTED_HOLDERS} holders per entry`, () => {
  const state = new TrackerState({ peerTimeoutMs: TIMEOUT_MS });
  for (let i = 0; i < MAX_LISTED_HOLDERS + 5; i++) {
    state.apply(link(`10.0.1.${i}`), { port: 8001, files: [file("a.txt")] }, at(i));
  }
  assert.equal(state.directory()["a.txt"].holders!.length, MAX_LISTED_HOLDERS);
});

Deno.test("TrackerState: a file list replaces the last one; a KeepAlive keeps it", () => {
  const state = new TrackerState({ peerTimeoutMs: TIMEOUT_MS, quiet: true });
  const a = link("10.0.0.2");
  state.apply(a, { port: 8001, files: [file("a.txt"), file("b.txt")] }, at(0));
  assert.deepEqual(state.apply(a, { port: 8001 }, at(1)), [], "quiet: no keep-alive line");
  assert.deepEqual(Object.keys(state.directory()), ["a.txt", "b.txt"]);
  const said = state.apply(a, { port: 8001, files: [file("b.txt"), file("c.txt")] }, at(2));
  assert.deepEqual(said, ["peer 10.0.0.2:8001 sent its file list again: 2 files"]);
  assert.deepEqual(Object.keys(state.directory()), ["b.txt", "c.txt"]);
  assert.equal(state.counters.keepAlives, 1);
  assert.equal(state.counters.fileLists, 2);
});

Deno.test("TrackerState: a keep-alive has a line unless quiet; one from an unknown peer makes a peer without files", () => {
  const state = new TrackerState({ peerTimeoutMs: TIMEOUT_MS });
  const a = link("10.0.0.2");
  assert.deepEqual(state.apply(a, { port: 8001 }, at(0)), [
    "peer 10.0.0.2:8001 joined without a file list (keep-alive from a peer we did not know)",
  ]);
  assert.deepEqual(state.apply(a, { port: 8001 }, at(1)), [
    "keep-alive from 10.0.0.2:8001 (0 files)",
  ]);
  assert.equal(state.peers.size, 1);
  assert.deepEqual(state.directory(), {});
});

Deno.test("TrackerState ignores unsafe names (counted, a few shown) and keeps the newer of a name listed twice", () => {
  const state = new TrackerState({ peerTimeoutMs: TIMEOUT_MS });
  const said = state.apply(link("10.0.0.2"), {
    port: 8001,
    files: [
      file("../a"),
      file("b/c"),
      file(""),
      file(".."),
      file("ok.txt", MTIME),
      file("ok.txt", MTIME + 9),
      file("ok.txt", MTIME + 2),
    ],
  }, at(0));
  assert.deepEqual(said, [
    `peer 10.0.0.2:8001 joined with 1 file; ignored unsafe names "../a", "b/c", "" and 1 more`,
  ]);
  assert.equal(state.counters.unsafeNames, 4);
  assert.deepEqual(Object.keys(state.directory()), ["ok.txt"]);
  assert.equal(state.directory()["ok.txt"].mtime, MTIME + 9);
});

Deno.test("TrackerState: one connection is one peer, so a new port on it replaces the old record", () => {
  const state = new TrackerState({ peerTimeoutMs: TIMEOUT_MS });
  const a = link("10.0.0.2");
  state.apply(a, { port: 8001, files: [file("a.txt")] }, at(0));
  const said = state.apply(a, { port: 8002, files: [file("b.txt")] }, at(1));
  assert.deepEqual(said, [
    "peer 10.0.0.2:8001 now announces port 8002 on the same connection: " +
    "dropped it as holder of 1 file (0 moved to another holder, 1 gone)",
    "peer 10.0.0.2:8002 joined with 1 file",
  ]);
  assert.deepEqual([...state.peers.keys()], ["10.0.0.2|8002"]);
  assert.deepEqual(chosen(state), { "b.txt": "10.0.0.2:8002" });
  assert.equal(state.counters.portChanges, 1);
});

Deno.test("TrackerState leaves a record alone that another connection has spoken for since", () => {
  const state = new TrackerState({ peerTimeoutMs: TIMEOUT_MS });
  const [first, second] = [link("10.0.0.2"), link("10.0.0.2")];
  state.apply(first, { port: 8001, files: [file("a.txt")] }, at(0));
  state.apply(second, { port: 8001 }, at(1)); // the same peer, reconnected
  state.apply(first, { port: 8002 }, at(2));
  assert.deepEqual([...state.peers.keys()], ["10.0.0.2|8001", "10.0.0.2|8002"]);
  assert.deepEqual(chosen(state), { "a.txt": "10.0.0.2:8001" });
  assert.equal(state.counters.portChanges, 0);
});

Deno.test("TrackerState.sweep() expires a silent peer; its entry moves to the next holder", () => {
  const state = new TrackerState({ peerTimeoutMs: TIMEOUT_MS });
  state.apply(link("10.0.0.2"), { port: 8001, files: [file("a.txt"), file("b.txt")] }, at(0));
  state.apply(link("10.0.0.3"), { port: 8001, files: [file("a.txt")] }, at(1000));
  assert.deepEqual(
    state.sweep(at(TIMEOUT_MS), []).log,
    [],
    "not silent for longer than the timeout",
  );
  const { log } = state.sweep(at(TIMEOUT_MS + 500), []);
  assert.deepEqual(log, [
    "peer 10.0.0.2:8001 expired after 180.5 s of silence: dropped it as holder of 2 files " +
    "(1 moved to another holder, 1 gone)",
  ]);
  assert.deepEqual(chosen(state), { "a.txt": "10.0.0.3:8001" });
  assert.equal(state.counters.peersExpired, 1);
  assert.deepEqual(state.peerStats(at(TIMEOUT_MS + 500)).map((p) => p.secondsToExpiry), [0.5]);
});

Deno.test("TrackerState: an expired peer that speaks again on its connection gets its last list back", () => {
  const state = new TrackerState({ peerTimeoutMs: TIMEOUT_MS });
  const a = link("10.0.0.2");
  state.apply(a, { port: 8001, files: [file("a.txt"), file("../x")] }, at(0));
  state.sweep(at(TIMEOUT_MS + 1), []);
  assert.deepEqual(state.directory(), {});
  const said = state.apply(a, { port: 8001 }, at(TIMEOUT_MS + 2));
  assert.deepEqual(said, [
    "peer 10.0.0.2:8001 is back after expiring; restored its 1 file announced on this connection",
  ]);
  assert.deepEqual(chosen(state), { "a.txt": "10.0.0.2:8001" });
  assert.equal(
    state.counters.unsafeNames,
    1,
    "a restored list's unsafe names are not counted again",
  );
  // A fresh connection has nothing to restore.
  const fresh = new TrackerState({ peerTimeoutMs: TIMEOUT_MS });
  fresh.apply(link("10.0.0.2"), { port: 8001 }, at(0));
  assert.deepEqual(fresh.directory(), {});
});

Deno.test("TrackerState.sweep() picks connections that waited the peer timeout for a message, once", () => {
  const state = new TrackerState({ peerTimeoutMs: TIMEOUT_MS });
  const waiting: Link = { ...link("10.0.0.2"), waitingSince: 0 };
  const recent: Link = { ...link("10.0.0.3"), waitingSince: 10_000 };
  const replying: Link = link("10.0.0.4"); // a reply being written: the send timeout's business
  const links = [waiting, recent, replying];
  const first = state.sweep(at(TIMEOUT_MS + 1), links);
  assert.deepEqual(first.close, [waiting]);
  assert.equal(waiting.closedFor, "silence");
  assert.deepEqual(state.sweep(at(TIMEOUT_MS + 2), links).close, [], "already closing");
  assert.deepEqual(state.sweep(at(TIMEOUT_MS + 10_001), links).close, [recent]);
  assert.equal(state.counters.silentClosed, 2);
});

Deno.test("TrackerState.encodedDirectory() stays the directory as json.dumps writes it through changes", () => {
  const state = new TrackerState({ peerTimeoutMs: TIMEOUT_MS });
  const decode = () => {
    const reply = state.encodedDirectory();
    const bytes = new Uint8Array(reply.bytes);
    let at = 0;
    for (const part of reply.parts) {
      bytes.set(part, at);
      at += part.length;
    }
    return new TextDecoder().decode(bytes);
  };
  assert.equal(decode(), "{}\n");
  const a = link("10.0.0.2");
  for (let round = 0; round < 3; round++) {
    const files = Array.from(
      { length: 600 },
      (_, i) => file(`f${(i * 7 + round) % 700}.txt`, MTIME + round),
    );
    state.apply(a, { port: 8001, files }, at(round));
    state.apply(
      link(`10.0.0.${3 + round}`),
      { port: 8001, files: files.slice(0, 50 * round) },
      at(round),
    );
    assert.equal(decode(), encodeJson(state.directory()) + "\n");
    assert.equal(decode(), encodeJson(state.directory()) + "\n", "unchanged: the same reply again");
  }
});

Deno.test("peerIp() tells peers an IPv4 address, not its IPv6-mapped form", () => {
  const addr = (hostname: string): Deno.NetAddr => ({ transport: "tcp", hostname, port: 1 });
  assert.equal(peerIp(addr("::ffff:10.0.0.2")), "10.0.0.2");
  assert.equal(peerIp(addr("::FFFF:127.0.0.1")), "127.0.0.1");
  assert.equal(peerIp(addr("2001:db8::1")), "2001:db8::1");
  assert.equal(peerIp(addr("10.0.0.2")), "10.0.0.2");
});
