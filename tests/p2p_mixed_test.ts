/**
 * A mixed swarm: our tracker, two of our peers and the course-style Python
 * peer (`tests/fixtures/python_peer.py`). Our peers use every extension
 * between themselves (a file in a subfolder, a conflict made while both are
 * frozen, a deletion that leaves a tombstone, the directory as paged
 * revisions), while the Python peer, which writes down every directory line
 * it gets, is shown only the course's directory: no `"/"` entry, no path
 * with `/`, no conflict copy, no tombstone and none of our fields. Plain
 * files still sync both ways, before and after all that.
 */

import assert from "node:assert/strict";
import type { Script } from "../lib/scripts.ts";
import { STATE_DIR, STATE_FILE } from "../p2p/sync_state.ts";
import { conflictCopyName } from "../p2p/versions.ts";
import { haveCommand, randomBytes, sha256, waitUntil } from "./helpers.ts";
import {
  folderTree,
  putFile,
  type Seen,
  startPeerScript,
  startPythonPeer,
  startTrackerScript,
  tempFolder,
} from "./p2p_helpers.ts";

const T0 = 1_700_000_000; // a fixed mtime, in seconds
const BUDGET_MS = 25_000; // the whole test's waits together, in milliseconds
const encoder = new TextEncoder();

/**
 * The fields a course peer may see in an entry: the course's, and the ones
 * PROTOCOL.md lists as extras the course's programs skip ("Our extensions").
 * Any other (`deleted`, `absent`, `history`, `copies`, `by`, `time`, and the
 * `"/"` entry's `features`, `rev`, `more`) belongs to an extension.
 */
const COURSE_ENTRY_FIELDS = ["ip", "port", "mtime", "size", "sha256", "holders"];
/** The fields of a holder in `holders`. */
const COURSE_HOLDER_FIELDS = ["ip", "port", "mtime"];

function seen(bytes: Uint8Array, mtime: number): Seen {
  return { size: bytes.length, mtime, sha256: sha256(bytes) };
}

/** Every directory line the Python peer wrote down so far, parsed. */
async function directoriesSeen(path: string): Promise<Record<string, unknown>[]> {
  let text = "";
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  // A line being appended right now has no newline yet: it is read next time.
  return text.split("\n").slice(0, -1).map((line) => JSON.parse(line));
}

/** What in these directories a course peer should never have been shown, one line each. */
function extensionsShown(directories: Record<string, unknown>[]): string[] {
  const problems = new Set<string>();
  for (const directory of directories) {
    for (const [name, entry] of Object.entries(directory)) {
      const shown = JSON.stringify(name);
      if (name === "/") {
        problems.add(`the "/" entry: ${JSON.stringify(entry)}`);
        continue;
      }
      if (name.includes("/")) problems.add(`a path with "/": ${shown}`);
      if (/\.sync-conflict-/.test(name)) problems.add(`a conflict copy: ${shown}`);
      if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
        problems.add(`${shown} is not an entry: ${JSON.stringify(entry)}`);
        continue;
      }
      for (const field of Object.keys(entry)) {
        if (!COURSE_ENTRY_FIELDS.includes(field)) problems.add(`${shown} has "${field}"`);
      }
      if (typeof (entry as { mtime?: unknown }).mtime !== "number") {
        problems.add(`${shown} has no mtime: ${JSON.stringify(entry)}`);
      }
      for (const holder of (entry as { holders?: object[] }).holders ?? []) {
        for (const field of Object.keys(holder)) {
          if (!COURSE_HOLDER_FIELDS.includes(field)) {
            problems.add(`${shown} has a holder with "${field}"`);
          }
        }
      }
    }
  }
  return [...problems];
}

Deno.test({
  name:
    "in a mixed swarm the course peer is never shown an extension, while our peers use them all and plain files sync both ways",
  ignore: !haveCommand("python3"),
  async fn() {
    await using a = await tempFolder();
    await using b = await tempFolder();
    await using p = await tempFolder();
    // Outside the Python peer's folder, or it would share its own record.
    await using logs = await tempFolder();
    const directoryLog = `${logs.path}/directories.jsonl`;

    const fromA = encoder.encode("plain, from our peer a\n");
    const fromB = randomBytes(200 * 1024, 61);
    const fromPython = encoder.encode("plain, from the Python peer\n");
    const agenda = encoder.encode("agenda: 1. budget\n");
    const doomed = encoder.encode("soon deleted on a\n");
    const deep = encoder.encode("in a subfolder: only our peers share it\n");
    await putFile(a.path, "from_a.txt", fromA, T0);
    await putFile(b.path, "from_b.bin", fromB, T0 + 1);
    await putFile(p.path, "from_python.txt", fromPython, T0 + 2);
    await putFile(a.path, "notes.txt", agenda, T0 + 3);
    await putFile(a.path, "doomed.txt", doomed, T0 + 4);
    await Deno.mkdir(`${a.path}/sub/deep`, { recursive: true });
    await putFile(a.path, "sub/deep/x.txt", deep, T0 + 5);

    await using tracker = await startTrackerScript(["--quiet"]);
    await using pa = await startPeerScript(a.path, tracker.port);
    await using pb = await startPeerScript(b.path, tracker.port);
    await using python = await startPythonPeer(p.path, tracker.port, { directoryLog });
    const scripts: Script[] = [tracker, pa, pb, python];

    const deadline = Date.now() + BUDGET_MS;
    /**
     * Waits until every folder of `dirs` holds each file of `expected`
     * (`null`: holds no such file). Fails at once, with what leaked, when the
     * Python peer was shown an extension, so a leak is named, not a timeout.
     */
    const waitForFiles = (dirs: string[], expected: Record<string, Seen | null>) => {
      let last: Record<string, Seen | null>[] = [];
      return waitUntil(
        async () => {
          const leaks = extensionsShown(await directoriesSeen(directoryLog));
          assert.deepEqual(leaks, [], "the Python peer was shown our extensions");
          last = await Promise.all(dirs.map(async (dir) => {
            const tree = await folderTree(dir);
            return Object.fromEntries(
              Object.keys(expected).map((name) => [name, tree[name] ?? null]),
            );
          }));
          return last.every((got) => JSON.stringify(got) === JSON.stringify(expected));
        },
        Math.max(1, deadline - Date.now()),
        `${Object.keys(expected).join(", ")} in ${dirs.join(", ")}`,
        () =>
          `expected ${JSON.stringify(expected)}\ngot ${JSON.stringify(last)}\n` +
          scripts.map((s) => s.lines.join("\n")).join("\n---\n"),
      );
    };
    const everyone = [a.path, b.path, p.path];
    const ours = [a.path, b.path];

    // Plain files flow every way: ours to the Python peer and its to ours.
    await waitForFiles(everyone, {
      "from_a.txt": seen(fromA, T0),
      "from_b.bin": seen(fromB, T0 + 1),
      "from_python.txt": seen(fromPython, T0 + 2),
      "notes.txt": seen(agenda, T0 + 3),
      "doomed.txt": seen(doomed, T0 + 4),
    });
    // Extension "paths": the subfolder's file reaches our other peer only.
    await waitForFiles(ours, { "sub/deep/x.txt": seen(deep, T0 + 5) });

    // Extension "versions", a conflict: both of our peers edit notes.txt while frozen.
    pa.process.kill("SIGSTOP");
    pb.process.kill("SIGSTOP");
    const editA = encoder.encode("agenda: 1. budget 2. hiring (a)\n");
    const editB = encoder.encode("agenda: 1. budget 2. offices (b)\n");
    try {
      await putFile(a.path, "notes.txt", editA, T0 + 100);
      await putFile(b.path, "notes.txt", editB, T0 + 200);
    } finally {
      pa.process.kill("SIGCONT");
      pb.process.kill("SIGCONT");
    }
    // b's edit is newer and keeps the name (the Python peer fetches it by the mtime rule);
    // a's is kept, by our peers, as a copy named after its time and author.
    const idA = JSON.parse(await Deno.readTextFile(`${a.path}/${STATE_DIR}/${STATE_FILE}`)).id;
    const copy = conflictCopyName("notes.txt", { mtime: T0 + 100, by: idA });
    await waitForFiles(everyone, { "notes.txt": seen(editB, T0 + 200) });
    await waitForFiles(ours, { [copy]: seen(editA, T0 + 100) });

    // Extension "versions", a deletion: a tombstone that b carries out.
    await Deno.remove(`${a.path}/doomed.txt`);
    await waitForFiles(ours, { "doomed.txt": null });
    // The peer logs after it deleted, and its output comes through a pipe: wait for the line.
    await pb.waitFor(
      /deleted doomed\.txt: it was deleted on peer/,
      Math.max(1, deadline - Date.now()),
    );

    // Plain files still flow both ways after all that (so the Python peer is alive and well).
    const lateA = encoder.encode("written on a after the conflict and the deletion\n");
    const latePython = encoder.encode("written beside the Python peer at the end\n");
    await putFile(a.path, "late_a.txt", lateA, T0 + 300);
    await putFile(p.path, "late_python.txt", latePython, T0 + 301);
    await waitForFiles(everyone, {
      "late_a.txt": seen(lateA, T0 + 300),
      "late_python.txt": seen(latePython, T0 + 301),
    });

    // The Python peer was never told of the deletion, so it keeps its copy; that older copy
    // does not bring the file back to our peers either.
    await waitForFiles([p.path], { "doomed.txt": seen(doomed, T0 + 4), [copy]: null });
    await waitForFiles(ours, { "doomed.txt": null });
    const pythonHolds = Object.keys(await folderTree(p.path));
    assert.ok(!pythonHolds.some((name) => name.includes("/")), `${pythonHolds}`);

    // What the Python peer was shown, line by line, from its start to after the last edits.
    const directories = await directoriesSeen(directoryLog);
    assert.deepEqual(extensionsShown(directories), []);
    assert.ok(directories.some((d) => "late_a.txt" in d), "no line from after the extensions");
    assert.ok(
      directories.some((d) => (d["notes.txt"] as { mtime?: number })?.mtime === T0 + 200),
      "no line with the conflict's winner",
    );
    assert.ok(
      !python.lines.some((l) => l.includes("Traceback") || l.includes("could not fetch")),
      python.lines.join("\n"),
    );
  },
});
