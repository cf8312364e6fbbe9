/** The peer's state folder: round trip, and a lost or damaged state is replaced, not fatal. */

import assert from "node:assert/strict";
import {
  forgetOldDeletions,
  loadState,
  newPeerId,
  parseState,
  PEER_ID,
  saveState,
  scanFolder,
  STATE_DIR,
  STATE_FILE,
  TOMBSTONE_TTL_MS,
} from "../p2p/sync_state.ts";

const A = "a".repeat(64);
const B = "b".repeat(64);

Deno.test("saveState() and loadState() round-trip the id, versions and deletions", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sync_state_" });
  try {
    const state = await loadState(dir);
    assert.ok(PEER_ID.test(state.id));
    state.files.set("sub/a.txt", { sha256: A, size: 3, mtime: 10, by: state.id, history: [B] });
    state.deleted.set("gone.txt", { sha256: B, deletedAt: 1234 });
    await saveState(dir, state);
    const again = await loadState(dir);
    assert.deepEqual(again, state);
    // Deleting the folder is survivable: a fresh state with a new id.
    await Deno.remove(`${dir}/${STATE_DIR}`, { recursive: true });
    const fresh = await loadState(dir);
    assert.notEqual(fresh.id, state.id);
    assert.equal(fresh.files.size, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadState(): a damaged state file is one note and a fresh state", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sync_state_" });
  try {
    await Deno.mkdir(`${dir}/${STATE_DIR}`);
    await Deno.writeTextFile(`${dir}/${STATE_DIR}/${STATE_FILE}`, '{"id": "AB');
    const notes: string[] = [];
    const state = await loadState(dir, (line) => notes.push(line));
    assert.equal(state.files.size, 0);
    assert.equal(notes.length, 1);
    assert.match(notes[0], /unusable \(not valid JSON\); starting with a fresh state/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseState(): bad entries are dropped one by one, the rest is kept", () => {
  const text = JSON.stringify({
    id: "ABCDEFG",
    files: {
      "ok.txt": { sha256: A, size: 1, mtime: 1, by: "ABCDEFG", history: [] },
      "short-hash.txt": { sha256: "abc", size: 1, mtime: 1, by: "X", history: [] },
      "bad-history.txt": { sha256: A, size: 1, mtime: 1, by: "X", history: [1] },
    },
    deleted: { "d.txt": { sha256: B, deletedAt: 5 }, "e.txt": { sha256: B } },
  });
  const state = parseState(text);
  assert.ok(typeof state !== "string");
  assert.deepEqual([...state.files.keys()], ["ok.txt"]);
  assert.deepEqual([...state.deleted.keys()], ["d.txt"]);
  assert.equal(parseState('{"id": "no spaces allowed"}'), "no valid peer id");
  assert.equal(parseState("[]"), "no valid peer id");
});

Deno.test("forgetOldDeletions() keeps deletions for the tombstone time only", () => {
  const state = parseState(JSON.stringify({ id: newPeerId() }));
  assert.ok(typeof state !== "string");
  const now = 10 * TOMBSTONE_TTL_MS;
  state.deleted.set("old", { sha256: A, deletedAt: now - TOMBSTONE_TTL_MS - 1 });
  state.deleted.set("new", { sha256: B, deletedAt: now - 1 });
  forgetOldDeletions(state, now);
  assert.deepEqual([...state.deleted.keys()], ["new"]);
});

Deno.test("scanFolder(): edits become versions by this peer, gone files deletions, unreadable ones neither", () => {
  const state = parseState(JSON.stringify({ id: "SELFAAA" }));
  assert.ok(typeof state !== "string");
  state.files.set("kept.txt", { sha256: A, size: 1, mtime: 1, by: "OTHERPE", history: [] });
  state.files.set("edited.txt", { sha256: A, size: 1, mtime: 1, by: "OTHERPE", history: [] });
  state.files.set("gone.txt", { sha256: B, size: 1, mtime: 1, by: "OTHERPE", history: [] });
  state.files.set("locked.txt", { sha256: B, size: 1, mtime: 1, by: "OTHERPE", history: [] });
  state.files.set("fetched.txt", { sha256: B, size: 1, mtime: 1, by: "OTHERPE", history: [] });
  const C = "c".repeat(64);
  const result = scanFolder(
    state,
    [
      { name: "kept.txt", mtime: 1, size: 1, sha256: A },
      // Same mtime, other bytes: an edit all the same.
      { name: "edited.txt", mtime: 1, size: 1, sha256: C },
      { name: "new.txt", mtime: 2, size: 1, sha256: C },
      // The listing saw the bytes a download has replaced since.
      { name: "fetched.txt", mtime: 1, size: 1, sha256: A },
    ],
    (path) => path === "gone.txt",
    777,
    new Set(["fetched.txt"]),
  );
  assert.deepEqual(result, { changed: ["edited.txt", "new.txt"], deleted: ["gone.txt"] });
  assert.deepEqual(state.files.get("edited.txt"), {
    sha256: C,
    size: 1,
    mtime: 1,
    by: "SELFAAA",
    history: [A],
  });
  assert.equal(state.files.get("kept.txt")?.by, "OTHERPE");
  assert.equal(state.files.get("fetched.txt")?.sha256, B);
  assert.ok(state.files.has("locked.txt"), "unreadable for now is not deleted");
  assert.deepEqual(state.deleted.get("gone.txt"), { sha256: B, deletedAt: 777 });
});
