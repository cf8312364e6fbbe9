/**
 * A peer whose own folder cannot take a file: a full device (a small tmpfs),
 * a read-only folder, a Deno process without write permission. Each case
 * gets one line with the reason on this peer's console, blames no holder,
 * leaves no temp file, waits (5 s, doubling) instead of fetching every
 * round, and fetches the file once there is room or the folder is writable.
 *
 * The tmpfs cases need root (`mount`); they are skipped with the reason
 * otherwise. Run as `deno run`, this file is the child of the permission
 * test (see {@linkcode notCapableChild}).
 */

import assert from "node:assert/strict";
import { DownloadQueue, type DownloadQueueOptions } from "../p2p/fetch.ts";
import { HashCache, isTempName } from "../p2p/files.ts";
import { startPeer } from "../p2p/peer.ts";
import type { Wanted } from "../p2p/plan.ts";
import { randomBytes, sha256, waitUntil } from "./helpers.ts";
import { fakeHolder, fakeTracker, MIB, namesIn, tempFolder } from "./p2p_helpers.ts";

const T0 = 1_700_000_000; // a fixed mtime, in seconds
/** Time between the simulated rounds of the queue tests (a peer's `--interval`). */
const ROUND_MS = 100; // milliseconds

/** Runs a command; returns its stderr, or `null` when it worked. */
async function run(command: string, args: string[]): Promise<string | null> {
  try {
    const out = await new Deno.Command(command, { args, stdout: "null", stderr: "piped" })
      .output();
    return out.success ? null : new TextDecoder().decode(out.stderr).trim() || `exit ${out.code}`;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

/** Why tmpfs cannot be mounted here (not root, no `mount`, a container that forbids it), or `null`. */
async function tmpfsProblem(): Promise<string | null> {
  if (Deno.build.os !== "linux") return "tmpfs mounts need Linux";
  if (Deno.uid() !== 0) return "mounting a tmpfs needs root";
  await using dir = await tempFolder("p2p_disk_probe_");
  const problem = await run("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", dir.path]);
  if (problem === null) await run("umount", [dir.path]);
  return problem;
}

/** A tmpfs of `size` (as `mount -o size=` reads it, e.g. "1m") on a fresh folder; unmounted on dispose. */
async function tmpfsShare(size: string) {
  const folder = await tempFolder("p2p_disk_");
  const problem = await run("mount", [
    "-t",
    "tmpfs",
    "-o",
    `size=${size},mode=755`,
    "tmpfs",
    folder.path,
  ]);
  if (problem !== null) {
    await folder[Symbol.asyncDispose]();
    throw new Error(`mount failed: ${problem}`);
  }
  return {
    path: folder.path,
    /** Mounts it again with other options ("size=8m", "ro", "rw"), keeping the files. */
    async remount(options: string) {
      const problem = await run("mount", ["-o", `remount,${options}`, folder.path]);
      if (problem !== null) throw new Error(`remount ${options} failed: ${problem}`);
    },
    async [Symbol.asyncDispose]() {
      await run("umount", [folder.path]);
      await folder[Symbol.asyncDispose]();
    },
  };
}

const problem = Deno.build.os === "linux" && !import.meta.main ? await tmpfsProblem() : "not run";
if (problem !== null && !import.meta.main) {
  console.log(`p2p_disk_test: tmpfs cases skipped: ${problem}`);
}

/** The wanted entry for a file holding `body`, held by the given ports. */
function wanted(body: Uint8Array, ports: number[], mtime = T0): Wanted {
  return {
    entry: {
      ip: "127.0.0.1",
      port: ports[0],
      mtime,
      size: body.length,
      sha256: sha256(body),
      holders: ports.map((port) => ({ ip: "127.0.0.1", port, mtime })),
    },
    sources: ports.map((port) => ({ ip: "127.0.0.1", port })),
    localMtime: null,
    byContent: true,
  };
}

/**
 * A download queue into `dir` played as the peer's rounds: every
 * {@linkcode ROUND_MS}, the plan is "every file of `files` not in the folder
 * yet and not in flight", as `planVersions()` would decide. Its log lines and
 * counters are kept for the test; `stop()` ends the rounds and waits for the
 * queue.
 */
function queueInRounds(
  dir: string,
  files: Map<string, Wanted>,
  options: Pick<DownloadQueueOptions, "checkSpace" | "localRetryFirstMs"> = {},
) {
  const lines: string[] = [];
  const stats = { downloads: 0, bytes: 0, failures: 0 };
  const queue = new DownloadQueue({
    dir,
    hashes: new HashCache(),
    stats,
    log: (line) => lines.push(line),
    ...options,
  });
  let rounds = 0;
  const timer = setInterval(() => {
    rounds++;
    const here = new Set(namesIn(dir));
    const plan = new Map(
      [...files].filter(([name]) => !here.has(name) && !queue.inFlight.has(name)),
    );
    queue.replace(plan);
  }, ROUND_MS);
  return {
    queue,
    lines,
    stats,
    get rounds() {
      return rounds;
    },
    async stop() {
      clearInterval(timer);
      queue.abort();
      await queue.settled();
    },
  };
}

/** Our temp files left in a folder (there must be none). */
function tempFiles(dir: string): string[] {
  return namesIn(dir).filter(isTempName);
}

Deno.test({
  name:
    "a file bigger than the free space is refused before any holder is asked, reported once, and fetched once the device is bigger",
  ignore: problem !== null,
  async fn() {
    await using share = await tmpfsShare("1m");
    const big = randomBytes(2 * MIB, 7);
    const small = randomBytes(10_000, 8);
    const holder = fakeHolder(new Map([["big.bin", big], ["small.txt", small]]));
    const rounds = queueInRounds(
      share.path,
      new Map([
        ["big.bin", wanted(big, [holder.port])],
        ["small.txt", wanted(small, [holder.port])],
      ]),
    );
    const { queue, lines, stats } = rounds;
    try {
      // Twenty rounds: the old peer asked for big.bin (and failed) in every one of them.
      await waitUntil(() => rounds.rounds >= 20, 20_000, "twenty rounds");
      const explain = lines.join("\n");
      assert.deepEqual(namesIn(share.path), ["small.txt"], explain);
      assert.deepEqual(holder.requests, ["small.txt"], "big.bin was asked for: " + explain);
      const refusals = lines.filter((l) => l.startsWith("cannot"));
      assert.equal(refusals.length, 1, explain);
      assert.match(
        refusals[0],
        new RegExp(
          `^cannot fetch big\\.bin into ${share.path}: not enough space on the device \\(needs 2\\.0 MiB, \\d+\\.\\d [KM]iB free\\); retrying in 5 s$`,
        ),
      );
      assert.equal(stats.failures, 0, explain);
      assert.equal(queue.badHolders.size, 0, explain);
      assert.ok(queue.localBlocked.has("big.bin"), explain);
      // Still "queued": the plan will not announce a new fetch every round.
      assert.ok(queue.queued.has("big.bin"), explain);

      // A bigger device: the next round sees the room and fetches at once.
      await share.remount("size=8m");
      await waitUntil(
        () => namesIn(share.path).includes("big.bin"),
        20_000,
        "big.bin after the remount",
        () => lines.join("\n"),
      );
    } finally {
      await rounds.stop();
      await holder.close();
    }
    assert.deepEqual(holder.requests, ["small.txt", "big.bin"]);
    assert.equal(sha256(await Deno.readFile(`${share.path}/big.bin`)), sha256(big));
    assert.deepEqual(tempFiles(share.path), []);
    assert.equal(queue.localBlocked.size, 0);
  },
});

Deno.test({
  name:
    "a write that fills the device (no free-space check) blames no holder, stops for the round, and resumes when space is freed",
  ignore: problem !== null,
  async fn() {
    await using share = await tmpfsShare("4m");
    // A filler leaves about 1 MiB: a 2 MiB download runs out of room half way.
    await Deno.writeFile(`${share.path}/filler.dat`, new Uint8Array(3 * MIB));
    const big = randomBytes(2 * MIB, 9);
    const first = fakeHolder(new Map([["big.bin", big]]));
    const second = fakeHolder(new Map([["big.bin", big]]));
    const rounds = queueInRounds(
      share.path,
      new Map([["big.bin", wanted(big, [first.port, second.port])]]),
      // As a peer run without --allow-sys=statfs: only the write error tells.
      { checkSpace: false },
    );
    const { queue, lines, stats } = rounds;
    try {
      await waitUntil(() => rounds.rounds >= 20, 20_000, "twenty rounds");
      const explain = lines.join("\n");
      const refusals = lines.filter((l) => l.startsWith("cannot"));
      assert.equal(refusals.length, 1, explain);
      assert.match(
        refusals[0],
        new RegExp(
          `^cannot write to ${share.path}: no space left on the device \\(needs 2\\.0 MiB, \\d+\\.\\d [KM]iB free\\); retrying in 5 s$`,
        ),
      );
      // Asked once, in twenty rounds; the second holder never: it would fail alike.
      assert.deepEqual(first.requests, ["big.bin"], explain);
      assert.deepEqual(second.requests, [], explain);
      assert.equal(stats.failures, 0, explain);
      assert.equal(queue.badHolders.size, 0, explain);
      assert.ok(queue.blockedUntil > 0, explain);
      assert.deepEqual(tempFiles(share.path), [], explain);
      assert.ok(!lines.some((l) => l.includes("failed")), explain);

      // Room again: the next round notices the space and fetches.
      await Deno.remove(`${share.path}/filler.dat`);
      await waitUntil(
        () => namesIn(share.path).includes("big.bin"),
        20_000,
        "big.bin after the filler went",
        () => lines.join("\n"),
      );
    } finally {
      await rounds.stop();
      await first.close();
      await second.close();
    }
    assert.equal(sha256(await Deno.readFile(`${share.path}/big.bin`)), sha256(big));
    assert.ok(lines.includes(`${share.path} takes downloads again`), lines.join("\n"));
    assert.equal(queue.blockedUntil, 0);
    assert.deepEqual(tempFiles(share.path), []);
  },
});

/**
 * A folder this process cannot write: as root a read-only tmpfs (root
 * ignores file modes), else a folder with mode 555. `writable()` undoes it.
 */
async function readOnlyShare() {
  if (Deno.uid() === 0) {
    const share = await tmpfsShare("8m");
    await share.remount("ro");
    return {
      path: share.path,
      reason: "the file system is read-only",
      writable: () => share.remount("rw"),
      [Symbol.asyncDispose]: () => share[Symbol.asyncDispose](),
    };
  }
  const folder = await tempFolder("p2p_disk_");
  await Deno.chmod(folder.path, 0o555);
  return {
    path: folder.path,
    reason: "the system does not let this user write there",
    writable: () => Deno.chmod(folder.path, 0o755),
    async [Symbol.asyncDispose]() {
      await Deno.chmod(folder.path, 0o755);
      await folder[Symbol.asyncDispose]();
    },
  };
}

Deno.test({
  name:
    "a peer with a read-only folder says so once, blames no holder, retries far less than every round, and syncs once it is writable",
  // As root the read-only folder is a tmpfs; without root a chmod 555 folder works.
  ignore: import.meta.main || (Deno.uid() === 0 && problem !== null),
  async fn() {
    await using share = await readOnlyShare();
    const body = randomBytes(300_000, 11);
    const holder = fakeHolder(new Map([["a.bin", body]]));
    const entry = {
      ip: "127.0.0.1",
      port: holder.port,
      mtime: T0,
      size: body.length,
      sha256: sha256(body),
    };
    const tracker = fakeTracker(() => ({ "a.bin": entry }));
    const lines: string[] = [];
    try {
      await using peer = await startPeer({
        dir: share.path,
        tracker: { hostname: "127.0.0.1", port: tracker.port },
        interval: 0.2,
        log: (line) => lines.push(line),
      });
      await waitUntil(
        () => peer.stats.rounds >= 15,
        30_000,
        "fifteen rounds",
        () => lines.join("\n"),
      );
      const explain = lines.join("\n");
      const refusals = lines.filter((l) => l.startsWith("cannot write to"));
      assert.deepEqual(refusals, [
        `cannot write to ${share.path}: ${share.reason}; retrying in 5 s`,
      ]);
      // Fifteen rounds, 0.2 s apart: at most one retry after the 5 s wait.
      assert.ok(holder.requests.length >= 1 && holder.requests.length <= 2, explain);
      assert.equal(peer.stats.failures, 0, explain);
      assert.ok(!lines.some((l) => / failed: /.test(l)), explain);
      // Still queued while it waits: the plan announces the fetch once, not every round.
      assert.equal(lines.filter((l) => l.includes("fetching a.bin")).length, 1, explain);

      await share.writable();
      await waitUntil(
        () => namesIn(share.path).includes("a.bin"),
        30_000,
        "a.bin once the folder is writable",
        () => lines.join("\n"),
      );
      assert.ok(lines.includes(`${share.path} takes downloads again`), lines.join("\n"));
      assert.deepEqual(tempFiles(share.path), []);
    } finally {
      await tracker.close();
      await holder.close();
    }
    assert.equal(sha256(await Deno.readFile(`${share.path}/a.bin`)), sha256(body));
  },
});

Deno.test({
  name:
    "after local failures the waits double: each retry comes at least twice as late as the last",
  ignore: import.meta.main || (Deno.uid() === 0 && problem !== null),
  async fn() {
    await using share = await readOnlyShare();
    const body = randomBytes(20_000, 13);
    const holder = fakeHolder(new Map([["a.bin", body]]));
    const first = 200; // ms: the first wait, short for the test (5 s in a peer)
    const rounds = queueInRounds(
      share.path,
      new Map([["a.bin", wanted(body, [holder.port])]]),
      { localRetryFirstMs: first },
    );
    const { queue, lines, stats } = rounds;
    try {
      // Waits of 0.2, 0.4, 0.8, 1.6 s: the fifth attempt comes 3 s after the first.
      await waitUntil(
        () => holder.times.length >= 5,
        30_000,
        "five attempts",
        () => lines.join("\n"),
      );
    } finally {
      await rounds.stop();
      await holder.close();
    }
    const explain = `${lines.join("\n")}\nrounds: ${rounds.rounds}, attempts at ${
      holder.times.map((t) => (t - holder.times[0]).toFixed(0)).join(", ")
    } ms`;
    // Lower bounds only: a busy machine can make the gaps longer, never shorter.
    for (let i = 1; i < holder.times.length; i++) {
      const gap = holder.times[i] - holder.times[i - 1];
      assert.ok(gap >= first * 2 ** (i - 1) - 5, `gap ${i} of ${gap.toFixed(0)} ms\n${explain}`);
    }
    assert.equal(lines.length, 1, explain);
    assert.equal(stats.failures, 0, explain);
    assert.equal(queue.badHolders.size, 0, explain);
  },
});

/**
 * The child of the next test, run with `--allow-write` for another folder
 * only: a queue fetching into `dir` from the holder on `port` for twenty
 * rounds; prints the lines, counters and blocks as JSON.
 */
async function notCapableChild([port, dir]: string[]): Promise<void> {
  const body = randomBytes(50_000, 12);
  const rounds = queueInRounds(dir, new Map([["a.bin", wanted(body, [Number(port)])]]));
  const { queue, lines, stats } = rounds;
  await waitUntil(() => rounds.rounds >= 20, 20_000, "twenty rounds");
  await rounds.stop();
  console.log(JSON.stringify({
    lines,
    stats,
    badHolders: queue.badHolders.size,
    blocked: queue.blockedUntil > 0,
    names: namesIn(dir),
  }));
}

if (import.meta.main) await notCapableChild(Deno.args);

Deno.test("a peer process without Deno's write permission for its folder says so once and blames no holder", async () => {
  await using share = await tempFolder();
  await using elsewhere = await tempFolder();
  const holder = fakeHolder(new Map([["a.bin", randomBytes(50_000, 12)]]));
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net=127.0.0.1",
        "--allow-read",
        `--allow-write=${elsewhere.path}`,
        new URL(import.meta.url).pathname,
        String(holder.port),
        share.path,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
  } finally {
    await holder.close();
  }
  const stderr = new TextDecoder().decode(out.stderr);
  assert.ok(out.success, stderr);
  const report = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
  const explain = JSON.stringify(report, null, 2) + "\n" + stderr;
  assert.deepEqual(report.lines, [
    `cannot write to ${share.path}: Deno's permissions do not allow writing there (start the peer with --allow-write for it); retrying in 5 s`,
  ], explain);
  assert.equal(report.stats.failures, 0, explain);
  assert.equal(report.badHolders, 0, explain);
  assert.equal(report.blocked, true, explain);
  assert.deepEqual(report.names, [], explain);
  // Twenty rounds, one attempt.
  assert.deepEqual(holder.requests, ["a.bin"], explain);
});
