/**
 * The P2P synchronizer over a bad network: 100 ms each way and 5% loss each
 * way. Between network namespaces joined by `lib/lossy_bridge.py
 * --delay-ms` (root, `ip` and `python3`; skipped with the reason otherwise),
 * and on loopback through `lib/delay_relay.ts` (the loss emulated), a
 * handful of files on one peer reach the other whole, byte for byte, within
 * a generous bound; the link is checked to be slow (a handshake takes a
 * round trip). The delay relay itself: every byte through, in order, each
 * chunk late by at least its delay.
 *
 * @module
 */

import assert from "node:assert/strict";
import { chunkPenalty, SEGMENT_BYTES, startDelayRelay } from "../lib/delay_relay.ts";
import { whyNoNamespaces } from "../lib/tcp_vs_udp.ts";
import { startEchoServer } from "../echo_server.ts";
import { type BadLinkPath, syncOverBadLink } from "../bench/p2p_badnet.ts";
import { randomBytes } from "./helpers.ts";
import { canonical, folderState, putFile, tempFolder } from "./p2p_helpers.ts";

const T0 = 1_700_000_000; // seconds: the files' mtime
const FILES = 20;
const FILE_BYTES = 4096;
const DELAY_MS = 100; // each way
const LOSS = 0.05; // each way
const SEED = 7;
/** Seconds the sync may take before the test reports what arrived (today it takes a few). */
const GIVE_UP_SECONDS = 40;

const namespacesReason = whyNoNamespaces();

/** Our namespaces still listed (none, once a run is over). */
function ourNamespaces(): string[] {
  if (namespacesReason !== null) return [];
  const out = new Deno.Command("ip", { args: ["netns", "list"], stdout: "piped" }).outputSync();
  return new TextDecoder().decode(out.stdout).split("\n")
    .filter((line) => line.startsWith(`p2pbad-${Deno.pid}-`));
}

/** Puts FILES small files on A, syncs them to B over the bad link, and checks B has them all. */
async function syncAndCheck(path: BadLinkPath): Promise<void> {
  await using a = await tempFolder();
  await using b = await tempFolder();
  for (let i = 0; i < FILES; i++) {
    await putFile(a.path, `f${i}.bin`, randomBytes(FILE_BYTES, 100 + i), T0 + i);
  }
  const run = await syncOverBadLink({
    from: a.path,
    to: b.path,
    count: FILES,
    delayMs: DELAY_MS,
    loss: LOSS,
    seed: SEED,
    path,
    giveUpSeconds: GIVE_UP_SECONDS,
  });
  const shown = `${run.link}\n${run.arrived} of ${FILES} in ${run.seconds.toFixed(1)} s\n${
    run.lines.join("\n")
  }`;
  assert.equal(run.path, path, shown);
  assert.ok(run.complete, `not every file arrived:\n${shown}`);
  // Whole and the same: names, sizes, mtimes and SHA-256 of every file.
  assert.equal(canonical(await folderState(b.path)), canonical(await folderState(a.path)), shown);
  assert.ok(run.carried.packets > 0, shown);
  if (path === "namespaces") {
    // The link is slow: a TCP handshake across it takes one round trip, twice the delay.
    assert.ok(run.handshakeMs !== null && run.handshakeMs >= 2 * DELAY_MS, shown);
    assert.ok(run.carried.dropped > 0, `the bridge dropped nothing:\n${shown}`);
  }
  assert.deepEqual(ourNamespaces(), []);
}

Deno.test({
  name: namespacesReason === null
    ? `across network namespaces with 100 ms and 5% loss each way, ${FILES} files reach the other peer whole`
    : `across a delayed lossy bridge: SKIPPED because ${namespacesReason}`,
  ignore: namespacesReason !== null,
  fn: () => syncAndCheck("namespaces"),
});

Deno.test(
  `on loopback through the delay relay (100 ms each way, 5% loss emulated), ${FILES} files reach the other peer whole`,
  () => syncAndCheck("loopback"),
);

Deno.test("startDelayRelay() delivers every byte in order, each chunk at least its delay late each way", async () => {
  const delayMs = 50;
  await using server = await startEchoServer({ quiet: true });
  // Twice the bench's loss, so that emulated resends surely happen on the way.
  await using link = startDelayRelay({ target: server.addr, delayMs, loss: 0.1, seed: SEED });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: link.addr.port });
  try {
    const buffer = new Uint8Array(64 * 1024);
    // One short round trip after the handshake: there and back, each held delayMs.
    await conn.write(new Uint8Array([1]));
    assert.equal(await conn.read(buffer), 1);
    const sent = performance.now();
    await conn.write(new Uint8Array([2]));
    assert.equal(await conn.read(buffer), 1);
    assert.equal(buffer[0], 2);
    // A lower bound only: the relay must not deliver early; late is always allowed.
    assert.ok(performance.now() - sent >= 2 * delayMs - 1, "a round trip took under 2 x the delay");

    // Many chunks at once, echoed: the same bytes in the same order, despite the "drops".
    const data = randomBytes(100_000, 9);
    const echoed = new Uint8Array(data.length);
    const writing = (async () => {
      for (let at = 0; at < data.length; at += 1000) {
        await conn.write(data.subarray(at, Math.min(at + 1000, data.length)));
      }
    })();
    for (let got = 0; got < data.length;) {
      const n = await conn.read(buffer);
      assert.ok(n !== null, "the relay closed early");
      echoed.set(buffer.subarray(0, n), got);
      got += n;
    }
    await writing;
    assert.deepEqual(echoed, data);
    const { forward, back } = link.stats;
    assert.ok(forward.dropped + back.dropped > 0, JSON.stringify(link.stats));
    assert.equal(link.connections(), 1);
  } finally {
    conn.close();
  }
});

Deno.test("chunkPenalty() counts each segment of a chunk and waits for the slowest resend", () => {
  // 4096 B is three segments: the first through, the second lost twice, the third lost once.
  const draws = [0.9, 0.01, 0.01, 0.9, 0.01, 0.9];
  assert.equal(Math.ceil(4096 / SEGMENT_BYTES), 3);
  assert.deepEqual(chunkPenalty(() => draws.shift()!, 4096, 0.05, 400), {
    dropped: 3,
    delayMs: 400 + 800,
  });
  assert.deepEqual(draws, []);
  // Nothing lost: on time.
  assert.deepEqual(chunkPenalty(() => 0.5, 100, 0.05, 400), { dropped: 0, delayMs: 0 });
  // Lost every time: TCP gives up.
  assert.equal(chunkPenalty(() => 0, 100, 0.05, 400), null);
});
