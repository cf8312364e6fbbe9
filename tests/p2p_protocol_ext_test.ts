/** The "versions" extension on the wire: parsed strictly, invisible to course-shaped messages. */

import assert from "node:assert/strict";
import { parsePeerMessage, parseTrackerReply, ProtocolError } from "../p2p/protocol.ts";

const A = "a".repeat(64);
const B = "b".repeat(64);

Deno.test("parsePeerMessage(): id, features, versions and deletions", () => {
  const message = parsePeerMessage(JSON.stringify({
    port: 8001,
    id: "ABCDEFG",
    features: ["versions", "something-newer"],
    files: [{ name: "a.txt", mtime: 1, size: 1, sha256: A, by: "ABCDEFG", history: [B] }],
    deleted: [{ name: "b.txt", sha256: B, time: 5 }],
  }));
  assert.equal(message.id, "ABCDEFG");
  assert.deepEqual(message.features, ["versions", "something-newer"]);
  assert.deepEqual(message.files?.[0].history, [B]);
  assert.deepEqual(message.deleted, [{ name: "b.txt", sha256: B, time: 5 }]);
  // A course peer's Init has none of them.
  const course = parsePeerMessage('{"port": 8001, "files": [{"name": "a.txt", "mtime": 1}]}');
  assert.deepEqual(course, { port: 8001, files: [{ name: "a.txt", mtime: 1 }] });
});

Deno.test("parsePeerMessage(): malformed extension fields close the connection with a reason", () => {
  const bad: [unknown, RegExp][] = [
    [{ port: 1, id: "has space" }, /id must be up to 16 letters/],
    [{ port: 1, features: "versions" }, /features must be a list/],
    [{ port: 1, files: [{ name: "a", mtime: 1, history: ["x"] }] }, /history\[0\] must be 64/],
    [{ port: 1, files: [{ name: "a", mtime: 1, history: Array(17).fill(A) }] }, /at most 16/],
    [{ port: 1, deleted: [{ name: "a", sha256: A }] }, /deleted\[0\]\.time must be/],
    [{ port: 1, deleted: {} }, /deleted must be an array/],
  ];
  for (const [message, reason] of bad) {
    assert.throws(() => parsePeerMessage(JSON.stringify(message)), (err: Error) => {
      assert.ok(err instanceof ProtocolError);
      assert.match(err.message, reason);
      return true;
    });
  }
});

Deno.test("parseTrackerReply(): the meta entry, deleted paths and versioned entries", () => {
  const reply = parseTrackerReply(JSON.stringify({
    "/": { features: ["versions"] },
    "a.txt": {
      ip: "127.0.0.1",
      port: 8001,
      mtime: 1,
      sha256: A,
      by: "ABCDEFG",
      history: [B],
      copies: [{ sha256: B, name: "a.sync-conflict-19700101-000001-XYZ.txt" }],
    },
    "gone.txt": { deleted: true, sha256: B, history: [], time: 9, by: "ABCDEFG" },
  }));
  assert.deepEqual(reply.features, ["versions"]);
  assert.deepEqual(Object.keys(reply.directory), ["a.txt"]);
  assert.equal(reply.directory["a.txt"].copies?.[0].sha256, B);
  assert.deepEqual(reply.deleted["gone.txt"], { sha256: B, history: [], time: 9, by: "ABCDEFG" });
  // The course's tracker: no meta entry.
  const course = parseTrackerReply('{"a.txt": {"ip": "10.0.0.2", "port": 8001, "mtime": 1}}');
  assert.equal(course.features, null);
  assert.deepEqual(Object.keys(course.deleted), []);
  assert.throws(() => parseTrackerReply('{"x": {"deleted": true, "sha256": "no"}}'), ProtocolError);
});
