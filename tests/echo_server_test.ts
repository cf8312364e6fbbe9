/**
 * The echo server and the shared concurrency mechanism, in every mode:
 * byte-exact echoes, many clients at once, idle and resetting clients, a
 * reply written after the client's half-close, handlers that fail, and file
 * descriptors that do not leak.
 */

import assert from "node:assert/strict";
import { startEchoServer } from "../echo_server.ts";
import { type Mode, MODE_PERMISSIONS, MODES, serveConnections } from "../lib/concurrency.ts";
import { writeAll } from "../lib/net.ts";
import { projectPath } from "../lib/scripts.ts";
import {
  assertFdsLevelOff,
  exchange,
  randomBytes,
  readAll,
  sha256,
  startScript,
  waitUntil,
  withTimeout,
} from "./helpers.ts";

const FIXTURES = new URL("./fixtures/handlers.ts", import.meta.url).href;
const lines: string[] = [];
const keep = (line: string) => lines.push(line);
/** Concurrent clients per mode, as the issue asks. */
const CONCURRENT: Record<Mode, number> = { async: 200, worker: 100, process: 50 };
const MIB = 1024 * 1024;

for (const mode of MODES) {
  Deno.test(`startEchoServer() in ${mode} mode echoes 0 B, 1 B, all 256 byte values and 64 MiB byte for byte`, async () => {
    await using server = await startEchoServer({ mode, quiet: true, poolSize: 2 });
    const allBytes = Uint8Array.from({ length: 256 }, (_, i) => i);
    for (const data of [new Uint8Array(0), Uint8Array.of(0x2a), allBytes]) {
      const got = await exchange(server.addr.port, data);
      assert.deepEqual(got.received, data);
    }
    const big = randomBytes(64 * MIB, 7);
    const got = await exchange(server.addr.port, big, { keep: false });
    assert.equal(got.bytes, big.length);
    assert.equal(got.sha256, sha256(big));
  });

  Deno.test(`startEchoServer() in ${mode} mode serves ${CONCURRENT[mode]} clients at once, each byte-exact`, async () => {
    await using server = await startEchoServer({ mode, quiet: true, poolSize: 2 });
    const results = await Promise.all(
      Array.from({ length: CONCURRENT[mode] }, async (_, i) => {
        const data = randomBytes(16 * 1024 + i * 37, i + 1);
        const got = await exchange(server.addr.port, data, { keep: false });
        return got.sha256 === sha256(data) && got.bytes === data.length;
      }),
    );
    assert.equal(results.filter(Boolean).length, CONCURRENT[mode]);
    assert.equal(server.stats.accepted, CONCURRENT[mode]);
  });

  Deno.test(`startEchoServer() in ${mode} mode: an idle client does not delay another`, async () => {
    await using server = await startEchoServer({ mode, quiet: true, poolSize: 2 });
    // Three idle clients: with two guests, at least one shares its guest with the active client.
    const idle = await Promise.all([1, 2, 3].map(() => Deno.connect({ port: server.addr.port })));
    try {
      const data = randomBytes(100_000, 3);
      const got = await withTimeout(
        exchange(server.addr.port, data),
        5000,
        "echo behind idle clients",
      );
      assert.equal(got.sha256, sha256(data));
    } finally {
      for (const conn of idle) conn.close();
    }
  });

  Deno.test(`startEchoServer() in ${mode} mode keeps serving after 50 clients reset mid-stream`, async () => {
    await using server = await startEchoServer({ mode, quiet: true, poolSize: 2 });
    await Promise.all(Array.from({ length: 50 }, async () => {
      const conn = await Deno.connect({ port: server.addr.port });
      // Send a lot and never read the echo: closing with unread data sends a reset.
      await writeAll(conn, randomBytes(256 * 1024));
      conn.close();
    }));
    const data = randomBytes(1 * MIB, 9);
    const got = await exchange(server.addr.port, data);
    assert.equal(got.sha256, sha256(data));
    await waitUntil(() => server.stats.active === 0, 5000, "reset connections to be released");
  });

  Deno.test(`serveConnections() in ${mode} mode delivers a reply written after the client half-closed`, async () => {
    await using server = await serveConnections({
      handler: { module: FIXTURES, name: "reverseAfterEof" },
      handlerOptions: {},
      mode,
      poolSize: 2,
      log: keep,
    });
    // 20 MiB arrive in one write() call, beyond any single message between threads or processes.
    for (const size of [1, 5 * MIB, 20 * MIB]) {
      const data = randomBytes(size, size);
      const got = await exchange(server.addr.port, data);
      assert.deepEqual(got.received, data.slice().reverse());
    }
  });

  Deno.test(`serveConnections() in ${mode} mode: a handler that throws closes only its own connection`, async () => {
    await using server = await serveConnections({
      handler: { module: FIXTURES, name: "echoOrFail" },
      handlerOptions: {},
      mode,
      poolSize: 2,
      log: keep,
    });
    const bystander = await Deno.connect({ port: server.addr.port });
    try {
      const failing = await Deno.connect({ port: server.addr.port });
      await writeAll(failing, new TextEncoder().encode("throw\n"));
      assert.equal((await readAll(failing)).length, 0);
      failing.close();
      await writeAll(bystander, new TextEncoder().encode("still here\n"));
      await bystander.closeWrite();
      assert.equal(new TextDecoder().decode(await readAll(bystander)), "still here\n");
      assert.ok(lines.some((l) => l.includes("handler asked to throw")));
    } finally {
      bystander.close();
    }
  });
}

for (const mode of ["worker", "process"] as const) {
  Deno.test(`serveConnections() in ${mode} mode: a dying ${mode} closes only its connections and is replaced`, async () => {
    await using server = await serveConnections({
      handler: { module: FIXTURES, name: "echoOrFail" },
      handlerOptions: {},
      mode,
      poolSize: 2,
      log: keep,
    });
    // The least busy guest takes each connection: these two land on different guests.
    const bystander = await Deno.connect({ port: server.addr.port });
    const doomed = await Deno.connect({ port: server.addr.port });
    try {
      await waitUntil(() => server.stats.active === 2, 5000, "both connections");
      await writeAll(doomed, new TextEncoder().encode("die\n"));
      assert.equal((await readAll(doomed)).length, 0);
      await waitUntil(() => server.stats.restarts === 1, 10_000, "the replacement");
      await writeAll(bystander, new TextEncoder().encode("unaffected\n"));
      await bystander.closeWrite();
      assert.equal(new TextDecoder().decode(await readAll(bystander)), "unaffected\n");
      // The pool is whole again: a new client is served.
      const got = await exchange(server.addr.port, new TextEncoder().encode("after\n"));
      assert.equal(new TextDecoder().decode(got.received), "after\n");
    } finally {
      doomed.close();
      bystander.close();
    }
  });

  Deno.test(`serveConnections() in ${mode} mode: guests that die young are replaced with growing waits, reported once`, async () => {
    const said: string[] = [];
    await using server = await serveConnections({
      handler: { module: FIXTURES, name: "echoOrFail" },
      handlerOptions: {},
      mode,
      poolSize: 2,
      log: (line) => said.push(line),
    });
    // Six guests in a row die right after starting (a handler that crashes at once).
    const started = performance.now();
    for (let death = 1; death <= 6; death++) {
      await waitUntil(() => server.stats.restarts === death - 1, 15_000, `restart ${death - 1}`);
      const doomed = await Deno.connect({ port: server.addr.port });
      try {
        await writeAll(doomed, new TextEncoder().encode("die\n"));
        await readAll(doomed);
      } finally {
        doomed.close();
      }
    }
    await waitUntil(() => server.stats.restarts === 6, 15_000, "the sixth replacement");
    // Waits of 100, 200, 400... ms per slot: the six replacements took a while, not a burst.
    assert.ok(performance.now() - started >= 1000, "replacements came without waiting");
    assert.equal(said.filter((l) => l.includes("reported once")).length, 1, said.join("\n"));
    assert.equal(said.filter((l) => / died /.test(l)).length, 1, said.join("\n"));
    const got = await exchange(server.addr.port, new TextEncoder().encode("after\n"));
    assert.equal(new TextDecoder().decode(got.received), "after\n");
  });

  Deno.test(`serveConnections() in ${mode} mode: a ${mode} that cannot start is retried with backoff, reported once`, async () => {
    const dir = projectPath("tests/tmp");
    await Deno.mkdir(dir, { recursive: true });
    const marker = await Deno.makeTempFile({ dir, prefix: "crash_marker_" });
    await Deno.remove(marker);
    const said: string[] = [];
    const module = new URL(
      `./fixtures/crash_on_load.ts?marker=${encodeURIComponent(marker)}`,
      import.meta.url,
    ).href;
    await using server = await serveConnections({
      handler: { module, name: "echoUnlessMarked" },
      handlerOptions: {},
      mode,
      poolSize: 2,
      log: (line) => said.push(line),
    });
    try {
      const bystander = await Deno.connect({ port: server.addr.port });
      const doomed = await Deno.connect({ port: server.addr.port });
      try {
        await waitUntil(() => server.stats.active === 2, 5000, "both connections");
        // From now on every fresh guest fails while loading its handler.
        await Deno.writeTextFile(marker, "crash");
        await writeAll(doomed, new TextEncoder().encode("die\n"));
        assert.equal((await readAll(doomed)).length, 0);
        await waitUntil(() => server.stats.startFailures >= 2, 10_000, "two failed restarts");
        // The crash loop waits longer after each failure: over two more seconds only a handful
        // of tries (100, 200, 400, 800 ms... apart), where a retry at once would make dozens.
        const before = server.stats.startFailures;
        await new Promise((resolve) => setTimeout(resolve, 2000));
        const tries = server.stats.startFailures - before;
        assert.ok(tries <= 4, `${tries} restart tries in 2 s`);
        // The death and the failed restarts after it are one crash loop: one line says so.
        assert.equal(said.filter((l) => l.includes("reported once")).length, 1, said.join("\n"));
        assert.equal(said.filter((l) => l.includes("could not restart")).length, 0);
        // The healthy guest goes on serving meanwhile.
        await writeAll(bystander, new TextEncoder().encode("unaffected\n"));
        await bystander.closeWrite();
        assert.equal(new TextDecoder().decode(await readAll(bystander)), "unaffected\n");
      } finally {
        doomed.close();
        bystander.close();
      }
      // The cause goes away: the empty slot is filled again, without anyone's help.
      await Deno.remove(marker);
      await waitUntil(() => server.stats.restarts === 1, 15_000, "the slot to be refilled");
      assert.equal(server.childPids().length, mode === "process" ? 2 : 0);
      const got = await exchange(server.addr.port, new TextEncoder().encode("after\n"));
      assert.equal(new TextDecoder().decode(got.received), "after\n");
    } finally {
      await Deno.remove(marker).catch(() => {});
    }
  });

  Deno.test(`startEchoServer() in ${mode} mode echoes 5 MB sixteen times without losing the tail`, async () => {
    await using server = await startEchoServer({ mode, quiet: true, poolSize: 2 });
    const data = randomBytes(5_000_000, 11);
    for (let i = 0; i < 16; i++) {
      const got = await exchange(server.addr.port, data, { keep: false });
      assert.equal(got.bytes, data.length, `run ${i}`);
      assert.equal(got.sha256, sha256(data), `run ${i}`);
    }
  });
}

for (const mode of MODES) {
  Deno.test(`echo_server.ts --mode ${mode}: file descriptors level off over 300 connections`, async () => {
    await using script = await startScript(
      "echo_server.ts",
      ["--port", "0", "--mode", mode, "--quiet", "--workers", "2"],
      { permissions: MODE_PERMISSIONS[mode] },
    );
    await assertFdsLevelOff(script.process.pid, async () => {
      const data = randomBytes(1000);
      assert.equal((await exchange(script.port, data)).sha256, sha256(data));
    });
  });
}
