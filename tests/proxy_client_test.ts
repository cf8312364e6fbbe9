/**
 * proxy_client.ts as a student runs it, against proxy_server.ts and local
 * origins: ten clients at once, a binary page byte for byte on stdout, the
 * request it sends, one-line errors, and bad flags.
 */

import assert from "node:assert/strict";
import { concatBytes, listenOn, writeAll } from "../lib/net.ts";
import { startOrigin } from "../lib/origin.ts";
import { fetchThroughProxy } from "../proxy_client.ts";
import { startProxyServer } from "../proxy_server.ts";
import { randomBytes, runScript, sha256, startScript } from "./helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * An origin that answers nobody until `count` requests have arrived, then
 * everybody: clients that ran one after another would wait forever.
 */
function startBarrierOrigin(count: number, body: string) {
  const listener = listenOn();
  const requests: string[] = [];
  const waiting: Deno.TcpConn[] = [];
  const reply = `HTTP/1.0 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
  const served = (async () => {
    while (waiting.length < count) {
      const conn = await listener.accept();
      waiting.push(conn);
      requests.push(await readRequest(conn));
    }
    await Promise.all(waiting.map(async (conn) => {
      await writeAll(conn, encoder.encode(reply));
      await conn.closeWrite();
    }));
  })();
  return {
    port: listener.addr.port,
    requests,
    replyBytes: encoder.encode(reply).length,
    served,
    async [Symbol.asyncDispose]() {
      listener.close();
      await served.catch(() => {});
      for (const conn of waiting) conn.close();
    },
  };
}

/** Reads an HTTP request head (up to the blank line) as text. */
async function readRequest(conn: Deno.Conn): Promise<string> {
  let text = "";
  const buffer = new Uint8Array(4096);
  while (!text.includes("\r\n\r\n")) {
    const n = await conn.read(buffer);
    if (n === null) break;
    text += decoder.decode(buffer.subarray(0, n));
  }
  return text;
}

Deno.test("proxy_client.ts --count 10 runs ten clients at once through proxy_server.ts", async () => {
  await using origin = startBarrierOrigin(10, "<p>ten at once</p>\n");
  // Were the clients run one after another, the first would be cut off empty after 5 s.
  await using proxy = await startScript("proxy_server.ts", [
    "--port",
    "0",
    "--upstream",
    `127.0.0.1:${origin.port}`,
    "--idle-timeout",
    "5",
  ]);
  const run = await runScript("proxy_client.ts", [
    "--proxy",
    `127.0.0.1:${proxy.port}`,
    "--host",
    "example.org",
    "--path",
    "/ten",
    "--count",
    "10",
  ]);
  assert.equal(run.code, 0, run.stderr);
  const lines = decoder.decode(run.stdout).trimEnd().split("\n");
  assert.equal(lines.length, 11, lines.join("\n"));
  const clients = lines.slice(0, 10).map((line) => {
    const match = new RegExp(
      `^client +(\\d+): HTTP/1\\.0 200 OK, ${origin.replyBytes} B in \\d+\\.\\d ms$`,
    )
      .exec(line);
    assert.ok(match, line);
    return Number(match[1]);
  });
  assert.deepEqual(clients.sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.match(
    lines[10],
    new RegExp(
      `^total: 10 of 10 clients got a reply, ${10 * origin.replyBytes} B in \\d+\\.\\d ms$`,
    ),
  );
  // Each sent the lab's GET, meant for --host, and half-closed after it.
  assert.deepEqual(
    origin.requests,
    Array(10).fill("GET /ten HTTP/1.0\r\nHost: example.org\r\nConnection: close\r\n\r\n"),
  );
  assert.equal(proxy.lines.filter((l) => l.startsWith("Connected by")).length, 10);
});

Deno.test("proxy_client.ts prints a binary page byte for byte on stdout, and a summary on stderr", async () => {
  const page = randomBytes(1024 * 1024 + 3, 12);
  page.set(Uint8Array.from({ length: 256 }, (_, i) => i), 0);
  await using origin = await startOrigin({ pages: { "/bin": page } });
  await using proxy = await startProxyServer({
    quiet: true,
    upstream: { hostname: "127.0.0.1", port: origin.addr.port },
  });
  const run = await runScript("proxy_client.ts", [
    "--proxy",
    `127.0.0.1:${proxy.addr.port}`,
    "--path",
    "/bin",
  ]);
  assert.equal(run.code, 0, run.stderr);
  const head = decoder.decode(run.stdout.subarray(0, 300));
  assert.match(head, /^HTTP\/1\.0 200 OK\r\n/);
  const body = run.stdout.subarray(head.indexOf("\r\n\r\n") + 4);
  assert.equal(body.length, page.length);
  assert.equal(sha256(body), sha256(page));
  assert.match(
    run.stderr,
    new RegExp(
      `^via 127\\.0\\.0\\.1:${proxy.addr.port}: HTTP/1\\.0 200 OK, 1\\.0 MiB in \\d+\\.\\d ms\\n$`,
    ),
  );
});

Deno.test("fetchThroughProxy() reads the status line; an empty reply is an error for the script", async () => {
  await using origin = await startOrigin();
  await using proxy = await startProxyServer({
    quiet: true,
    upstream: { hostname: "127.0.0.1", port: origin.addr.port },
  });
  const missing = await fetchThroughProxy({
    proxy: { hostname: "127.0.0.1", port: proxy.addr.port },
    path: "/missing",
    output: null,
  });
  assert.equal(missing.statusLine, "HTTP/1.0 404 Not Found");
  assert.ok(missing.bytes > 0);

  // A proxy whose upstream refuses closes the client without a byte.
  const probe = listenOn();
  const closedPort = probe.addr.port;
  probe.close();
  await using refusing = await startProxyServer({
    log: () => {},
    upstream: { hostname: "127.0.0.1", port: closedPort },
  });
  const empty = await fetchThroughProxy({
    proxy: { hostname: "127.0.0.1", port: refusing.addr.port },
    output: null,
  });
  assert.deepEqual([empty.statusLine, empty.bytes], ["(empty reply)", 0]);

  // The script says so in one line, and a run of several counts it as no reply.
  const proxyArgs = ["--proxy", `127.0.0.1:${refusing.addr.port}`];
  const one = await runScript("proxy_client.ts", proxyArgs);
  assert.equal(one.code, 1);
  assert.match(one.stderr, /^error: the proxy at .* closed the connection without a reply/);
  const two = await runScript("proxy_client.ts", [...proxyArgs, "--count", "2"]);
  assert.equal(two.code, 1);
  assert.match(decoder.decode(two.stdout), /client 1: \(empty reply\), 0 B in .*\ntotal: 0 of 2 /s);
});

Deno.test("proxy_client.ts with no proxy running: one line, exit 1", async () => {
  const probe = listenOn();
  const port = probe.addr.port;
  probe.close();
  const one = await runScript("proxy_client.ts", ["--proxy", `127.0.0.1:${port}`]);
  assert.equal(one.code, 1);
  assert.equal(
    one.stderr,
    `error: connection to 127.0.0.1:${port} refused: nothing is listening there (is proxy_server.ts running?)\n`,
  );
  assert.equal(one.stdout.length, 0);

  const three = await runScript("proxy_client.ts", [
    "--proxy",
    `127.0.0.1:${port}`,
    "--count",
    "3",
  ]);
  assert.equal(three.code, 1);
  const lines = decoder.decode(three.stdout).trimEnd().split("\n");
  assert.equal(lines.length, 4);
  for (const line of lines.slice(0, 3)) {
    assert.match(line, /^client \d: error: connection to .* refused/);
  }
  assert.match(lines[3], /^total: 0 of 3 clients got a reply/);
});

Deno.test("proxy_client.ts: bad flags print one line and the usage, and exit 2", async () => {
  for (
    const args of [
      ["--count", "0"],
      ["--count", "many"],
      ["--proxy", "nowhere"],
      ["--path", "index.html"],
      ["--host", "http://example.org"],
      ["--verbose"],
      ["--proxy", "127.0.0.1:0"],
      ["--timeout", "0"],
    ]
  ) {
    const run = await runScript("proxy_client.ts", args);
    assert.equal(run.code, 2, `${args.join(" ")}: ${run.stderr}`);
    const [first, second] = run.stderr.split("\n");
    assert.match(first, /^error: /);
    assert.match(second, /^usage: deno run --allow-net proxy_client\.ts/);
  }
});

Deno.test("proxy_client.ts gives up on a proxy that never answers after --timeout: one line, exit 1", async () => {
  using silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const running = runScript("proxy_client.ts", [
    "--proxy",
    `127.0.0.1:${silent.addr.port}`,
    "--timeout",
    "0.5",
  ]);
  const conn = await silent.accept();
  const run = await running;
  conn.close();
  assert.equal(run.code, 1);
  const lines = run.stderr.trim().split("\n");
  assert.equal(lines.length, 1, run.stderr);
  assert.match(lines[0], /^error: no data from 127\.0\.0\.1:\d+ for 0\.5 s/);
});

Deno.test("fetchThroughProxy({ forward }) sends the whole URL, which a forward proxy needs", async () => {
  await using origin = await startOrigin({ pages: { "/f": "<p>forwarded</p>" } });
  await using forward = await startProxyServer({ forward: true, quiet: true });
  const parts: Uint8Array[] = [];
  const output = {
    write: (p: Uint8Array) => (parts.push(p.slice()), Promise.resolve(p.length)),
  };
  const result = await fetchThroughProxy({
    proxy: { hostname: "127.0.0.1", port: forward.addr.port },
    host: "127.0.0.1",
    port: origin.addr.port,
    path: "/f",
    forward: true,
    output,
  });
  assert.equal(result.statusLine, "HTTP/1.1 200 OK");
  assert.match(decoder.decode(concatBytes(parts)), /\r\n\r\n<p>forwarded<\/p>$/);
  // Without --forward the request goes by its Host header alone (here one that cannot resolve).
  const relayStyle = await fetchThroughProxy({
    proxy: { hostname: "127.0.0.1", port: forward.addr.port },
    host: "no-such-host.invalid",
    output: null,
  });
  assert.equal(relayStyle.statusLine, "HTTP/1.1 502 Bad Gateway");
});

Deno.test("proxy_client.ts --forward: --host takes a port; bad ones exit 2", async () => {
  for (const args of [["--forward", "--host", "a:b:c"], ["--forward", "--host", "x:0"]]) {
    const run = await runScript("proxy_client.ts", args);
    assert.equal(run.code, 2, `${args.join(" ")}: ${run.stderr}`);
    assert.match(run.stderr, /^error: --host/);
  }
});
