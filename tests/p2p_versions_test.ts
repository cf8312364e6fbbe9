/**
 * The version rules of p2p/versions.ts, case by case and as a whole swarm
 * simulated without sockets: random edits, deletions and syncs on peers whose
 * clocks disagree must end with every peer holding the same files and no edit
 * lost.
 */

import assert from "node:assert/strict";
import {
  announce,
  conflictCopyName,
  isConflictCopy,
  localVersion,
  MAX_HISTORY,
  type PathRecord,
  type PathState,
  planPath,
  remove,
  type Version,
  winsConflict,
} from "../p2p/versions.ts";

function v(sha256: string, mtime: number, history: string[] = [], by = "PEERONE"): Version {
  return { sha256, size: 1, mtime, by, history };
}

function stateOf(record: PathRecord): PathState {
  return record.current
    ? { kind: "current", version: record.current, copies: record.copies }
    : { kind: "deleted", tombstone: record.tombstone! };
}

Deno.test("announce(): the first version of a path becomes current", () => {
  const { record, outcome } = announce(undefined, "a.txt", v("aa", 100));
  assert.equal(outcome, "new");
  assert.equal(record.current?.sha256, "aa");
});

Deno.test("announce(): the current version again is 'same' and changes nothing", () => {
  const first = announce(undefined, "a.txt", v("aa", 100)).record;
  const again = announce(first, "a.txt", v("aa", 200, [], "PEERTWO"));
  assert.equal(again.outcome, "same");
  assert.equal(again.record, first);
});

Deno.test("announce(): an edit based on the current version wins whatever its mtime", () => {
  // The current version came from a machine whose clock runs years ahead.
  const first = announce(undefined, "a.txt", v("aa", 1_900_000_000)).record;
  const edit = announce(first, "a.txt", v("bb", 1_700_000_000, ["aa"], "PEERTWO"));
  assert.equal(edit.outcome, "forward");
  assert.equal(edit.record.current?.sha256, "bb");
});

Deno.test("announce(): same mtime, different bytes: content decides", () => {
  const first = announce(undefined, "a.txt", v("aa", 100)).record;
  const edit = announce(first, "a.txt", v("bb", 100, ["aa"]));
  assert.equal(edit.outcome, "forward");
});

Deno.test("announce(): an ancestor of the current version is 'behind' and changes nothing", () => {
  let record = announce(undefined, "a.txt", v("aa", 100)).record;
  record = announce(record, "a.txt", v("bb", 50, ["aa"])).record;
  const old = announce(record, "a.txt", v("aa", 100));
  assert.equal(old.outcome, "behind");
  assert.equal(old.record.current?.sha256, "bb");
});

Deno.test("announce(): two edits of the same version are a conflict; the newer mtime keeps the name", () => {
  const base = announce(undefined, "notes.txt", v("aa", 100, ["00"])).record;
  const first = announce(base, "notes.txt", v("bb", 200, ["aa", "00"], "PEERONE")).record;
  const second = announce(first, "notes.txt", v("cc", 300, ["aa", "00"], "PEERTWO"));
  assert.equal(second.outcome, "won");
  assert.equal(second.record.current?.sha256, "cc");
  assert.deepEqual(second.record.copies, [
    { sha256: "bb", name: conflictCopyName("notes.txt", { mtime: 200, by: "PEERONE" }) },
  ]);
  // The loser is never in the winner's history: its holders must rename it, not overwrite it.
  assert.ok(!second.record.current!.history.includes("bb"));
  assert.ok(second.record.current!.history.includes("aa"));

  const older = announce(first, "notes.txt", v("cc", 150, ["aa", "00"], "PEERTWO"));
  assert.equal(older.outcome, "lost");
  assert.equal(older.record.current?.sha256, "bb");
  assert.deepEqual(older.record.copies.map((c) => c.sha256), ["cc"]);
  // Announced again (the next keep-alive), the loser stays a copy.
  assert.equal(announce(older.record, "notes.txt", v("cc", 150, ["aa"])).outcome, "lost");
});

Deno.test("announce(): a conflict with a version nobody online holds is won by the one announced", () => {
  const absent = announce(undefined, "a.txt", v("aa", 900)).record;
  const late = announce(absent, "a.txt", v("bb", 100, [], "PEERTWO"), false);
  assert.equal(late.outcome, "won");
  assert.equal(late.record.current?.sha256, "bb");
  // Its holder comes back later: it is told to keep its version as a copy.
  assert.deepEqual(late.record.copies.map((c) => c.sha256), ["aa"]);
  assert.equal(announce(late.record, "a.txt", v("aa", 900)).outcome, "lost");
});

Deno.test("winsConflict(): equal mtimes are settled the same way whichever arrives first", () => {
  const a = v("12", 100);
  const b = v("ab", 100);
  assert.notEqual(winsConflict(a, b), winsConflict(b, a));
  const ab = announce(announce(undefined, "x", a).record, "x", b).record;
  const ba = announce(announce(undefined, "x", b).record, "x", a).record;
  assert.equal(ab.current?.sha256, ba.current?.sha256);
  assert.deepEqual(ab.copies, ba.copies);
});

Deno.test("remove(): deleting the current version leaves a tombstone; its holders are behind", () => {
  const { record } = announce(undefined, "a.txt", v("bb", 100, ["aa"]));
  const gone = remove(record, { sha256: "bb", deletedAt: 5_000, by: "PEERTWO" });
  assert.equal(gone.outcome, "deleted");
  assert.equal(gone.record.current, null);
  assert.deepEqual(gone.record.tombstone, {
    sha256: "bb",
    history: ["aa"],
    deletedAt: 5_000,
    by: "PEERTWO",
  });
  assert.equal(announce(gone.record, "a.txt", v("bb", 100)).outcome, "behind");
  assert.equal(announce(gone.record, "a.txt", v("aa", 100)).outcome, "behind");
});

Deno.test("remove() and announce(): an edit racing a deletion keeps the edit", () => {
  const { record } = announce(undefined, "a.txt", v("aa", 100));
  // Deleted first, then an edit of the deleted version arrives: the file comes back.
  const gone = remove(record, { sha256: "aa", deletedAt: 5_000, by: "PEERONE" }).record;
  const back = announce(gone, "a.txt", v("bb", 90, ["aa"], "PEERTWO"));
  assert.equal(back.outcome, "revived");
  assert.equal(back.record.current?.sha256, "bb");
  assert.equal(back.record.tombstone, null);
  // Edited first, then the deletion of the old version arrives: it is outdated.
  const edited = announce(record, "a.txt", v("bb", 90, ["aa"], "PEERTWO")).record;
  const late = remove(edited, { sha256: "aa", deletedAt: 5_000, by: "PEERONE" });
  assert.equal(late.outcome, "outdated");
  assert.equal(late.record.current?.sha256, "bb");
});

Deno.test("remove(): a deletion of an unknown path is remembered, so an old copy cannot return", () => {
  const gone = remove(undefined, { sha256: "aa", deletedAt: 1, by: "PEERONE" });
  assert.equal(gone.outcome, "already");
  assert.equal(announce(gone.record, "a.txt", v("aa", 100)).outcome, "behind");
  assert.equal(remove(gone.record, { sha256: "aa", deletedAt: 2, by: "X" }).outcome, "already");
});

Deno.test("planPath(): fetch over a superseded copy, rename a losing one, keep anything unknown", () => {
  const current = v("cc", 300, ["aa"]);
  const copies = [{ sha256: "bb", name: "n.sync-conflict-19700101-000320-PEERONE.txt" }];
  const state: PathState = { kind: "current", version: current, copies };
  assert.deepEqual(planPath(null, state), { kind: "fetch" });
  assert.deepEqual(planPath("cc", state), { kind: "none" });
  assert.deepEqual(planPath("aa", state), { kind: "fetch" });
  assert.deepEqual(planPath("bb", state), { kind: "copy-then-fetch", copyName: copies[0].name });
  assert.deepEqual(planPath("dd", state), { kind: "announce" });
  // Deleted here, and the tracker has not taken the deletion in yet: do not fetch it back.
  assert.deepEqual(planPath(null, state, "cc"), { kind: "none" });
  assert.deepEqual(planPath(null, state, "aa"), { kind: "fetch" });
  assert.deepEqual(planPath("xx", undefined), { kind: "announce" });
  assert.deepEqual(planPath(null, undefined), { kind: "none" });
});

Deno.test("planPath(): a tombstone deletes the deleted version and its ancestors, nothing else", () => {
  const state: PathState = { kind: "deleted", tombstone: { sha256: "bb", history: ["aa"] } };
  assert.deepEqual(planPath("bb", state), { kind: "delete" });
  assert.deepEqual(planPath("aa", state), { kind: "delete" });
  assert.deepEqual(planPath("cc", state), { kind: "announce" });
  assert.deepEqual(planPath(null, state), { kind: "none" });
});

Deno.test("conflictCopyName(): NAME.sync-conflict-YYYYMMDD-HHMMSS-PEERID.EXT", () => {
  const loser = { mtime: Date.UTC(2026, 10, 30, 3, 15, 9) / 1000, by: "PEERTWO" };
  assert.equal(
    conflictCopyName("notes.txt", loser),
    "notes.sync-conflict-20261130-031509-PEERTWO.txt",
  );
  assert.equal(
    conflictCopyName("a/b/archive.tar.gz", loser),
    "a/b/archive.tar.sync-conflict-20261130-031509-PEERTWO.gz",
  );
  assert.equal(
    conflictCopyName("Makefile", loser),
    "Makefile.sync-conflict-20261130-031509-PEERTWO",
  );
  assert.equal(
    conflictCopyName("x/.env", { ...loser, by: "" }),
    "x/.env.sync-conflict-20261130-031509-0000000",
  );
  assert.ok(isConflictCopy(conflictCopyName("notes.txt", loser)));
  assert.ok(isConflictCopy(conflictCopyName("Makefile", loser)));
  assert.ok(!isConflictCopy("notes.txt"));
});

Deno.test("localVersion(): unchanged bytes keep their version; new bytes are based on it", () => {
  const recorded = v("aa", 100, ["00"], "PEERONE");
  assert.deepEqual(
    localVersion(recorded, { sha256: "aa", size: 1, mtime: 120 }, "PEERTWO"),
    { ...recorded, mtime: 120 },
  );
  const edit = localVersion(recorded, { sha256: "bb", size: 2, mtime: 100 }, "PEERTWO");
  assert.deepEqual(edit, {
    sha256: "bb",
    size: 2,
    mtime: 100,
    by: "PEERTWO",
    history: ["aa", "00"],
  });
  assert.deepEqual(localVersion(undefined, { sha256: "cc", size: 3, mtime: 1 }, "X").history, []);
  const long = v("zz", 1, Array.from({ length: MAX_HISTORY }, (_, i) => `h${i}`));
  assert.equal(
    localVersion(long, { sha256: "yy", size: 1, mtime: 1 }, "X").history.length,
    MAX_HISTORY,
  );
});

/** A tiny deterministic generator (mulberry32), so a failing run can be replayed. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface SimPeer {
  id: string;
  /** Clock offset in seconds: some peers run years ahead or behind. */
  skew: number;
  disk: Map<string, string>;
  recorded: Map<string, Version>;
  pending: Map<string, string>;
}

Deno.test("a simulated swarm with skewed clocks and a restarting tracker converges and loses no edit (200 seeds)", () => {
  for (let seed = 1; seed <= 200; seed++) {
    const rand = random(seed);
    const tracker = new Map<string, PathRecord>();
    const peers: SimPeer[] = ["PEERAAA", "PEERBBB", "PEERCCC"].map((id, i) => ({
      id,
      skew: [0, 400_000_000, -300_000_000][i],
      disk: new Map(),
      recorded: new Map(),
      pending: new Map(),
    }));
    const created = new Set<string>();
    const superseded = new Set<string>();
    let clock = 1_700_000_000;
    let edits = 0;

    const sync = (peer: SimPeer) => {
      // Scan: deletions, then every file's version.
      for (const [path, version] of peer.recorded) {
        if (!peer.disk.has(path)) {
          peer.pending.set(path, version.sha256);
          peer.recorded.delete(path);
        }
      }
      for (const [path, sha256] of peer.disk) {
        const disk = { sha256, size: 1, mtime: clock + peer.skew };
        peer.recorded.set(path, localVersion(peer.recorded.get(path), disk, peer.id));
      }
      // Announce (Init or KeepAlive with files), then read the directory.
      for (const [path, version] of peer.recorded) {
        tracker.set(path, announce(tracker.get(path), path, version).record);
      }
      for (const [path, sha256] of peer.pending) {
        const deletion = { sha256, deletedAt: clock, by: peer.id };
        tracker.set(path, remove(tracker.get(path), deletion).record);
      }
      for (const [path, record] of [...tracker]) {
        const state = stateOf(record);
        const local = peer.disk.get(path) ?? null;
        const action = planPath(local, state, peer.pending.get(path) ?? null);
        if (state.kind === "deleted" || state.version.sha256 !== peer.pending.get(path)) {
          peer.pending.delete(path);
        }
        if (action.kind === "copy-then-fetch") {
          peer.disk.set(action.copyName, local!);
          peer.recorded.delete(path);
        }
        if (action.kind === "fetch" || action.kind === "copy-then-fetch") {
          const current = (state as { version: Version }).version;
          peer.disk.set(path, current.sha256);
          peer.recorded.set(path, current);
        }
        if (action.kind === "delete") {
          peer.disk.delete(path);
          peer.recorded.delete(path);
        }
      }
    };

    const paths = ["a.txt", "b.txt"];
    for (let step = 0; step < 40; step++) {
      clock += 1 + Math.floor(rand() * 3);
      const peer = peers[Math.floor(rand() * peers.length)];
      const path = paths[Math.floor(rand() * paths.length)];
      const roll = rand();
      if (roll < 0.03) {
        tracker.clear(); // the tracker restarted: it knows only what peers announce from now on
      } else if (roll < 0.4) {
        const old = peer.disk.get(path);
        if (old !== undefined) superseded.add(old);
        const sha = `e${++edits}`;
        created.add(sha);
        peer.disk.set(path, sha);
      } else if (roll < 0.5) {
        const old = peer.disk.get(path);
        if (old !== undefined) superseded.add(old);
        peer.disk.delete(path);
      } else {
        sync(peer);
      }
    }
    for (let round = 0; round < 4; round++) for (const peer of peers) sync(peer);

    const where = `seed ${seed}`;
    const first = [...peers[0].disk].sort();
    for (const peer of peers.slice(1)) {
      assert.deepEqual([...peer.disk].sort(), first, `${where}: ${peer.id} differs`);
    }
    const held = new Set(peers[0].disk.values());
    for (const sha of created) {
      if (!superseded.has(sha)) assert.ok(held.has(sha), `${where}: edit ${sha} was lost`);
    }
  }
});
