/**
 * client.ts run as a student runs it: against a local stand-in for
 * www.google.com, the echo server, a closed port, an unknown host, and a
 * server that never answers.
 */

import assert from "node:assert/strict";
import { buildGetRequest } from "../client.ts";
import { startEchoServer } from "../echo_server.ts";
import { startOrigin } from "../lib/origin.ts";
import { randomBytes, readAll, runScript, sha256 } from "./helpers.ts";

const MIB = 1024 * 1024;

Deno.test("client.ts prints a 3 MiB page byte for byte", async () => {
  const body = randomBytes(3 * MIB, 5);
  await using origin = await startOrigin({ pages: { "/big": body } });
  const result = await runScript("client.ts", [
    "--host",
    "127.0.0.1",
    "--port",
    String(origin.addr.port),
    "--path",
    "/big",
  ]);
  assert.equal(result.code, 0, result.stderr);
  const headerEnd = indexOf(result.stdout, new TextEncoder().encode("\r\n\r\n"));
  const head = new TextDecoder().decode(result.stdout.subarray(0, headerEnd));
  assert.match(head, /^HTTP\/1\.[01] 200 OK\r\n/);
  assert.match(head, new RegExp(`content-length: ${body.length}`, "i"));
  assert.equal(sha256(result.stdout.subarray(headerEnd + 4)), sha256(body));
  assert.match(result.stderr, /connected from 127\.0\.0\.1:\d+ to 127\.0\.0\.1:\d+/);
  assert.match(result.stderr, /received 3\.0 MiB/);
});

Deno.test("client.ts sends exactly one HTTP/1.0 GET with a Host header, then half-closes", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const running = runScript("client.ts", [
    "--host",
    "127.0.0.1",
    "--port",
    String(listener.addr.port),
    "--path",
    "/x?y=1",
  ]);
  const conn = await listener.accept();
  // readAll ends only because the client half-closed after its request.
  const request = new TextDecoder().decode(await readAll(conn));
  await conn.write(new TextEncoder().encode("reply"));
  conn.close();
  const result = await running;
  assert.equal(request, buildGetRequest("127.0.0.1", listener.addr.port, "/x?y=1"));
  assert.equal(new TextDecoder().decode(result.stdout), "reply");
  assert.equal(result.code, 0);
});

Deno.test("client.ts --message talks to the echo server", async () => {
  await using server = await startEchoServer({ quiet: true });
  const result = await runScript("client.ts", [
    "--host",
    "127.0.0.1",
    "--port",
    String(server.addr.port),
    "--message",
    "Foobar",
  ]);
  assert.equal(result.code, 0);
  assert.equal(new TextDecoder().decode(result.stdout), "Foobar");
});

Deno.test("client.ts against a closed port: one line, exit 1", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const result = await runScript("client.ts", ["--host", "127.0.0.1", "--port", String(port)]);
  assert.equal(result.code, 1);
  assert.equal(
    result.stderr.trim(),
    `error: connection to 127.0.0.1:${port} refused: nothing is listening there`,
  );
});

Deno.test("client.ts against an .invalid host: one line, exit 1", async () => {
  const result = await runScript("client.ts", ["--host", "no-such-host.invalid"]);
  assert.equal(result.code, 1);
  assert.equal(
    result.stderr.trim(),
    'error: cannot resolve host "no-such-host.invalid" (no DNS or no network here?)',
  );
});

/** Whether this machine can resolve www.google.com (it cannot offline, as in CI). */
const online = await Deno.resolveDns("www.google.com", "A").then(() => true, () => false);

Deno.test({
  name: `client.ts with its default www.google.com offline suggests --host, exit 1${
    online ? " (skipped: this machine is online)" : ""
  }`,
  ignore: online,
}, async () => {
  const result = await runScript("client.ts", ["--timeout", "3"]);
  assert.equal(result.code, 1);
  const lines = result.stderr.trim().split("\n");
  assert.equal(lines.length, 1, result.stderr);
  assert.match(lines[0], /www\.google\.com.*--host/);
});

Deno.test("client.ts gives up after --timeout seconds of silence: one line, exit 1", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const running = runScript("client.ts", [
    "--host",
    "127.0.0.1",
    "--port",
    String(listener.addr.port),
    "--timeout",
    "0.5",
  ]);
  const conn = await listener.accept();
  const result = await running;
  conn.close();
  assert.equal(result.code, 1);
  assert.equal(
    result.stderr.trim().split("\n").at(-1),
    `error: no data from 127.0.0.1:${listener.addr.port} for 0.5 s: giving up (--timeout)`,
  );
});

for (
  const [args, message] of [
    [["--port", "abc"], /--port must be a whole number/],
    [
      ["--timeout", "0"],
      /--timeout must be a positive number of seconds up to \d+ \(about 24 days\), got "0"/,
    ],
    [["--path", "no-slash"], /--path must start with "\/"/],
    [["--port", "0"], /--port must be a whole number from 1 to 65535, got "0"/],
  ] as const
) {
  Deno.test(`client.ts ${args.join(" ")} prints one line and the usage, exit 2`, async () => {
    const result = await runScript("client.ts", [...args]);
    assert.equal(result.code, 2);
    assert.match(result.stderr.split("\n")[0], message);
    assert.match(result.stderr.split("\n")[1], /^usage:/);
  });
}

Deno.test("client.ts --help prints the usage, exit 0", async () => {
  const result = await runScript("client.ts", ["--help"]);
  assert.equal(result.code, 0);
  assert.match(new TextDecoder().decode(result.stdout), /usage: deno run --allow-net client\.ts/);
});

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
