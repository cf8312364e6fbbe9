/**
 * The lab walk-through runs green, README.md holds every answer it prints,
 * and the claims those answers make hold:
 * Deno's listeners rebind a port with connections in TIME_WAIT (where a
 * Python socket without SO_REUSEADDR cannot), and `read()` gives `null` once
 * the peer has finished sending.
 */

import assert from "node:assert/strict";
import { CliError } from "../lib/cli.ts";
import { ANSWERS_HEADING, handoutAnswers, STEPS } from "../lab.ts";
import { haveCommand, projectPath, runScript } from "./helpers.ts";

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
  // The answers printed are the README's, under the step that asks for them.
  const answers = handoutAnswers(await Deno.readTextFile(projectPath("README.md")), [
    1,
    2,
    3,
    4,
    5,
  ]);
  for (const [n, { question, text }] of answers) {
    assert.ok(
      out.includes(`Question ${n}: ${question}\n    ${text.split("\n")[0]}`),
      `question ${n}`,
    );
  }
});

Deno.test("README.md answers every handout question that a lab step prints", async () => {
  const readme = await Deno.readTextFile(projectPath("README.md"));
  const wanted = STEPS.flatMap((step) => step.questions ?? []);
  for (const n of [1, 2, 3, 4, 5]) assert.ok(wanted.includes(n), `a step answers question ${n}`);
  for (const [n, { question, text }] of handoutAnswers(readme, wanted)) {
    assert.match(question, /\?$/, `question ${n} reads as a question`);
    assert.ok(text.length > 40, `question ${n} has a real answer: ${text}`);
    assert.doesNotMatch(question + text, /[`*]|\]\(/, `question ${n} is plain text`);
  }
});

Deno.test("handoutAnswers() names a missing answer in one line", async () => {
  const readme = await Deno.readTextFile(projectPath("README.md"));
  const withoutThree = readme.replace(/^3\. \*\*.*\n(?: {3}.*\n)*/m, "");
  assert.notEqual(withoutThree, readme, "the README's question 3 item was found and cut");
  assert.doesNotThrow(() => handoutAnswers(withoutThree, [1, 2]));
  assert.throws(() => handoutAnswers(withoutThree, [1, 3]), (err: unknown) => {
    assert.ok(err instanceof CliError);
    assert.match(err.message, /^README\.md does not answer question 3 under "## The handout's/);
    assert.doesNotMatch(err.message, /\n/);
    return true;
  });
  const noSection = readme.replace(ANSWERS_HEADING, "## Questions");
  assert.throws(() => handoutAnswers(noSection, [1]), /README\.md has no section/);
});

Deno.test("lab.ts --step out of range or not a number: one line and the usage, exit 2", async () => {
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
