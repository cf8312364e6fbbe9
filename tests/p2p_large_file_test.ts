/**
 * A 400 MiB file between two real peer processes: it arrives whole (SHA-256
 * and mtime), and neither peer's peak resident memory reaches 300 MiB, so
 * both sides stream instead of holding the file. Kept apart from the other
 * P2P tests because it writes 800 MiB to disk; run it alone with
 * `deno test --allow-all tests/p2p_large_file_test.ts`.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { randomBytes, waitUntil } from "./helpers.ts";
import {
  folderState,
  MIB,
  namesIn,
  peakRssBytes,
  startPeerScript,
  startTrackerScript,
  tempFolder,
} from "./p2p_helpers.ts";

const FILE_BYTES = 400 * MIB;
const RSS_LIMIT_BYTES = 300 * MIB;
const T0 = 1_700_000_000; // seconds

Deno.test("a 400 MiB file syncs whole between two peers, each staying under 300 MiB of peak RSS", async () => {
  await using a = await tempFolder();
  await using b = await tempFolder();
  // Written in 8 MiB pieces so the test itself never holds the whole file.
  const hash = createHash("sha256");
  {
    using file = await Deno.open(`${a.path}/large.bin`, { write: true, createNew: true });
    for (let at = 0; at < FILE_BYTES; at += 8 * MIB) {
      const piece = randomBytes(8 * MIB, at / MIB + 1);
      hash.update(piece);
      for (let off = 0; off < piece.length;) off += await file.write(piece.subarray(off));
    }
  }
  await Deno.utime(`${a.path}/large.bin`, T0, T0);
  const digest = hash.digest("hex");
  await using tracker = await startTrackerScript(["--quiet"]);
  await using pa = await startPeerScript(a.path, tracker.port, { args: ["--quiet"] });
  await using pb = await startPeerScript(b.path, tracker.port, { args: ["--quiet"] });
  await waitUntil(
    () => namesIn(b.path).includes("large.bin"),
    60_000,
    "large.bin at the second peer",
    () => pb.lines.join("\n"),
  );
  const peaks = [peakRssBytes(pa.process.pid), peakRssBytes(pb.process.pid)];
  assert.deepEqual((await folderState(b.path))["large.bin"], {
    size: FILE_BYTES,
    mtime: T0,
    sha256: digest,
  });
  assert.ok(pb.lines.some((l) => /downloaded large\.bin .*SHA-256 verified/.test(l)));
  for (const [i, peak] of peaks.entries()) {
    assert.ok(
      peak < RSS_LIMIT_BYTES,
      `peer ${"ab"[i]} peaked at ${(peak / MIB).toFixed(0)} MiB of RSS`,
    );
  }
  console.log(
    `peak RSS: sender ${(peaks[0] / MIB).toFixed(0)} MiB, receiver ${
      (peaks[1] / MIB).toFixed(0)
    } MiB; ${pb.lines.find((l) => l.startsWith("downloaded large.bin"))}`,
  );
});
