/**
 * The synchronizer trusted with a folder: real `p2p/tracker.ts` and
 * `p2p/peer.ts` processes on loopback, each row of the trust issue's table.
 * A change that keeps its mtime still travels; an edit of a future-dated file
 * wins; two edits made while both peers are frozen (SIGSTOP) are both kept;
 * a deletion reaches every peer, stays, and reaches a peer that was stopped
 * at the time; a deletion racing an edit keeps the edit; a lost state folder
 * loses nothing.
 */

import assert from "node:assert/strict";
import { sha256 } from "./helpers.ts";
import {
  folderState,
  putFile,
  type Seen,
  startPeerScript,
  startTrackerScript,
  tempFolder,
  waitForSameFolders,
  waitUntil,
} from "./p2p_helpers.ts";
import type { Script } from "../lib/scripts.ts";
import { STATE_DIR, STATE_FILE } from "../p2p/sync_state.ts";
import { conflictCopyName } from "../p2p/versions.ts";

const T0 = 1_700_000_000; // a fixed mtime, in seconds
const encoder = new TextEncoder();

function seen(bytes: Uint8Array, mtime: number): Seen {
  return { size: bytes.length, mtime, sha256: sha256(bytes) };
}

/** Waits until `name` in every folder is `expected` (`null`: absent everywhere). */
function waitForFile(
  dirs: string[],
  name: string,
  expected: Seen | null,
  scripts: Script[],
  timeoutMs = 10_000,
): Promise<void> {
  return waitUntil(
    async () => {
      const states = await Promise.all(dirs.map(folderState));
      return states.every((s) => JSON.stringify(s[name] ?? null) === JSON.stringify(expected));
    },
    timeoutMs,
    `${name} to be ${expected === null ? "gone" : JSON.stringify(expected)} everywhere`,
    () => scripts.map((s) => s.lines.join("\n")).join("\n---\n"),
  );
}

async function peerId(dir: string): Promise<string> {
  const path = `${dir}/${STATE_DIR}/${STATE_FILE}`;
  await waitUntil(
    async () => {
      try {
        return JSON.parse(await Deno.readTextFile(path)).id !== undefined;
      } catch {
        return false;
      }
    },
    5000,
    "the peer's state file",
  );
  return JSON.parse(await Deno.readTextFile(path)).id;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("a change that keeps size and mtime (cp -p) reaches the other peer", async () => {
  await using a = await tempFolder();
  await using b = await tempFolder();
  const first = encoder.encode("version one\n");
  await putFile(a.path, "s.txt", first, T0);
  await using tracker = await startTrackerScript(["--quiet"]);
  await using pa = await startPeerScript(a.path, tracker.port);
  await using pb = await startPeerScript(b.path, tracker.port, { mode: "worker" });
  const scripts = [tracker, pa, pb];
  await waitForFile([a.path, b.path], "s.txt", seen(first, T0), scripts);
  // Same length, other bytes, the old mtime put back: the mtime rule never notices this.
  const second = encoder.encode("version two\n");
  await putFile(a.path, "s.txt", second, T0);
  await waitForFile([a.path, b.path], "s.txt", seen(second, T0), scripts);
});

Deno.test("an edit of a file dated in the future (a clock running ahead) wins over it", async () => {
  await using a = await tempFolder();
  await using b = await tempFolder();
  const future = 1_900_000_000; // 2030
  const original = encoder.encode("from a machine whose clock runs ahead\n");
  await putFile(a.path, "f.txt", original, future);
  await using tracker = await startTrackerScript(["--quiet"]);
  await using pa = await startPeerScript(a.path, tracker.port);
  await using pb = await startPeerScript(b.path, tracker.port, { mode: "process" });
  const scripts = [tracker, pa, pb];
  await waitForFile([a.path, b.path], "f.txt", seen(original, future), scripts);
  const edit = encoder.encode("edited on b, today\n");
  await putFile(b.path, "f.txt", edit, T0 + 500);
  await waitForFile([a.path, b.path], "f.txt", seen(edit, T0 + 500), scripts);
});

Deno.test("two edits made while both peers are frozen are both kept, on both, as name and conflict copy", async () => {
  await using a = await tempFolder();
  await using b = await tempFolder();
  const base = encoder.encode("agenda: 1. budget\n");
  await putFile(a.path, "notes.txt", base, T0);
  await using tracker = await startTrackerScript(["--quiet"]);
  await using pa = await startPeerScript(a.path, tracker.port);
  await using pb = await startPeerScript(b.path, tracker.port);
  const scripts = [tracker, pa, pb];
  await waitForFile([a.path, b.path], "notes.txt", seen(base, T0), scripts);
  const idA = await peerId(a.path);

  pa.process.kill("SIGSTOP");
  pb.process.kill("SIGSTOP");
  const fromA = encoder.encode("agenda: 1. budget 2. hiring (a)\n");
  const fromB = encoder.encode("agenda: 1. budget 2. offices (b)\n");
  try {
    await putFile(a.path, "notes.txt", fromA, T0 + 100);
    await putFile(b.path, "notes.txt", fromB, T0 + 200);
  } finally {
    pa.process.kill("SIGCONT");
    pb.process.kill("SIGCONT");
  }
  // b's edit is newer: it keeps the name; a's survives as a copy named after its time and author.
  const copy = conflictCopyName("notes.txt", { mtime: T0 + 100, by: idA });
  await waitForFile([a.path, b.path], "notes.txt", seen(fromB, T0 + 200), scripts);
  await waitForFile([a.path, b.path], copy, seen(fromA, T0 + 100), scripts);
  await waitForSameFolders([a.path, b.path], 5000, scripts);
  assert.ok(
    pa.lines.some((l) => l.includes(`your version is kept as ${copy}`)),
    pa.lines.join("\n"),
  );
});

Deno.test("a deletion reaches every peer, stays deleted, and reaches a peer that was stopped at the time", async () => {
  await using a = await tempFolder();
  await using b = await tempFolder();
  await using c = await tempFolder();
  const bytes = encoder.encode("soon gone\n");
  await putFile(a.path, "x.txt", bytes, T0);
  await putFile(a.path, "stays.txt", bytes, T0);
  await using tracker = await startTrackerScript(["--quiet"]);
  await using pa = await startPeerScript(a.path, tracker.port);
  await using pb = await startPeerScript(b.path, tracker.port, { mode: "worker" });
  let pc = await startPeerScript(c.path, tracker.port);
  try {
    const scripts = () => [tracker, pa, pb, pc];
    await waitForFile([a.path, b.path, c.path], "x.txt", seen(bytes, T0), scripts());
    await pc.stop();

    await Deno.remove(`${a.path}/x.txt`);
    await waitForFile([a.path, b.path], "x.txt", null, scripts());
    assert.ok(pb.lines.some((l) => /deleted x\.txt: it was deleted on peer [A-Z2-7]{7}/.test(l)));
    // Many rounds later (interval 0.3 s) it has not come back.
    await sleep(1500);
    await waitForFile([a.path, b.path], "x.txt", null, scripts(), 1);

    // c comes back holding the deleted version: it deletes it instead of bringing it back.
    pc = await startPeerScript(c.path, tracker.port);
    await waitForFile([a.path, b.path, c.path], "x.txt", null, scripts());
    await waitForFile([a.path, b.path, c.path], "stays.txt", seen(bytes, T0), scripts());
  } finally {
    await pc.stop();
  }
});

Deno.test("a deletion racing an edit keeps the edit", async () => {
  await using a = await tempFolder();
  await using b = await tempFolder();
  const bytes = encoder.encode("draft\n");
  await putFile(a.path, "y.txt", bytes, T0);
  await using tracker = await startTrackerScript(["--quiet"]);
  await using pa = await startPeerScript(a.path, tracker.port);
  await using pb = await startPeerScript(b.path, tracker.port);
  const scripts = [tracker, pa, pb];
  await waitForFile([a.path, b.path], "y.txt", seen(bytes, T0), scripts);

  // b is frozen, a deletes and tells the tracker; meanwhile b's user edits the draft.
  pb.process.kill("SIGSTOP");
  const edit = encoder.encode("draft, finished on b\n");
  try {
    await Deno.remove(`${a.path}/y.txt`);
    await waitUntil(
      () => pa.lines.some((l) => l.includes("deleted here: y.txt")),
      5000,
      "a to notice its deletion",
    );
    await sleep(700); // a few of a's rounds: the tracker now has the tombstone
    await putFile(b.path, "y.txt", edit, T0 + 10);
  } finally {
    pb.process.kill("SIGCONT");
  }
  await waitForFile([a.path, b.path], "y.txt", seen(edit, T0 + 10), scripts);
});

Deno.test("a peer whose state folder was deleted loses nothing and catches up", async () => {
  await using a = await tempFolder();
  await using b = await tempFolder();
  const first = encoder.encode("first\n");
  await putFile(a.path, "z.txt", first, T0);
  await using tracker = await startTrackerScript(["--quiet"]);
  await using pb = await startPeerScript(b.path, tracker.port);
  let pa = await startPeerScript(a.path, tracker.port);
  try {
    const scripts = () => [tracker, pa, pb];
    await waitForFile([a.path, b.path], "z.txt", seen(first, T0), scripts());
    await pa.stop();
    // While a is away, b edits; then a's memory of the folder is lost.
    const second = encoder.encode("second, from b\n");
    await putFile(b.path, "z.txt", second, T0 + 1);
    await waitUntil(
      () => pb.lines.some((l) => l.includes("file list changed")),
      5000,
      "b to announce its edit",
    );
    await Deno.remove(`${a.path}/${STATE_DIR}`, { recursive: true });
    pa = await startPeerScript(a.path, tracker.port);
    // a's old bytes are a version the swarm has seen superseded: replaced, no conflict copy.
    await waitForFile([a.path, b.path], "z.txt", seen(second, T0 + 1), scripts());
    await waitForSameFolders([a.path, b.path], 5000, scripts());
    assert.deepEqual(Object.keys(await folderState(a.path)), ["z.txt"]);
  } finally {
    await pa.stop();
  }
});
