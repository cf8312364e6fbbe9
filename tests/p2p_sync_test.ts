/**
 * The P2P synchronizer end to end, as a student runs it: a real
 * `p2p/tracker.ts` and real `p2p/peer.ts` processes on loopback. Three peers
 * converge, a newer version propagates, a dead holder is replaced by a live
 * one, a downloader killed mid-transfer ends with the whole file after a
 * restart, and peers recover when the tracker restarts.
 */

import assert from "node:assert/strict";
import { LineReader } from "../lib/lines.ts";
import { writeAll } from "../lib/net.ts";
import { encodeLine } from "../p2p/protocol.ts";
import { randomBytes, readAll, sha256, waitUntil } from "./helpers.ts";
import {
  canonical,
  folderState,
  freePort,
  MIB,
  namesIn,
  putFile,
  type Seen,
  startPeerScript,
  startTrackerScript,
  tempFolder,
  waitForSameFolders,
} from "./p2p_helpers.ts";

const T0 = 1_700_000_000; // a fixed mtime, in seconds
const encoder = new TextEncoder();

function seen(bytes: Uint8Array, mtime: number): Seen {
  return { size: bytes.length, mtime, sha256: sha256(bytes) };
}

Deno.test("three peers (async, worker and process modes) converge with identical bytes and mtimes and no temp files; a newer version then reaches all of them", async () => {
  await using a = await tempFolder();
  await using b = await tempFolder();
  await using c = await tempFolder();
  const files: Record<string, [string, Uint8Array, number]> = {
    "notes.txt": [a.path, encoder.encode("Meeting at noon.\n"), T0],
    "data.bin": [a.path, randomBytes(1 * MIB + 3, 1), T0 + 10],
    "big.bin": [b.path, randomBytes(6 * MIB, 2), T0 + 20],
    "empty.txt": [b.path, new Uint8Array(0), T0 + 30],
    "ünïcode name.txt": [c.path, encoder.encode("names are UTF-8\n"), T0 + 40],
  };
  for (const [name, [dir, bytes, mtime]] of Object.entries(files)) {
    await putFile(dir, name, bytes, mtime);
  }
  // Not shared: they stay where they are.
  await putFile(c.path, "peer.py", encoder.encode("print('mine')\n"), T0);
  await putFile(c.path, ".private", encoder.encode("mine\n"), T0);
  await Deno.mkdir(`${c.path}/folder`);
  await using tracker = await startTrackerScript(["--quiet"]);
  await using pa = await startPeerScript(a.path, tracker.port, { mode: "async" });
  await using pb = await startPeerScript(b.path, tracker.port, { mode: "worker" });
  await using pc = await startPeerScript(c.path, tracker.port, { mode: "process" });
  const expected = Object.fromEntries(
    Object.entries(files).map(([name, [, bytes, mtime]]) => [name, seen(bytes, mtime)]),
  );
  const sharedOnly = (state: Record<string, Seen | null>) =>
    Object.fromEntries(
      Object.entries(state).filter(([n]) => !["peer.py", ".private", "folder"].includes(n)),
    );
  await waitUntil(
    async () => {
      const states = await Promise.all([a, b, c].map((f) => folderState(f.path)));
      return states.every((s) => canonical(sharedOnly(s)) === canonical(expected));
    },
    20_000,
    "three folders with every file",
    () => [pa, pb, pc].map((p) => p.lines.join("\n")).join("\n---\n"),
  );
  // Exactly the shared files: no temp files, and the unshared ones did not travel.
  assert.deepEqual(namesIn(a.path), Object.keys(files).sort());
  assert.deepEqual(namesIn(b.path), Object.keys(files).sort());
  assert.deepEqual(
    namesIn(c.path),
    [...Object.keys(files), "peer.py", ".private", "folder"].sort(),
  );
  assert.ok(pb.lines.some((l) => /downloaded notes\.txt .*SHA-256 verified/.test(l)));

  // A newer version written at one peer replaces the file everywhere.
  const newer = encoder.encode("Meeting moved to 2 pm.\n");
  await putFile(b.path, "notes.txt", newer, T0 + 1000);
  await waitUntil(
    async () => {
      const states = await Promise.all([a, b, c].map((f) => folderState(f.path)));
      return states.every((s) =>
        JSON.stringify(s["notes.txt"]) === JSON.stringify(seen(newer, T0 + 1000))
      );
    },
    10_000,
    "the newer notes.txt everywhere",
    () => [pa, pb, pc].map((p) => p.lines.join("\n")).join("\n---\n"),
  );
  // notes.txt started on A: the bytes A now holds came by a download, verified by SHA-256.
  assert.ok(pa.lines.some((l) => /downloaded notes\.txt .*SHA-256 verified/.test(l)));
  await waitForSameFolders([a.path, b.path], 5000);
});

Deno.test("a dead holder is replaced by another live holder of the same version", async () => {
  await using a = await tempFolder();
  await using b = await tempFolder();
  await using c = await tempFolder();
  const body = randomBytes(2 * MIB, 21);
  await putFile(a.path, "shared.bin", body, T0);
  await putFile(b.path, "shared.bin", body, T0);
  // A long peer timeout: the tracker still lists the dead holder when C asks.
  await using tracker = await startTrackerScript(["--peer-timeout", "120"]);
  await using pa = await startPeerScript(a.path, tracker.port);
  await tracker.waitFor(new RegExp(`:${pa.port} joined`));
  await using pb = await startPeerScript(b.path, tracker.port);
  await tracker.waitFor(new RegExp(`:${pb.port} joined`));
  await pa.stop("SIGKILL");
  await using pc = await startPeerScript(c.path, tracker.port);
  await waitUntil(
    () => namesIn(c.path).includes("shared.bin"),
    10_000,
    "shared.bin at C",
    () => pc.lines.join("\n"),
  );
  assert.deepEqual((await folderState(c.path))["shared.bin"], seen(body, T0));
  // The directory pointed at A (the first to announce it); C fell back to B.
  assert.ok(
    pc.lines.some((l) =>
      l.startsWith(`download of shared.bin from 127.0.0.1:${pa.port} failed`) &&
      l.includes(`trying 127.0.0.1:${pb.port}`)
    ),
    pc.lines.join("\n"),
  );
  assert.ok(pc.lines.some((l) => l.startsWith(`downloaded shared.bin from 127.0.0.1:${pb.port}`)));
});

Deno.test("a downloader killed mid-transfer leaves only a hidden partial file; restarted, it ends with the whole file and no partial", async () => {
  await using dir = await tempFolder();
  const body = randomBytes(8 * MIB, 31);
  const half = body.length / 2;
  await using tracker = await startTrackerScript(["--quiet"]);
  // The holder is this test: it announces the file to the real tracker and
  // serves it, stalling after half of it the first time.
  let stall = true;
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const jobs: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of holder) {
      jobs.push((async () => {
        try {
          await new LineReader(conn, 1024).readLine();
          await writeAll(conn, encoder.encode(`Content-Length: ${body.length}\n`));
          if (stall) {
            stall = false;
            await writeAll(conn, body.subarray(0, half));
            await released;
          } else {
            await writeAll(conn, body);
            await conn.closeWrite();
            await readAll(conn);
          }
        } catch {
          // The downloader was killed.
        } finally {
          conn.close();
        }
      })());
    }
  })();
  const announcer = await Deno.connect({ hostname: "127.0.0.1", port: tracker.port });
  try {
    await writeAll(
      announcer,
      encodeLine({
        port: (holder.addr as Deno.NetAddr).port,
        files: [{ name: "movie.bin", mtime: T0, size: body.length, sha256: sha256(body) }],
      }),
    );
    await new LineReader(announcer, 1024 * 1024).readLine();
    const first = await startPeerScript(dir.path, tracker.port);
    // Named after the version's SHA-256, so that only that version can ever continue it.
    const temp = /^\.movie\.bin\.[0-9a-f]{16}\.part$/;
    await waitUntil(
      () =>
        [...Deno.readDirSync(dir.path)].some((e) =>
          temp.test(e.name) && Deno.statSync(`${dir.path}/${e.name}`).size >= half
        ),
      10_000,
      "half of the file in a temp file",
      () => first.lines.join("\n"),
    );
    await first.stop("SIGKILL");
    const left = namesIn(dir.path);
    assert.equal(left.length, 1, `left behind: ${left}`);
    assert.match(left[0], temp);
    await using second = await startPeerScript(dir.path, tracker.port);
    await waitUntil(
      () => namesIn(dir.path).includes("movie.bin"),
      10_000,
      "movie.bin",
      () => second.lines.join("\n"),
    );
    // This holder offers no ranges: the partial is written again from 0, then renamed.
    assert.deepEqual(await folderState(dir.path), { "movie.bin": seen(body, T0) });
  } finally {
    release();
    announcer.close();
    holder.close();
    await accepting;
    await Promise.all(jobs);
  }
});

Deno.test("peers reconnect to a restarted tracker, send Init again, and keep syncing", async () => {
  await using a = await tempFolder();
  await using b = await tempFolder();
  await putFile(a.path, "before.txt", encoder.encode("before the restart\n"), T0);
  const port = freePort();
  let tracker = await startTrackerScript(["--quiet"], port);
  try {
    await using pa = await startPeerScript(a.path, port);
    await using pb = await startPeerScript(b.path, port);
    await waitForSameFolders([a.path, b.path], 10_000, [pa, pb]);
    await tracker.stop();
    const later = encoder.encode("written while the tracker was down\n");
    await putFile(a.path, "later.txt", later, T0 + 5);
    await waitUntil(
      () => pa.lines.some((l) => /reconnecting in/.test(l)),
      5000,
      "the peer to notice",
    );
    tracker = await startTrackerScript(["--quiet"], port);
    const state = await waitForSameFolders([a.path, b.path], 15_000, [pa, pb, tracker]);
    assert.deepEqual(state["later.txt"], seen(later, T0 + 5));
    for (const peer of [pa, pb]) {
      assert.ok(
        peer.lines.filter((l) => /connected to tracker .*sent Init/.test(l)).length >= 2,
        peer.lines.join("\n"),
      );
    }
  } finally {
    await tracker.stop();
  }
});
