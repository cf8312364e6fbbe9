/**
 * The lab walk-through runs green, README.md holds every answer it prints,
 * and the claims those answers make hold:
 * Deno's listeners rebind a port with connections in TIME_WAIT (where a
 * Python socket without SO_REUSEADDR cannot), and `read()` gives `null` once
 * the peer has finished sending. The last step, TCP against UDP over a lossy
 * link, runs alone with `--step`, and its verdict fails on a TCP that lost
 * bytes but not on a UDP run that by chance lost none.
 */

import assert from "node:assert/strict";
import { CliError } from "../lib/cli.ts";
import { ANSWERS_HEADING, concludeTcpUdp, handoutAnswers, STEPS } from "../lab.ts";
import type { TcpUdpReport } from "../lib/tcp_vs_udp.ts";
import { haveCommand, projectPath, runScript } from "./helpers.ts";

const LAB_PERMISSIONS = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-run",
  "--allow-env",
];

/** The TCP-versus-UDP step's number, as `--step` takes it: the last step. */
const TCP_UDP_STEP = STEPS.findIndex((step) => step.title.startsWith("What TCP does for you")) + 1;
/** The TCP verdict line that step prints when every message came back in order. */
const TCP_LINE =
  /^ {4}✓ TCP: all 50 messages came back, every byte in order, but later: slowest echo \d+ ms/m;

Deno.test("lab.ts runs every step on loopback and exits 0", async () => {
  const result = await runScript("lab.ts", [], { permissions: LAB_PERMISSIONS });
  const out = new TextDecoder().decode(result.stdout);
  assert.equal(result.code, 0, out + result.stderr);
  assert.match(out, /All steps passed/);
  assert.ok(!out.includes("\u001b["), "no colours when stdout is not a terminal");
  assert.ok(out.includes(`Step ${TCP_UDP_STEP}. ${STEPS[TCP_UDP_STEP - 1].title}\n`));
  assert.match(out, TCP_LINE);
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

Deno.test("lab.ts --step N for the TCP-versus-UDP step runs that step alone", async () => {
  assert.equal(TCP_UDP_STEP, STEPS.length, "TCP against UDP is the last step");
  const result = await runScript("lab.ts", ["--step", String(TCP_UDP_STEP)], {
    permissions: LAB_PERMISSIONS,
  });
  const out = new TextDecoder().decode(result.stdout);
  assert.equal(result.code, 0, out + result.stderr);
  assert.deepEqual(out.match(/^Step \d+\./gm), [`Step ${TCP_UDP_STEP}.`]);
  // The command that repeats the run, with the seed this run used.
  assert.match(
    out,
    /\$ deno run --allow-net --allow-run .*lib\/tcp_vs_udp\.ts --messages 50 --seed \d+\n/,
  );
  assert.match(out, TCP_LINE);
  assert.match(out, /^ {4}[✓-] UDP: /m);
  // Which path it took and why; on loopback it must own up to emulating TCP's resending.
  const path = /^ {4}Path: (network namespaces|loopback) \(.+\)/m.exec(out);
  assert.ok(path, out);
  if (path[1] === "loopback") assert.match(out, /EMULATED/);
  assert.match(out, /All steps passed/);
});

/** A comparison as compareTcpUdp() reports it: 50 messages each way over namespaces. */
function comparison(
  changes: { tcp?: Partial<TcpUdpReport["tcp"]>; udp?: Partial<TcpUdpReport["udp"]> } = {},
  path: TcpUdpReport["path"] = "namespaces",
): Pick<TcpUdpReport, "path" | "why" | "loss" | "tcp" | "udp"> {
  return {
    path,
    why: path === "namespaces"
      ? "running as root, with ip and python3"
      : "creating network namespaces needs root",
    loss: 0.1,
    tcp: {
      sent: 50,
      received: 50,
      intact: true,
      bytesSent: 841,
      bytesReceived: 841,
      connectMs: 0.4,
      timeMs: 2452,
      slowestMs: 258.4,
      medianMs: 0.7,
      error: null,
      retransmissions: 7,
      ...changes.tcp,
    },
    udp: {
      sent: 50,
      received: 43,
      lost: 7,
      late: 0,
      timeMs: 2929,
      slowestMs: 31.85,
      ...changes.udp,
    },
  };
}

Deno.test("concludeTcpUdp() words the verdict: TCP whole but late, UDP with holes", () => {
  const verdict = concludeTcpUdp(comparison());
  assert.equal(
    verdict.tcp,
    "TCP: all 50 messages came back, every byte in order, but later: slowest echo 258 ms (median 0.7 ms)",
  );
  assert.equal(verdict.udp, "UDP: 7 of 50 pings lost (14%), and nothing resent them");
  assert.equal(verdict.udpLostSome, true);
  assert.match(
    verdict.meaning,
    /^Path: network namespaces \(running as root, with ip and python3\)/,
  );
  assert.match(verdict.meaning.replaceAll("\n", " "), /the kernels' own TCP resent 7 segment/);
  assert.doesNotMatch(verdict.meaning, /EMULATED/);
  const loopback = concludeTcpUdp(comparison({}, "loopback")).meaning.replaceAll("\n", " ");
  assert.match(loopback, /^Path: loopback \(creating network namespaces needs root\)/);
  assert.match(loopback, /TCP's retransmission was EMULATED here/);
});

Deno.test("concludeTcpUdp() fails in one line when TCP lost or reordered bytes", () => {
  const broken = comparison({
    tcp: { received: 12, intact: false, bytesReceived: 190, error: "connection reset\nby peer" },
  });
  assert.throws(() => concludeTcpUdp(broken), (err: unknown) => {
    assert.ok(err instanceof CliError);
    assert.equal(
      err.message,
      "TCP did not hand back every message in order: 12 of 50 came back whole (connection reset by peer)",
    );
    return true;
  });
  const silent = comparison({ udp: { received: 0, lost: 50, slowestMs: null } });
  assert.throws(() => concludeTcpUdp(silent), /^CliError: no UDP ping of 50 came back/);
});

Deno.test("concludeTcpUdp() says so, and does not fail, when UDP by chance lost nothing", () => {
  const lucky = concludeTcpUdp(comparison({ udp: { received: 50, lost: 0 } }));
  assert.equal(lucky.udpLostSome, false);
  // 0.9 ** 100: every ping and every reply got through.
  assert.equal(
    lucky.udp,
    "UDP: none of 50 pings lost this time, a rare run (about 1 in 38,000 at 10% each way); had one been lost, nothing would have resent it",
  );
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
