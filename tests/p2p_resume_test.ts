/**
 * Downloads that resume (issue 10, item 2; extension "range"): a download
 * stopped part-way keeps what arrived in the version's partial file, and
 * continues from its length after a restart or from another holder. Proved
 * by the bytes the holders say they sent (their "sent" and "stopped
 * sending" lines), with real peers on real sockets. A partial file of
 * another version is never continued, nor one whose bytes turn out wrong.
 *
 * @module
 */

import assert from "node:assert/strict";
import { DownloadQueue } from "../p2p/fetch.ts";
import { DownloadError, downloadFile, HashCache, tempNameFor } from "../p2p/files.ts";
import { serveFiles } from "../p2p/serve_files.ts";
import { randomBytes, sha256, waitUntil } from "./helpers.ts";
import { MIB, putFile, startPeerScript, startTrackerScript, tempFolder } from "./p2p_helpers.ts";

const T0 = 1_700_000_000; // seconds: an ordinary file time
/** The big file of the real-peer tests: big enough that a kill lands part-way. */
const BIG_BYTES = 128 * MIB;
/** Where the download is stopped, as a share of the file. */
const STOP_AT = 0.4;
/** What the holders may send in all, as a share of the file (the goal). */
const MAX_SENT = 1.05;

/** Bytes back from a log figure ("58.6 KiB", "128.0 MiB", "300 B"). */
function parseBytes(text: string): number {
  const [value, unit] = text.split(" ");
  const scale: Record<string, number> = { B: 1, KiB: 1024, MiB: MIB, GiB: 1024 * MIB };
  return Number(value) * scale[unit];
}

/**
 * What a holder says it sent of `name`: each "sent" line (a whole answer,
 * perhaps from an offset) and each "stopped sending" line (what went out
 * before the connection broke).
 */
function sentBy(lines: string[], name: string): { bytes: number; offsets: number[] } {
  let bytes = 0;
  const offsets: number[] = [];
  for (const line of lines) {
    const sent = new RegExp(`^sent "${name}"(?: from byte (\\d+))? \\(([\\d.]+ \\w+)\\)`).exec(
      line,
    );
    if (sent) {
      offsets.push(Number(sent[1] ?? 0));
      bytes += parseBytes(sent[2]);
    }
    const stopped = new RegExp(`^stopped sending "${name}" to \\S+ after ([\\d.]+ \\w+) of`).exec(
      line,
    );
    if (stopped) bytes += parseBytes(stopped[1]);
  }
  return { bytes, offsets };
}

/** Resolves once the partial file of `sha` in `dir` holds at least `bytes`. */
async function partialReaches(dir: string, name: string, sha: string, bytes: number) {
  const path = `${dir}/${tempNameFor(name, sha)}`;
  await waitUntil(
    async () => ((await Deno.stat(path).catch(() => null))?.size ?? 0) >= bytes,
    60_000,
    `the partial file to reach ${bytes} B`,
  );
}

Deno.test("a download killed at 40% continues when the peer restarts: the holder sends at most 1.05x the file", async () => {
  await using from = await tempFolder();
  await using to = await tempFolder();
  const big = randomBytes(BIG_BYTES, 7);
  const sha = sha256(big);
  await putFile(from.path, "big.bin", big, T0);
  await using tracker = await startTrackerScript(["--quiet"]);
  await using holder = await startPeerScript(from.path, tracker.port);
  await holder.waitFor(/sent Init with 1 file/, 60_000);
  const first = await startPeerScript(to.path, tracker.port);
  try {
    await partialReaches(to.path, "big.bin", sha, BIG_BYTES * STOP_AT);
  } finally {
    await first.stop("SIGKILL");
  }
  // The connection broke: the holder says how much it had sent.
  await holder.waitFor(/stopped sending "big\.bin"|sent "big\.bin"/, 30_000);
  await using second = await startPeerScript(to.path, tracker.port);
  const done = await second.waitFor(/downloaded big\.bin/, 120_000);
  assert.match(done, /SHA-256 verified; continued from byte \d+/);
  assert.equal(sha256(await Deno.readFile(`${to.path}/big.bin`)), sha);
  await holder.waitFor(/sent "big\.bin" from byte/, 30_000);
  const { bytes, offsets } = sentBy(holder.lines, "big.bin");
  const explain = holder.lines.filter((l) => l.includes("big.bin")).join("\n") + `\n${done}`;
  assert.ok(offsets.length === 1 && offsets[0] >= BIG_BYTES * 0.3, explain);
  assert.ok(bytes <= BIG_BYTES * MAX_SENT, `${bytes} B sent in all\n${explain}`);
  console.log(`the holder sent ${(bytes / BIG_BYTES).toFixed(3)}x the file; ${done}`);
});

Deno.test("a holder killed mid-transfer: the second holder sends only the rest", async () => {
  await using a = await tempFolder();
  await using c = await tempFolder();
  await using to = await tempFolder();
  const big = randomBytes(BIG_BYTES, 8);
  const sha = sha256(big);
  await putFile(a.path, "big.bin", big, T0);
  await putFile(c.path, "big.bin", big, T0);
  await using tracker = await startTrackerScript(["--quiet"]);
  // The first to announce is the holder a downloader asks first.
  const first = await startPeerScript(a.path, tracker.port);
  // Announced before the second starts, so that the directory names it first (under load the
  // second could otherwise win the race, and the download would never touch the first).
  await first.waitFor(/sent Init with 1 file/, 60_000);
  await using second = await startPeerScript(c.path, tracker.port);
  await second.waitFor(/sent Init with 1 file/, 60_000);
  await using downloader = await startPeerScript(to.path, tracker.port, { interval: 0.3 });
  try {
    await partialReaches(to.path, "big.bin", sha, BIG_BYTES * STOP_AT);
  } finally {
    await first.stop("SIGKILL");
  }
  const done = await downloader.waitFor(/downloaded big\.bin/, 120_000);
  assert.equal(sha256(await Deno.readFile(`${to.path}/big.bin`)), sha);
  assert.match(done, new RegExp(`from 127\\.0\\.0\\.1:${second.port}: .*continued from byte`));
  await second.waitFor(/sent "big\.bin"/, 30_000);
  const { bytes, offsets } = sentBy(second.lines, "big.bin");
  const explain = second.lines.filter((l) => l.includes("big.bin")).join("\n") + `\n${done}`;
  assert.equal(offsets.length, 1, explain);
  assert.ok(offsets[0] >= BIG_BYTES * 0.3, explain);
  // Only the rest: what was not there yet, to the rounding of the log line.
  assert.ok(Math.abs(bytes - (BIG_BYTES - offsets[0])) <= 0.1 * MIB, explain);
  console.log(`the second holder sent ${(bytes / BIG_BYTES).toFixed(3)}x the file; ${done}`);
});

Deno.test("resume never mixes versions: another version's partial file is not continued, and a wrong one starts over", async () => {
  await using from = await tempFolder();
  await using to = await tempFolder();
  const v1 = randomBytes(MIB, 21);
  const v2 = randomBytes(MIB, 22);
  await putFile(from.path, "doc.bin", v2, T0);
  const log: string[] = [];
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await using server = await serveFiles(listener, { dir: from.path, log: (l) => log.push(l) });
  const port = server.addr.port;
  const options = {
    dir: to.path,
    name: "doc.bin",
    hostname: "127.0.0.1",
    port,
    mtime: T0,
    size: v2.length,
    sha256: sha256(v2),
    range: true,
    checkSpace: false,
  };
  // Half of version 1 is here, under version 1's name: version 2 starts from 0.
  const v1Partial = `${to.path}/${tempNameFor("doc.bin", sha256(v1))}`;
  await Deno.writeFile(v1Partial, v1.subarray(0, v1.length / 2));
  const fresh = await downloadFile(options);
  assert.equal(fresh.resumedFrom, 0);
  assert.equal(sha256(await Deno.readFile(`${to.path}/doc.bin`)), sha256(v2));
  // Logged once the downloader has closed: the whole file, from byte 0.
  await waitUntil(
    () => log.some((l) => /^sent "doc\.bin" \(1\.0 MiB\)/.test(l)),
    5000,
    "the holder's line",
    () => log.join("\n"),
  );

  // Wrong bytes under version 2's name: the whole-file check fails, the partial goes, and the
  // next try starts from 0.
  await Deno.remove(`${to.path}/doc.bin`);
  const v2Partial = `${to.path}/${tempNameFor("doc.bin", sha256(v2))}`;
  await Deno.writeFile(v2Partial, v1.subarray(0, 300_000));
  await assert.rejects(
    () => downloadFile(options),
    (err: Error) => err instanceof DownloadError && /continued from byte 300000/.test(err.message),
  );
  assert.equal(await Deno.stat(v2Partial).catch(() => null), null);
  assert.equal((await downloadFile(options)).resumedFrom, 0);

  // A good partial of version 2: only the rest is fetched.
  await Deno.remove(`${to.path}/doc.bin`);
  await Deno.writeFile(v2Partial, v2.subarray(0, 700_000));
  const resumed = await downloadFile(options);
  assert.deepEqual([resumed.resumedFrom, resumed.received], [700_000, v2.length - 700_000]);
  assert.equal(sha256(await Deno.readFile(`${to.path}/doc.bin`)), sha256(v2));

  // The queue removes a partial file whose version is superseded by the one it fetches.
  await Deno.remove(`${to.path}/doc.bin`);
  const stats = { downloads: 0, bytes: 0, failures: 0 };
  const queue = new DownloadQueue({
    dir: to.path,
    hashes: new HashCache(),
    stats,
    checkSpace: false,
    log: () => {},
  });
  try {
    queue.replace(
      new Map([["doc.bin", {
        entry: { ip: "127.0.0.1", port, mtime: T0, size: v2.length, sha256: sha256(v2) },
        sources: [{ ip: "127.0.0.1", port, features: ["range"] }],
        localMtime: null,
      }]]),
    );
    await waitUntil(() => stats.downloads >= 1, 10_000, "the download");
  } finally {
    queue.abort();
    await queue.settled();
  }
  assert.equal(await Deno.stat(v1Partial).catch(() => null), null, "version 1's partial file");
});
