/**
 * The lab walk-through runs green, and the claims its answers make hold:
 * Deno's listeners rebind a port with connections in TIME_WAIT (where a
 * Python socket without SO_REUSEADDR cannot), and `read()` gives `null` once
 * the peer has finished sending.
 */

import assert from "node:assert/strict";
import { haveCommand, runScript } from "./helpers.ts";

const LAB_PERMISSIONS = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-run",
  "--allow-env",
];

Deno.test("lab.ts runs every step on loopback and exits 0", async () => {
  const result = await runScript("lab.ts", [], { permissions: LAB_PERMISSIONS });
  const out = new TextDecoder().decode(result.stdout);
  assert.equal(result.code, 0, out + result.stderr);
  assert.match(out, /All steps passed/);
  assert.ok(!out.includes("\u001b["), "no colours when stdout is not a terminal");
  for (const q of [1, 2, 3, 4, 5]) assert.match(out, new RegExp(`Question ${q}:`));
});

Deno.test("lab.ts --step outside 1..6 or not a number: one line and the usage, exit 2", async () => {
  for (const step of ["abc", "0", "99"]) {
    const result = await runScript("lab.ts", ["--step", step], { permissions: LAB_PERMISSIONS });
    assert.equal(result.code, 2, `--step ${step}`);
    assert.match(result.stderr.split("\n")[0], /^error: --step must be/);
    assert.equal(result.stdout.length, 0);
  }
});

/** Leaves a connection in TIME_WAIT on the listener's own port and returns the port. */
async function portWithTimeWait(): Promise<number> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  const client = await Deno.connect({ port });
  const accepted = await listener.accept();
  accepted.close(); // the server side closes first, so it is the side in TIME_WAIT
  listener.close();
  assert.equal(await client.read(new Uint8Array(1)), null);
  client.close();
  return port;
}

function timeWaitCount(port: number): number {
  const out = new Deno.Command("ss", {
    args: ["-tanH", "state", "time-wait", `( sport = :${port} )`],
    stdout: "piped",
  }).outputSync();
  return new TextDecoder().decode(out.stdout).trim().split("\n").filter(Boolean).length;
}

Deno.test({
  name: "Deno.listen() rebinds a port with a connection in TIME_WAIT (SO_REUSEADDR is set)",
  ignore: !haveCommand("ss"),
  async fn() {
    const port = await portWithTimeWait();
    assert.equal(timeWaitCount(port), 1, "the setup must leave one TIME_WAIT connection");
    const again = Deno.listen({ hostname: "127.0.0.1", port });
    again.close();
  },
});

Deno.test({
  name: "a Python socket without SO_REUSEADDR cannot rebind in the same situation",
  ignore: !haveCommand("ss") || !haveCommand("python3"),
  async fn() {
    const port = await portWithTimeWait();
    assert.equal(timeWaitCount(port), 1);
    const script = [
      "import socket, sys",
      "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)",
      "try:",
      `    s.bind(("127.0.0.1", ${port})); s.listen(); print("bound")`,
      "except OSError as e:",
      "    print('refused', e.errno)",
    ].join("\n");
    const out = new Deno.Command("python3", { args: ["-c", script], stdout: "piped" }).outputSync();
    assert.equal(new TextDecoder().decode(out.stdout).trim(), "refused 98");
  },
});

Deno.test("conn.read() resolves to null once the peer has half-closed", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  using client = await Deno.connect({ port: listener.addr.port });
  using server = await listener.accept();
  await client.write(new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n"));
  await client.closeWrite();
  const buffer = new Uint8Array(100);
  assert.equal(await server.read(buffer), 18);
  assert.equal(await server.read(buffer), null);
  // The other direction still works after the half-close.
  await server.write(new TextEncoder().encode("reply"));
  assert.equal(await client.read(buffer), 5);
});
