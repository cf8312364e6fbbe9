/**
 * The tracker's half of the "versions" extension (`p2p/PROTOCOL.md`,
 * `p2p/tracker_state.ts`): negotiation, versions decided by content and
 * ancestry rather than mtimes, conflicts kept as copies, deletions as
 * tombstones, and the course's directory made from the same records for
 * peers that did not ask. Mostly the pure state with connections as plain
 * `Link`s and the time passed in; two tests speak raw JSON lines to a real
 * tracker. Where a peer's reaction matters, the reply is parsed as our peer
 * parses it and handed to `planPath()`.
 */

import assert from "node:assert/strict";
import { LineReader } from "../lib/lines.ts";
import { writeAll } from "../lib/net.ts";
import {
  DIRECTORY_MAX_LINE_BYTES,
  encodeJson,
  encodeLine,
  type FileInfo,
  parseTrackerReply,
  type PeerMessage,
} from "../p2p/protocol.ts";
import { statusPage } from "../p2p/status_page.ts";
import { startTracker } from "../p2p/tracker.ts";
import {
  type Link,
  MAX_LISTED_HOLDERS,
  MAX_RECORDS,
  type Now,
  TrackerState,
} from "../p2p/tracker_state.ts";
import { conflictCopyName, type PathAction, planPath } from "../p2p/versions.ts";

const MTIME = 1_700_000_000; // seconds: an ordinary file time
const TIMEOUT_MS = 180_000; // the course's peer timeout
const WALL = 1_800_000_000_000; // ms: the tracker's clock at the start of each test
const VERSIONS = ["versions"];

// Contents by their (made-up) SHA-256.
const A = "a".repeat(64);
const B = "b".repeat(64);
const C = "c".repeat(64);
const D = "d".repeat(64);

/** A moment `ms` after the start, on both clocks. */
function at(ms: number): Now {
  return { wall: WALL + ms, mono: ms };
}

function link(ip: string): Link {
  return { ip, lastFiles: null };
}

function newState(tombstoneTtlMs?: number): TrackerState {
  return new TrackerState({ peerTimeoutMs: TIMEOUT_MS, quiet: true, tombstoneTtlMs });
}

/** A file as our peer announces it: hash, size, author, history. */
function version(
  name: string,
  sha256: string,
  mtime: number,
  by: string,
  history: string[] = [],
): FileInfo {
  return { name, mtime, size: 5, sha256, by, history };
}

/** A message from one of our peers with id `id`. */
function ours(id: string, files: FileInfo[], extra: Partial<PeerMessage> = {}): PeerMessage {
  return { port: 8001, id, features: VERSIONS, files, ...extra };
}

/** What a state's wire reply for `features` says, parsed as our peer parses it. */
function reply(state: TrackerState, features?: string[]) {
  const encoded = state.encodedDirectory(features);
  const line = new TextDecoder().decode(concat(encoded.parts));
  assert.equal(line.at(-1), "\n");
  return { line, ...parseTrackerReply(line.slice(0, -1)) };
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** What our peer holding `local` (a SHA-256, or null) at `name` would do with the versions view. */
function plan(state: TrackerState, name: string, local: string | null): PathAction {
  const r = reply(state, VERSIONS);
  const deleted = r.deleted[name];
  if (deleted) return planPath(local, { kind: "deleted", tombstone: deleted });
  const e = r.directory[name];
  if (!e) return planPath(local, undefined);
  assert.ok(e.sha256 && e.size !== undefined, `${name} is a version entry`);
  const current = {
    sha256: e.sha256,
    size: e.size,
    mtime: e.mtime,
    by: e.by ?? "",
    history: e.history ?? [],
  };
  return planPath(local, { kind: "current", version: current, copies: e.copies ?? [] });
}

/** The wire bytes of each view are the plain-data view, encoded as json.dumps would. */
function assertWireMatches(state: TrackerState): void {
  for (const features of [undefined, VERSIONS, []]) {
    assert.equal(reply(state, features).line, encodeJson(state.directoryFor(features)) + "\n");
  }
}

Deno.test('versions: only a peer that asked gets the "/" entry, with the features accepted', () => {
  const state = newState();
  const v = link("10.0.0.2");
  const said = state.apply(
    v,
    ours("PEERONE", [version("a.txt", A, MTIME, "PEERONE")], { features: ["zzz", "versions"] }),
    at(0),
  );
  assert.deepEqual(said, [
    "peer 10.0.0.2:8001 joined with 1 file (id PEERONE; features: versions)",
  ]);
  assert.deepEqual(v.features, ["versions"], "unknown features are not accepted");
  const course = link("10.0.0.3");
  state.apply(course, { port: 8001, files: [{ name: "b.txt", mtime: MTIME }] }, at(1));
  const other = link("10.0.0.4");
  state.apply(other, { port: 8001, features: ["zzz"] }, at(2));

  const versions = reply(state, v.features);
  assert.ok(versions.line.startsWith('{"/": {"features": ["versions"]}, "a.txt": '));
  assert.deepEqual(versions.features, ["versions"]);
  assert.deepEqual(reply(state, other.features).features, [], "asked, none accepted");
  const plain = reply(state, course.features);
  assert.equal(plain.features, null);
  assert.ok(!plain.line.includes('"/"'));
  assert.deepEqual(Object.keys(plain.directory), ["a.txt", "b.txt"]);
  // A later message without features keeps what the connection asked for.
  state.apply(v, { port: 8001 }, at(3));
  assert.deepEqual(v.features, ["versions"]);
  assertWireMatches(state);
});

Deno.test("versions: an edit based on the current version replaces it at the same mtime", () => {
  const state = newState();
  const [one, two] = [link("10.0.0.2"), link("10.0.0.3")];
  state.apply(one, ours("PEERONE", [version("a.txt", A, MTIME, "PEERONE")]), at(0));
  state.apply(two, ours("PEERTWO", [version("a.txt", A, MTIME, "PEERONE")]), at(1));
  // cp -p: new bytes, same mtime; the course would never fetch them.
  state.apply(one, ours("PEERONE", [version("a.txt", B, MTIME, "PEERONE", [A])]), at(2));
  const entry = reply(state, VERSIONS).directory["a.txt"];
  assert.equal(entry.sha256, B);
  assert.deepEqual(entry.history, [A]);
  assert.deepEqual(entry.holders!.map((h) => h.ip), ["10.0.0.2"], "only holders of B");
  assert.deepEqual(plan(state, "a.txt", A), { kind: "fetch" }, "the holder of A is behind");
  assert.equal(state.directory()["a.txt"].sha256, B, "course peers are shown B too");
  assert.equal(state.counters.conflicts, 0);
  assertWireMatches(state);
});

Deno.test("versions: an older-mtime edit based on a future-dated current version replaces it", () => {
  const state = newState();
  const [one, two] = [link("10.0.0.2"), link("10.0.0.3")];
  const future = MTIME + 10 * 365 * 86400; // a clock ten years ahead
  state.apply(one, ours("PEERONE", [version("a.txt", A, future, "PEERONE")]), at(0));
  state.apply(two, ours("PEERTWO", [version("a.txt", A, future, "PEERONE")]), at(1));
  state.apply(two, ours("PEERTWO", [version("a.txt", B, MTIME, "PEERTWO", [A])]), at(2));
  const entry = reply(state, VERSIONS).directory["a.txt"];
  assert.deepEqual([entry.sha256, entry.mtime, entry.by], [B, MTIME, "PEERTWO"]);
  assert.deepEqual(entry.holders!.map((h) => h.ip), ["10.0.0.3"]);
  assert.deepEqual(plan(state, "a.txt", A), { kind: "fetch" });
});

Deno.test("versions: two edits of one version are a conflict; the newer mtime keeps the name, the other is a listed copy", () => {
  const state = newState();
  const [one, two, three] = [link("10.0.0.2"), link("10.0.0.3"), link("10.0.0.4")];
  state.apply(one, ours("PEERONE", [version("notes.txt", A, MTIME, "PEERONE")]), at(0));
  state.apply(two, ours("PEERTWO", [version("notes.txt", A, MTIME, "PEERONE")]), at(1));
  state.apply(three, ours("PEERTRI", [version("notes.txt", A, MTIME, "PEERONE")]), at(2));
  state.apply(
    one,
    ours("PEERONE", [version("notes.txt", B, MTIME + 20, "PEERONE", [A])]),
    at(3),
  );
  // PEERTWO edited A too, before it heard of B, with an older mtime: it loses.
  const said = state.apply(
    two,
    ours("PEERTWO", [version("notes.txt", C, MTIME + 10, "PEERTWO", [A])]),
    at(4),
  );
  const copyName = conflictCopyName("notes.txt", { mtime: MTIME + 10, by: "PEERTWO" });
  assert.equal(copyName, "notes.sync-conflict-20231114-221330-PEERTWO.txt");
  assert.deepEqual(said.slice(1), [
    `conflict on "notes.txt": ${B.slice(0, 8)} by PEERONE (2023-11-14T22:13:40Z) and ` +
    `${C.slice(0, 8)} by PEERTWO (2023-11-14T22:13:30Z); ${
      B.slice(0, 8)
    } keeps the name, the other becomes "${copyName}"`,
  ]);
  assert.equal(state.counters.conflicts, 1);
  const entry = reply(state, VERSIONS).directory["notes.txt"];
  assert.equal(entry.sha256, B);
  assert.deepEqual(entry.copies, [{ sha256: C, name: copyName }]);
  assert.deepEqual(entry.holders!.map((h) => h.ip), ["10.0.0.2"]);
  assert.deepEqual(plan(state, "notes.txt", C), { kind: "copy-then-fetch", copyName });
  assert.deepEqual(plan(state, "notes.txt", A), { kind: "fetch" });

  // PEERTWO renames its copy and fetches B; the copy is then a file like any other, for our peers.
  state.apply(
    two,
    ours("PEERTWO", [
      version("notes.txt", B, MTIME + 20, "PEERONE", [A]),
      version(copyName, C, MTIME + 10, "PEERTWO", [A]),
    ]),
    at(5),
  );
  assert.equal(reply(state, VERSIONS).directory[copyName].sha256, C);
  assert.equal(state.directory()[copyName], undefined, "a course peer never sees a copy");
  assert.deepEqual(state.directory()["notes.txt"].holders!.map((h) => h.ip), [
    "10.0.0.2",
    "10.0.0.3",
  ]);
  assert.equal(state.pathStats().find((p) => p.name === "notes.txt")!.copies[0].name, copyName);
  assertWireMatches(state);
});

Deno.test("versions: equal mtimes in a conflict go to the smaller SHA-256; an absent current version loses", () => {
  const state = newState();
  const [one, two] = [link("10.0.0.2"), link("10.0.0.3")];
  state.apply(one, ours("PEERONE", [version("a.txt", C, MTIME, "PEERONE")]), at(0));
  state.apply(two, ours("PEERTWO", [version("a.txt", B, MTIME, "PEERTWO")]), at(1));
  assert.equal(reply(state, VERSIONS).directory["a.txt"].sha256, B, "B < C");

  // B's only holder leaves: its version cannot be fetched, so a newcomer's D wins although older.
  state.sweep(at(TIMEOUT_MS + 10), []);
  state.apply(one, ours("PEERONE", [version("a.txt", C, MTIME, "PEERONE")]), at(TIMEOUT_MS + 20));
  assert.equal(
    reply(state, VERSIONS).directory["a.txt"],
    undefined,
    "nobody online holds the current version: no entry",
  );
  const said = state.apply(
    link("10.0.0.4"),
    ours("PEERTRI", [version("a.txt", D, MTIME - 50, "PEERTRI")]),
    at(TIMEOUT_MS + 30),
  );
  assert.match(said[1], /; dddddddd keeps the name \(nobody online holds bbbbbbbb\), the other/);
  assert.equal(reply(state, VERSIONS).directory["a.txt"].sha256, D);
});

Deno.test("versions: a deletion leaves a tombstone that peers with versions see and course peers do not", () => {
  const state = newState();
  const [one, two, course] = [link("10.0.0.2"), link("10.0.0.3"), link("10.0.0.9")];
  state.apply(one, ours("PEERONE", [version("a.txt", A, MTIME, "PEERONE")]), at(0));
  state.apply(two, ours("PEERTWO", [version("a.txt", A, MTIME, "PEERONE")]), at(1));
  state.apply(course, { port: 8001, files: [{ name: "a.txt", mtime: MTIME }] }, at(2));
  const deletedAt = Math.floor((WALL + 3000) / 1000);
  const said = state.apply(
    one,
    ours("PEERONE", [], { deleted: [{ name: "a.txt", sha256: A, time: deletedAt }] }),
    at(3000),
  );
  assert.deepEqual(said, [
    "peer 10.0.0.2:8001 sent its file list again: 0 files (id PEERONE; features: versions)",
    `deleted "a.txt": ${
      A.slice(0, 8)
    } by PEERONE (10.0.0.2:8001); peers holding it or an older version will delete their copies`,
  ]);
  assert.equal(state.counters.deletions, 1);
  assert.deepEqual(reply(state, VERSIONS).deleted["a.txt"], {
    sha256: A,
    history: [],
    time: deletedAt,
    by: "PEERONE",
  });
  assert.ok(reply(state, VERSIONS).line.includes('"a.txt": {"deleted": true, '));
  assert.deepEqual(plan(state, "a.txt", A), { kind: "delete" });
  // The course peer's older copy is not handed out again, and no tombstone reaches it.
  assert.deepEqual(state.directory(), {});
  assert.ok(!reply(state).line.includes("deleted"));

  // The same deletion again (our peer repeats it for 30 days) changes nothing and says nothing.
  const again = state.apply(
    one,
    ours("PEERONE", [], { deleted: [{ name: "a.txt", sha256: A, time: deletedAt }] }),
    at(4000),
  );
  assert.equal(again.length, 1, "only the file-list line");
  assert.equal(state.counters.deletions, 1);
  assertWireMatches(state);
});

Deno.test("versions: a peer that was away and comes back with the deleted version is behind", () => {
  const state = newState();
  const [one, away] = [link("10.0.0.2"), link("10.0.0.3")];
  state.apply(one, ours("PEERONE", [version("a.txt", B, MTIME, "PEERONE", [A])]), at(0));
  state.apply(away, ours("PEERTWO", [version("a.txt", B, MTIME, "PEERONE", [A])]), at(0));
  state.sweep(at(TIMEOUT_MS / 2), []);
  state.apply(one, { port: 8001 }, at(TIMEOUT_MS / 2));
  state.sweep(at(TIMEOUT_MS + 1), []); // PEERTWO expires
  const time = Math.floor((WALL + TIMEOUT_MS + 2) / 1000);
  state.apply(
    one,
    ours("PEERONE", [], { deleted: [{ name: "a.txt", sha256: B, time }] }),
    at(TIMEOUT_MS + 2),
  );
  // Days later (within the tombstone time) PEERTWO returns on a new connection, with B or even A.
  const back = link("10.0.0.3");
  const said = state.apply(
    back,
    ours("PEERTWO", [version("a.txt", B, MTIME, "PEERONE", [A])]),
    at(TIMEOUT_MS + 5 * 86_400_000),
  );
  assert.deepEqual(said, [
    "peer 10.0.0.3:8001 joined with 1 file (id PEERTWO; features: versions)",
  ]);
  assert.equal(reply(state, VERSIONS).deleted["a.txt"].sha256, B);
  assert.deepEqual(reply(state, VERSIONS).deleted["a.txt"].history, [A]);
  assert.deepEqual(plan(state, "a.txt", B), { kind: "delete" });
  assert.deepEqual(plan(state, "a.txt", A), { kind: "delete" });
  assert.deepEqual([state.counters.revivals, state.counters.conflicts], [0, 0]);
});

Deno.test("versions: an edit racing a deletion wins, whichever arrives first", () => {
  // The deletion first: the edit brings the file back.
  const state = newState();
  const [one, two] = [link("10.0.0.2"), link("10.0.0.3")];
  state.apply(one, ours("PEERONE", [version("a.txt", A, MTIME, "PEERONE")]), at(0));
  state.apply(two, ours("PEERTWO", [version("a.txt", A, MTIME, "PEERONE")]), at(1));
  const time = Math.floor(WALL / 1000);
  state.apply(one, ours("PEERONE", [], { deleted: [{ name: "a.txt", sha256: A, time }] }), at(2));
  const said = state.apply(
    two,
    ours("PEERTWO", [version("a.txt", B, MTIME + 5, "PEERTWO", [A])]),
    at(3),
  );
  assert.deepEqual(said.slice(1), [
    `"a.txt" is back: ${B.slice(0, 8)} by PEERTWO (2023-11-14T22:13:25Z) is an edit that the ` +
    `deletion of ${A.slice(0, 8)} by PEERONE never saw`,
  ]);
  assert.equal(state.counters.revivals, 1);
  assert.equal(reply(state, VERSIONS).directory["a.txt"].sha256, B);
  assert.equal(reply(state, VERSIONS).deleted["a.txt"], undefined);
  assert.deepEqual(plan(state, "a.txt", null), { kind: "fetch" }, "the deleter fetches it back");
  assert.equal(state.directory()["a.txt"].sha256, B);

  // The edit first: the deletion is outdated and ignored.
  const other = newState();
  other.apply(one, ours("PEERONE", [version("a.txt", A, MTIME, "PEERONE")]), at(0));
  other.apply(two, ours("PEERTWO", [version("a.txt", B, MTIME + 5, "PEERTWO", [A])]), at(1));
  assert.deepEqual(
    other.apply(one, ours("PEERONE", [], { deleted: [{ name: "a.txt", sha256: A, time }] }), at(2))
      .length,
    1,
    "only the file-list line",
  );
  assert.equal(reply(other, VERSIONS).directory["a.txt"].sha256, B);
  assert.equal(other.counters.deletions, 0);
});

Deno.test("versions: a file deleted and made anew in one list comes back as the new file, not a conflict", () => {
  const state = newState();
  const [one, two] = [link("10.0.0.2"), link("10.0.0.3")];
  state.apply(one, ours("PEERONE", [version("a.txt", A, MTIME, "PEERONE")]), at(0));
  state.apply(two, ours("PEERTWO", [version("a.txt", A, MTIME, "PEERONE")]), at(1));
  const said = state.apply(
    one,
    ours("PEERONE", [version("a.txt", C, MTIME + 9, "PEERONE")], {
      deleted: [{ name: "a.txt", sha256: A, time: WALL / 1000 }],
    }),
    at(2),
  );
  assert.equal(said.length, 3, "the list, the deletion and the revival");
  assert.deepEqual([state.counters.conflicts, state.counters.revivals], [0, 1]);
  assert.equal(reply(state, VERSIONS).directory["a.txt"].sha256, C);
  assert.deepEqual(plan(state, "a.txt", A), { kind: "fetch" }, "A was superseded, not a copy");
});

Deno.test("versions: tombstones expire after the tombstone time, and so do records nobody holds", () => {
  const TTL = 60_000;
  const state = newState(TTL);
  const one = link("10.0.0.2");
  state.apply(one, ours("PEERONE", [version("a.txt", A, MTIME, "PEERONE")]), at(0));
  state.apply(
    one,
    ours("PEERONE", [], { deleted: [{ name: "a.txt", sha256: A, time: WALL / 1000 }] }),
    at(1),
  );
  // A deletion older than the tombstone time is not taken in at all.
  state.apply(
    one,
    ours("PEERONE", [], {
      deleted: [
        { name: "a.txt", sha256: A, time: WALL / 1000 },
        { name: "old.txt", sha256: B, time: (WALL - TTL - 1000) / 1000 },
      ],
    }),
    at(2),
  );
  assert.deepEqual([...state.records.keys()], ["a.txt"]);
  assert.deepEqual(state.sweep(at(TTL), []).log, [], "not older than the tombstone time yet");
  assert.ok(reply(state, VERSIONS).deleted["a.txt"]);
  state.apply(one, { port: 8001 }, at(TTL + 1)); // stays alive
  const { log } = state.sweep(at(TTL + 1001), []);
  assert.deepEqual(log, [
    `forgot the deletion of "a.txt" (${A.slice(0, 8)} by PEERONE): older than 60 s`,
  ]);
  assert.deepEqual(reply(state, VERSIONS).deleted, {});
  assert.equal(state.records.size, 0, "nobody held it for the tombstone time: forgotten");

  // A record whose version somebody held is kept for the tombstone time after they left.
  state.apply(one, ours("PEERONE", [version("b.txt", B, MTIME, "PEERONE")]), at(TTL + 2000));
  state.apply(one, ours("PEERONE", []), at(TTL + 3000));
  state.sweep(at(TTL + 4000), []);
  assert.deepEqual([...state.records.keys()], ["b.txt"]);
  state.apply(one, { port: 8001 }, at(2 * TTL));
  state.sweep(at(2 * TTL + 4001), []);
  assert.equal(state.records.size, 0);
  assertWireMatches(state);
});

Deno.test("versions: a forgotten deletion of a path still held is rebuilt from its holders", () => {
  const TTL = 60_000;
  const state = newState(TTL);
  const [one, stubborn] = [link("10.0.0.2"), link("10.0.0.3")];
  state.apply(one, ours("PEERONE", [version("a.txt", A, MTIME, "PEERONE")]), at(0));
  state.apply(stubborn, ours("PEERTWO", [version("a.txt", A, MTIME, "PEERONE")]), at(0));
  state.apply(
    one,
    ours("PEERONE", [], { deleted: [{ name: "a.txt", sha256: A, time: WALL / 1000 }] }),
    at(1),
  );
  state.apply(stubborn, { port: 8001 }, at(TTL));
  state.sweep(at(TTL + 1001), []);
  // PEERTWO never deleted its copy: once the deletion is forgotten, its copy is the file again.
  assert.equal(reply(state, VERSIONS).directory["a.txt"].sha256, A);
  assert.equal(state.directory()["a.txt"].ip, "10.0.0.3");
});

Deno.test(`versions: deletions of unknown paths stop being taken in at ${MAX_RECORDS} records`, () => {
  const state = newState();
  const one = link("10.0.0.2");
  const time = WALL / 1000;
  const names = (from: number, n: number) =>
    Array.from({ length: n }, (_, i) => ({ name: `x${from + i}`, sha256: A, time }));
  for (let i = 0; i < MAX_RECORDS; i += 10_000) {
    state.apply(one, ours("PEERONE", [], { deleted: names(i, 10_000) }), at(1));
  }
  assert.equal(state.records.size, MAX_RECORDS);
  state.apply(
    one,
    ours("PEERONE", [version("a.txt", A, MTIME, "PEERONE")], { deleted: names(-5, 5) }),
    at(2),
  );
  assert.equal(state.records.size, MAX_RECORDS + 1, "a held file still gets its record");
  assert.equal(state.records.has("x-1"), false);
});

Deno.test("versions: an entry lists only live holders of the current bytes, at most the limit", () => {
  const state = newState();
  state.apply(link("10.0.0.2"), ours("PEERONE", [version("a.txt", A, MTIME, "PEERONE")]), at(0));
  for (let i = 0; i < MAX_LISTED_HOLDERS + 3; i++) {
    const files = [version("a.txt", i % 2 ? B : A, MTIME, "PEERONE", i % 2 ? [A] : [])];
    state.apply(link(`10.0.1.${i}`), ours(`PEER${i}`, files), at(i));
  }
  for (const features of [VERSIONS, undefined]) {
    const entry = reply(state, features).directory["a.txt"];
    assert.equal(entry.sha256, B);
    const ips = entry.holders!.map((h) => h.ip);
    assert.deepEqual(ips, ips.filter((ip) => Number(ip.split(".")[3]) % 2 === 1));
    assert.equal(ips.length, 9);
    assert.equal(entry.ip, "10.0.1.1");
  }
  state.apply(
    link("10.0.2.1"),
    ours("PEERX", [version("a.txt", B, MTIME, "PEERONE", [A])]),
    at(99),
  );
  for (let i = 0; i < MAX_LISTED_HOLDERS; i++) {
    state.apply(link(`10.0.3.${i}`), ours("PEERY", [version("a.txt", B, MTIME, "P", [A])]), at(99));
  }
  assert.equal(reply(state, VERSIONS).directory["a.txt"].holders!.length, MAX_LISTED_HOLDERS);
});

Deno.test("versions: a course peer's copy newer than the current version is a course-style entry", () => {
  const state = newState();
  const [one, course] = [link("10.0.0.2"), link("10.0.0.9")];
  state.apply(one, ours("PEERONE", [version("a.txt", B, MTIME, "PEERONE", [A])]), at(0));
  // Not newer: our version stays, for everyone.
  state.apply(course, { port: 8001, files: [{ name: "a.txt", mtime: MTIME }] }, at(1));
  assert.equal(reply(state, VERSIONS).directory["a.txt"].sha256, B);
  assert.equal(state.directory()["a.txt"].ip, "10.0.0.2");
  // Strictly newer: everyone fetches it by the mtime rule; our peer then announces it as a version.
  state.apply(course, { port: 8001, files: [{ name: "a.txt", mtime: MTIME + 1 }] }, at(2));
  const courseHolder = [{ ip: "10.0.0.9", port: 8001, mtime: MTIME + 1 }];
  assert.deepEqual(reply(state, VERSIONS).directory["a.txt"], {
    ip: "10.0.0.9",
    port: 8001,
    mtime: MTIME + 1,
    holders: courseHolder,
  });
  assert.deepEqual(state.directory()["a.txt"], {
    ip: "10.0.0.9",
    port: 8001,
    mtime: MTIME + 1,
    holders: courseHolder,
  });
  // Once our peer has it as a version based on B, that version is current again.
  state.apply(
    one,
    ours("PEERONE", [version("a.txt", C, MTIME + 1, "PEERONE", [B, A])]),
    at(3),
  );
  const entry = reply(state, VERSIONS).directory["a.txt"];
  assert.deepEqual([entry.sha256, entry.ip], [C, "10.0.0.2"]);
  assert.deepEqual(plan(state, "a.txt", B), { kind: "fetch" });
  assertWireMatches(state);
});

Deno.test("versions: a course peer never sees a path with a folder; names with no record are the course's", () => {
  const state = newState();
  const said = state.apply(
    link("10.0.0.2"),
    ours("PEERONE", [version("sub/a.txt", A, MTIME, "PEERONE"), version("b.txt", B, MTIME, "X")]),
    at(0),
  );
  assert.match(said[0], /ignored unsafe names "sub\/a.txt"/);
  assert.equal(reply(state).directory["sub/a.txt"], undefined);
  // A course peer's file, and our peer's file without a hash, are shown as the course shows them.
  state.apply(link("10.0.0.9"), { port: 8001, files: [{ name: "c.txt", mtime: MTIME }] }, at(1));
  state.apply(link("10.0.0.3"), ours("PEERTWO", [{ name: "d.txt", mtime: MTIME }]), at(2));
  for (const features of [VERSIONS, undefined]) {
    const dir = reply(state, features).directory;
    assert.deepEqual(Object.keys(dir), ["b.txt", "c.txt", "d.txt"]);
    assert.deepEqual(dir["c.txt"], {
      ip: "10.0.0.9",
      port: 8001,
      mtime: MTIME,
      holders: [{ ip: "10.0.0.9", port: 8001, mtime: MTIME }],
    });
  }
  assert.deepEqual([...state.records.keys()], ["b.txt"]);
});

Deno.test("versions: a change to one name re-encodes only its block, in each view", () => {
  const state = newState();
  const one = link("10.0.0.2");
  const files = Array.from({ length: 700 }, (_, i) => version(`f${i}.txt`, A, MTIME, "PEERONE"));
  state.apply(one, ours("PEERONE", files), at(0));
  const before = state.encodedDirectory(VERSIONS).parts;
  const beforeCourse = state.encodedDirectory().parts;
  assert.equal(before.length, 4, 'the "/" entry, then three blocks');
  files[3] = version("f3.txt", B, MTIME, "PEERONE", [A]);
  state.apply(one, ours("PEERONE", files), at(1));
  const after = state.encodedDirectory(VERSIONS).parts;
  assert.notEqual(after[1], before[1], "the block with f3.txt is encoded again");
  assert.equal(after[2], before[2], "the next block is the same buffer");
  assert.equal(state.encodedDirectory().parts[1], beforeCourse[1]);
  assertWireMatches(state);
});

Deno.test("versions: the status page shows each path's version, copies and deletion", () => {
  const state = newState();
  const [one, two] = [link("10.0.0.2"), link("10.0.0.3")];
  state.apply(one, ours("PEERONE", [version("a.txt", A, MTIME, "PEERONE")]), at(0));
  state.apply(two, ours("PEERTWO", [version("a.txt", B, MTIME + 1, "PEERTWO")]), at(1));
  state.apply(one, ours("PEERONE", [version("gone.txt", C, MTIME, "PEERONE")]), at(2));
  state.apply(
    one,
    ours("PEERONE", [], { deleted: [{ name: "gone.txt", sha256: C, time: WALL / 1000 }] }),
    at(3),
  );
  const paths = state.pathStats();
  assert.deepEqual(paths.map((p) => [p.name, p.current?.sha256 ?? null, p.deleted?.sha256]), [
    ["a.txt", B, undefined],
    ["gone.txt", null, C],
  ]);
  const html = statusPage({
    addr: "127.0.0.1:9000",
    startedAt: new Date(WALL).toISOString(),
    peerTimeoutSeconds: 180,
    sweepIntervalSeconds: 10,
    peers: state.peerStats(at(4)),
    directory: state.directory(),
    paths,
    counters: state.counters,
  });
  assert.ok(html.includes("<h2>Versions (2 paths)</h2>"));
  assert.ok(html.includes(`${B.slice(0, 8)} by PEERTWO`));
  assert.ok(html.includes(`${A.slice(0, 8)} as a.sync-conflict-20231114-221320-PEERONE.txt`));
  assert.ok(html.includes("versions: 1 conflicts, 1 deletions, 0 revivals."));
});

/** A raw connection to a tracker: one JSON line out, one line back. */
async function rawPeer(port: number) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const lines = new LineReader(conn, DIRECTORY_MAX_LINE_BYTES);
  return {
    async send(message: unknown): Promise<string> {
      await writeAll(conn, encodeLine(message));
      const line = await lines.readLine();
      assert.notEqual(line, null, "the tracker closed the connection");
      return line!;
    },
    [Symbol.asyncDispose]() {
      conn.close();
      return Promise.resolve();
    },
  };
}

Deno.test("startTracker() answers each connection with the view it asked for", async () => {
  const log: string[] = [];
  await using tracker = await startTracker({ httpPort: null, log: (l) => log.push(l) });
  await using ourPeer = await rawPeer(tracker.addr.port);
  await using coursePeer = await rawPeer(tracker.addr.port);
  const init = await ourPeer.send({
    port: 8001,
    id: "PEERONE",
    features: ["versions"],
    files: [version("a.txt", A, MTIME, "PEERONE"), version("b.txt", B, MTIME, "PEERONE")],
  });
  const holder = `[{"ip": "127.0.0.1", "port": 8001, "mtime": ${MTIME}}]`;
  assert.equal(
    init,
    `{"/": {"features": ["versions"]}, ` +
      `"a.txt": {"ip": "127.0.0.1", "port": 8001, "mtime": ${MTIME}, "size": 5, ` +
      `"sha256": "${A}", "by": "PEERONE", "holders": ${holder}}, ` +
      `"b.txt": {"ip": "127.0.0.1", "port": 8001, "mtime": ${MTIME}, "size": 5, ` +
      `"sha256": "${B}", "by": "PEERONE", "holders": ${holder}}}`,
  );
  const course = await coursePeer.send({ port: 8002, files: [{ name: "c.txt", mtime: MTIME }] });
  assert.ok(course.startsWith(`{"a.txt": {"ip": "127.0.0.1", "port": 8001, "mtime": ${MTIME}, `));
  assert.ok(!course.includes('"/"') && !course.includes('"by"'));

  // A deletion: our peers see the tombstone, the course peer sees the file go.
  const time = Math.floor(Date.now() / 1000);
  const after = await ourPeer.send({
    port: 8001,
    id: "PEERONE",
    features: ["versions"],
    files: [version("a.txt", A, MTIME, "PEERONE")],
    deleted: [{ name: "b.txt", sha256: B, time }],
  });
  assert.equal(
    parseTrackerReply(after).deleted["b.txt"].sha256,
    B,
  );
  assert.ok(after.includes(`"b.txt": {"deleted": true, "sha256": "${B}", "history": [], "time": `));
  const keepAlive = await coursePeer.send({ port: 8002 });
  assert.deepEqual(Object.keys(JSON.parse(keepAlive)), ["a.txt", "c.txt"]);
  assert.ok(log.some((l) => l.startsWith(`deleted "b.txt": ${B.slice(0, 8)} by PEERONE`)));
  const stats = tracker.stats();
  assert.deepEqual(stats.paths.map((p) => [p.name, p.deleted?.sha256 ?? null]), [
    ["a.txt", null],
    ["b.txt", B],
  ]);
  assert.equal(stats.counters.deletions, 1);
});
