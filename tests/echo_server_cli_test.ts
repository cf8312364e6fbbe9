/**
 * echo_server.ts run the way a student runs it: `deno run`, the handout's
 * `nc` check, flags good and bad, missing permissions, and Ctrl-C.
 */

import assert from "node:assert/strict";
import { MODE_PERMISSIONS, MODES } from "../lib/concurrency.ts";
import { writeAll } from "../lib/net.ts";
import { haveCommand, readAll, runScript, startScript } from "./helpers.ts";

for (const mode of MODES) {
  Deno.test({
    name:
      `echo_server.ts --mode ${mode} passes the handout's check: echo "Foobar" | nc localhost PORT -q 1`,
    ignore: !haveCommand("nc"),
    async fn() {
      await using server = await startScript("echo_server.ts", ["--port", "0", "--mode", mode], {
        permissions: MODE_PERMISSIONS[mode],
      });
      const nc = await new Deno.Command("sh", {
        args: ["-c", `echo "Foobar" | nc localhost ${server.port} -q 1`],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(new TextDecoder().decode(nc.stdout), "Foobar\n");
      // The server told us who connected and what arrived.
      await server.waitFor(/Connected by 127\.0\.0\.1:\d+/);
      await server.waitFor(/sent 7 B: "Foobar\\n"/);
      await server.waitFor(/Closed 127\.0\.0\.1:\d+ .*echoed 7 B/);
      const status = await server.stop("SIGTERM");
      assert.equal(status.code, 0, server.lines.join("\n"));
    },
  });
}

Deno.test("echo_server.ts --quiet prints only the listening line", async () => {
  await using server = await startScript("echo_server.ts", ["--port", "0", "--quiet"]);
  const conn = await Deno.connect({ port: server.port });
  await conn.write(new TextEncoder().encode("hi"));
  await conn.closeWrite();
  assert.equal(new TextDecoder().decode(await readAll(conn)), "hi");
  conn.close();
  await server.stop();
  assert.deepEqual(server.lines.filter((l) => !l.includes("stopping")).length, 1);
});

Deno.test("echo_server.ts --quiet still reports a connection that ended badly", async () => {
  await using server = await startScript("echo_server.ts", ["--port", "0", "--quiet"]);
  const conn = await Deno.connect({ port: server.port });
  // Send far more than the socket buffers hold and never read the echo: the server's write
  // blocks, then our close (with unread data) resets the connection under it.
  const sending = writeAll(conn, new Uint8Array(64 * 1024 * 1024)).catch(() => {});
  await new Promise((resolve) => setTimeout(resolve, 300));
  conn.close();
  await sending;
  await server.waitFor(/^Closed 127\.0\.0\.1:\d+ \((reset by the client|error: .*)\)/);
});

for (const mode of MODES) {
  Deno.test({
    name:
      `echo_server.ts --mode ${mode} --max-conns 1: a second client is refused at once, the first is unaffected, the next is served`,
    ignore: !haveCommand("nc"),
    async fn() {
      await using server = await startScript(
        "echo_server.ts",
        ["--port", "0", "--max-conns", "1", "--mode", mode],
        { permissions: MODE_PERMISSIONS[mode] },
      );
      const first = await Deno.connect({ port: server.port });
      try {
        await server.waitFor(/Connected by/);
        await server.waitFor(/refusing new clients until one finishes/);
        // A student's second nc is told "Connection refused" and exits 1 at once, not after a wait.
        const started = performance.now();
        const nc = await new Deno.Command("nc", {
          args: ["-v", "-w", "5", "127.0.0.1", String(server.port)],
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).output();
        assert.equal(nc.code, 1);
        assert.match(new TextDecoder().decode(nc.stderr), /refused/);
        assert.ok(performance.now() - started < 4000, "nc gave up at once, not after its -w 5");
        await assert.rejects(Deno.connect({ port: server.port }), Deno.errors.ConnectionRefused);
        // The first client is served as if nobody else had tried.
        await writeAll(first, new TextEncoder().encode("ok"));
        await first.closeWrite();
        assert.equal(new TextDecoder().decode(await readAll(first)), "ok");
      } finally {
        first.close();
      }
      // Once the first has gone, the server listens again and serves the next client.
      await server.waitFor(/Closed 127\.0\.0\.1/);
      let next: Deno.TcpConn | null = null;
      for (let tries = 0; next === null; tries++) {
        try {
          next = await Deno.connect({ port: server.port });
        } catch (err) {
          if (!(err instanceof Deno.errors.ConnectionRefused) || tries > 100) throw err;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      }
      try {
        await writeAll(next, new TextEncoder().encode("three"));
        await next.closeWrite();
        assert.equal(new TextDecoder().decode(await readAll(next)), "three");
      } finally {
        next.close();
      }
      assert.equal(server.lines.filter((l) => /^Connected by/.test(l)).length, 2);
    },
  });
}

Deno.test("echo_server.ts --max-conns 1 --queue: a second client waits until the first is done, then is served", async () => {
  await using server = await startScript("echo_server.ts", [
    "--port",
    "0",
    "--max-conns",
    "1",
    "--queue",
  ]);
  const first = await Deno.connect({ port: server.port });
  try {
    await server.waitFor(/Connected by/);
    const second = await Deno.connect({ port: server.port });
    try {
      await second.write(new TextEncoder().encode("two"));
      await second.closeWrite();
      await server.waitFor(/new clients wait until one finishes/);
      // The first client is served as if the second were not there.
      await first.write(new TextEncoder().encode("ok"));
      await first.closeWrite();
      assert.equal(new TextDecoder().decode(await readAll(first)), "ok");
      first.close();
      // Then the second is accepted, only after the first was closed, and gets its echo.
      assert.equal(new TextDecoder().decode(await readAll(second)), "two");
      const order = server.lines.filter((l) => /^(Connected by|Closed) /.test(l)).map((l) =>
        l.split(" ")[0]
      );
      assert.deepEqual(order.slice(0, 3), ["Connected", "Closed", "Connected"]);
    } finally {
      second.close();
    }
  } finally {
    try {
      first.close();
    } catch {
      // Closed above already.
    }
  }
});

Deno.test("echo_server.ts --help prints the usage and exits 0", async () => {
  const result = await runScript("echo_server.ts", ["--help"]);
  assert.equal(result.code, 0);
  assert.match(
    new TextDecoder().decode(result.stdout),
    /usage: deno run --allow-net echo_server\.ts/,
  );
});

for (
  const [args, message] of [
    [["--port", "abc"], /--port must be a whole number from 0 to 65535, got "abc"/],
    [["--port", "70000"], /--port must be a whole number from 0 to 65535, got "70000"/],
    [["--mode", "threads"], /--mode must be one of async, worker, process, got "threads"/],
    [["--max-conns", "-1"], /--max-conns/],
    [["--queue"], /--queue only changes what --max-conns does/],
    [["--bogus"], /Unknown option '--bogus'/],
  ] as const
) {
  Deno.test(`echo_server.ts ${args.join(" ")} prints one line and the usage, exit 2`, async () => {
    const result = await runScript("echo_server.ts", [...args]);
    assert.equal(result.code, 2);
    const [first, second] = result.stderr.split("\n");
    assert.match(first, message);
    assert.match(second, /^usage:/);
    assert.doesNotMatch(result.stderr, /\n\s+at /);
  });
}

Deno.test("echo_server.ts on a port in use names the port and exits 1", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const result = await runScript("echo_server.ts", ["--port", String(taken.addr.port)]);
  assert.equal(result.code, 1);
  assert.equal(
    result.stderr.trim(),
    `error: port ${taken.addr.port} is already in use on 127.0.0.1 (another server running?)`,
  );
});

for (
  const [mode, flag] of [["worker", "--allow-read"], ["process", "--allow-run"]] as const
) {
  Deno.test(`echo_server.ts --mode ${mode} without ${flag} says which flag is missing, exit 1`, async () => {
    const permissions = mode === "worker" ? ["--allow-net"] : ["--allow-net", "--allow-read=."];
    const result = await runScript("echo_server.ts", ["--port", "0", "--mode", mode], {
      permissions,
    });
    assert.equal(result.code, 1);
    const lines = result.stderr.trim().split("\n");
    assert.equal(lines.length, 1, result.stderr);
    assert.match(lines[0], new RegExp(`--mode ${mode} needs .*${flag}`));
  });
}

Deno.test("echo_server.ts stops on Ctrl-C (SIGINT), closing live connections, exit 0", async () => {
  await using server = await startScript("echo_server.ts", ["--port", "0"]);
  const conn = await Deno.connect({ port: server.port });
  await server.waitFor(/Connected by/);
  const status = await server.stop("SIGINT");
  assert.equal(status.code, 0);
  assert.equal((await readAll(conn)).length, 0);
  conn.close();
});
