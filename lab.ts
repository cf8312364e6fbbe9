#!/usr/bin/env -S deno run --allow-net --allow-read --allow-write --allow-run --allow-env
/**
 * The whole of Lab 2, offline, in one command: `deno task lab`.
 *
 * A local web server stands in for www.google.com; then, in the handouts'
 * order, each step runs our script the way you would type it, shows what
 * happened, and answers the handout's question for Deno. Every step checks
 * its own result: any failure prints one line and exits 1.
 *
 * The answers are not written here: they are read from README.md's section
 * "The handout's questions, answered for Deno", so the README and the lab
 * cannot drift apart. A README that lacks one stops the lab with one line.
 *
 * @module
 */

import { CliError, parseCli, parseCount, runMain, UsageError } from "./lib/cli.ts";
import { MODE_PERMISSIONS, MODES } from "./lib/concurrency.ts";
import { READ_BUFFER_BYTES, writeAll } from "./lib/net.ts";
import { startOrigin } from "./lib/origin.ts";
import { peerPermissions } from "./p2p/peer.ts";
import { STATE_DIR } from "./p2p/sync_state.ts";
import { haveCommand, runScript, type Script, startScript } from "./lib/scripts.ts";
import { compareTcpUdp, type TcpUdpReport } from "./lib/tcp_vs_udp.ts";

const USAGE = `usage: deno task lab [--step N]
Runs every step of the lab on loopback (about half a minute), or only step N.`;

/** Clients each mode serves at once in the side-by-side step. */
const SIDE_BY_SIDE_CLIENTS = 20;

/**
 * Messages over TCP, and pings over UDP, in the TCP-versus-UDP step. At 10%
 * loss each way a ping survives with chance 0.81, so 50 pings all survive
 * about once in 38,000 runs (20 pings would, once in 70).
 */
const TCP_UDP_MESSAGES = 50;

const useColour = Deno.stdout.isTerminal() && !Deno.env.get("NO_COLOR");
const paint = (code: number) => (text: string) => useColour ? `\x1b[${code}m${text}\x1b[0m` : text;
const bold = paint(1);
const dim = paint(2);
const green = paint(32);
const cyan = paint(36);

/** One step of the walk-through. */
export interface Step {
  /** The step's heading, after "Step N.". */
  title: string;
  /** Runs the step; throws {@linkcode CliError} with one line when it fails. */
  run(context: LabContext): Promise<void>;
  /** The handout's questions answered after the step, by number in README.md. */
  questions?: readonly number[];
}

/** What the steps share: the stand-in web server. */
export interface LabContext {
  /** Port of the local web server that stands in for www.google.com. */
  originPort: number;
}

/**
 * The walk-through in the handouts' order; `--step N` runs the Nth. A step
 * prints its own findings; the answers to its `questions` follow it.
 */
export const STEPS: readonly Step[] = [
  {
    title: "Client: ask a web server for a page (client.ts)",
    run: stepClient,
    questions: [1, 5],
  },
  {
    title: "Echo server, checked with the handout's nc command (echo_server.ts)",
    run: stepEchoServer,
    questions: [2, 4],
  },
  {
    title: "Reusing the port at once (the SO_REUSEADDR question)",
    run: stepReusePort,
    questions: [3],
  },
  {
    title: "Many clients at once: the three concurrency modes side by side",
    run: stepConcurrencyModes,
  },
  {
    title: "Proxy server and proxy client, ten clients at once (proxy_server.ts, proxy_client.ts)",
    run: stepProxy,
  },
  {
    title: "P2P file synchronizer: a tracker and three peers (p2p/tracker.ts, p2p/peer.ts)",
    run: stepP2p,
  },
  {
    title: "What TCP does for you: the same messages over TCP and UDP, 10% lost each way",
    run: stepTcpVersusUdp,
  },
];

function say(line = ""): void {
  console.log(line);
}

function command(line: string): void {
  say(`  ${cyan("$")} ${line}`);
}

function output(text: string, maxLines = 8): void {
  const lines = text.replace(/\n$/, "").split("\n");
  for (const line of lines.slice(0, maxLines)) say(dim(`    ${line}`));
  if (lines.length > maxLines) say(dim(`    … ${lines.length - maxLines} more lines`));
}

function answer(heading: string, text: string): void {
  say(`  ${bold(heading)}`);
  for (const line of text.split("\n")) say(`    ${line}`);
}

function check(ok: boolean, failure: string): void {
  if (!ok) throw new CliError(failure);
}

/** Handout: fetch a page with a TCP client. Runs client.ts against the stand-in web server. */
async function stepClient({ originPort }: LabContext): Promise<void> {
  const args = ["--host", "127.0.0.1", "--port", String(originPort)];
  command(`deno run --allow-net client.ts ${args.join(" ")}`);
  const result = await runScript("client.ts", args);
  const page = new TextDecoder().decode(result.stdout);
  check(result.code === 0, `client.ts failed: ${result.stderr.trim()}`);
  check(page.startsWith("HTTP/1.0 200 OK"), "client.ts did not print an HTTP 200 reply");
  output(result.stderr, 4);
  output(page, 6);
}

/** Handout: an echo server, checked with `echo "Foobar" | nc localhost 8001 -q 1`. */
async function stepEchoServer(): Promise<void> {
  command("deno run --allow-net echo_server.ts --port 0   # the lab uses 8001");
  await using server = await startScript("echo_server.ts", ["--port", "0"]);
  const { sent, echoed } = await sendFoobar(server.port);
  output(echoed);
  check(
    echoed === sent,
    `the echo server answered ${JSON.stringify(echoed)}, not ${JSON.stringify(sent)}`,
  );
  await server.waitFor(/^Closed /);
  say("  the server printed:");
  output(server.lines.join("\n"));
}

// The handout's check sends "Foobar" and a newline (echo adds it); our fallback sends it as is.
async function sendFoobar(port: number): Promise<{ sent: string; echoed: string }> {
  if (haveCommand("nc")) {
    command(`echo "Foobar" | nc localhost ${port} -q 1`);
    const nc = await new Deno.Command("sh", {
      args: ["-c", `echo "Foobar" | nc localhost ${port} -q 1`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { sent: "Foobar\n", echoed: new TextDecoder().decode(nc.stdout) };
  }
  const sent = "Foobar";
  say(dim("  (nc is not installed: using client.ts --message instead)"));
  const args = ["--host", "127.0.0.1", "--port", String(port), "--message", sent];
  command(`deno run --allow-net client.ts ${args.slice(0, -1).join(" ")} "${sent}"`);
  return { sent, echoed: new TextDecoder().decode((await runScript("client.ts", args)).stdout) };
}

/** Handout: SO_REUSEADDR. Leaves a connection in TIME_WAIT on a port, then listens on it again. */
async function stepReusePort(): Promise<void> {
  const port = await portWithTimeWait();
  const timeWait = await timeWaitConnections(port);
  if (timeWait) output(timeWait, 2);
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
  } catch (err) {
    throw new CliError(`could not listen on port ${port} again: ${(err as Error).message}`);
  }
  say(
    `  listened on port ${port} again right away${
      timeWait ? ", with a connection in TIME_WAIT" : ""
    }`,
  );
}

// Makes the server's side of a connection close first, so it sits in TIME_WAIT on the port.
async function portWithTimeWait(): Promise<number> {
  const first = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = first.addr.port;
  const client = await Deno.connect({ port });
  const accepted = await first.accept();
  accepted.close();
  first.close();
  await client.read(new Uint8Array(1));
  client.close();
  return port;
}

// What `ss` lists in TIME_WAIT on the port; empty where `ss` is missing.
async function timeWaitConnections(port: number): Promise<string> {
  return new TextDecoder().decode(
    (await new Deno.Command("sh", {
      args: ["-c", `ss -tan state time-wait '( sport = :${port} )' 2>/dev/null | tail -n +2`],
      stdout: "piped",
    }).output()).stdout,
  ).trim();
}

/** Handout: the forking server. Runs the echo server in each mode with many clients at once. */
async function stepConcurrencyModes(): Promise<void> {
  const payload = new Uint8Array(64 * 1024).map((_, i) => (i * 31) & 0xff);
  for (const mode of MODES) {
    const perms = MODE_PERMISSIONS[mode];
    command(`deno run ${perms.join(" ")} echo_server.ts --mode ${mode} --quiet --port 0`);
    await using server: Script = await startScript(
      "echo_server.ts",
      ["--mode", mode, "--quiet", "--port", "0"],
      { permissions: perms },
    );
    const started = performance.now();
    const results = await Promise.all(
      Array.from({ length: SIDE_BY_SIDE_CLIENTS }, () => echoOnce(server.port, payload)),
    );
    const ms = performance.now() - started;
    const exact = results.filter((r) => r === payload.length).length;
    check(
      exact === SIDE_BY_SIDE_CLIENTS,
      `${mode} mode echoed ${exact} of ${SIDE_BY_SIDE_CLIENTS} clients exactly`,
    );
    say(
      `    ${green("✓")} ${
        mode.padEnd(7)
      } ${SIDE_BY_SIDE_CLIENTS} clients × 64 KiB echoed byte for byte in ${ms.toFixed(0)} ms`,
    );
  }
  answer(
    "Forking, in Deno",
    `Deno has no fork(). async mode serves every client on one event loop (the fastest here);
worker mode runs each connection's handler in a warm pool of Web Workers; process mode in a
warm pool of deno child processes, fed through their stdin and stdout. Same handler in all three.`,
  );
}

/** Handout: a proxy in front of the web server, and ten of its clients at once. */
async function stepProxy({ originPort }: LabContext): Promise<void> {
  const upstream = `127.0.0.1:${originPort}`;
  command(
    `deno run --allow-net proxy_server.ts --port 0 --upstream ${upstream}   # the lab uses 8080 and www.google.com:80`,
  );
  await using proxy = await startScript("proxy_server.ts", [
    "--port",
    "0",
    "--upstream",
    upstream,
  ]);
  const args = ["--proxy", `127.0.0.1:${proxy.port}`, "--host", "127.0.0.1", "--count", "10"];
  command(`deno run --allow-net proxy_client.ts ${args.join(" ")}`);
  const result = await runScript("proxy_client.ts", args);
  const out = new TextDecoder().decode(result.stdout);
  output(out, 11);
  check(
    result.code === 0,
    `proxy_client.ts failed: ${(result.stderr || out).trim().split("\n").at(-1)}`,
  );
  check(
    (out.match(/200 OK/g) ?? []).length === 10,
    "not every client got the page through the proxy",
  );
  await proxy.waitFor(/closed/i);
  say("  the proxy printed, for the first connection:");
  output(proxy.lines.slice(1).join("\n"), 4);
  answer(
    "What the proxy does",
    `It is a server to the client and a client to the web server: for each connection it
connects upstream, copies bytes both ways with two plain read/write loops, and passes a
half-close on, so the client's "done sending" reaches the web server and the reply still
flows back. It never reads faster than the other side takes the bytes.`,
  );
}

/** The file each of the three peers starts with, by name. */
const PEER_FILES: Record<string, string> = {
  "hello.txt": "Hello from peer A\n",
  "notes.md": "# Notes from peer B\n",
  "numbers.csv": "n,square\n1,1\n2,4\n3,9\n",
};

/** Handout 002: a tracker and three peers sync their files, then one peer goes silent. */
async function stepP2p(): Promise<void> {
  const trackerArgs = [
    "--port",
    "0",
    "--http-port",
    "0",
    "--peer-timeout",
    "2",
    "--sweep-interval",
    "0.5",
  ];
  command(
    `deno run --allow-net p2p/tracker.ts ${trackerArgs.join(" ")}   # short expiry for the demo`,
  );
  await using tracker = await startScript("p2p/tracker.ts", trackerArgs);
  const dirs: string[] = [];
  const peers: Script[] = [];
  try {
    // Each peer starts with one file of its own in a fresh folder.
    for (const [i, [name, text]] of Object.entries(PEER_FILES).entries()) {
      const dir = await Deno.makeTempDir({ prefix: `lab_peer_${"ABC"[i]}_` });
      dirs.push(dir);
      await Deno.writeTextFile(`${dir}/${name}`, text);
      peers.push(await startPeer(tracker.port, dir));
    }
    const names = Object.keys(PEER_FILES).sort();
    await waitUntilEveryPeerHolds(dirs, names);
    say(`    ${green("✓")} every peer now holds ${names.join(", ")}, byte for byte`);
    say("  stopping peer C; the tracker should expire it after 2 s of silence");
    await peers[2].stop("SIGKILL");
    const expired = await tracker.waitFor(/expired after/, 10_000);
    output(expired);
  } finally {
    for (const peer of peers) await peer.stop();
    for (const dir of dirs) await Deno.remove(dir, { recursive: true });
  }
  answer(
    "How the synchronizer works",
    `Each peer keeps one connection to the tracker and sends a JSON line: Init with its files,
then a KeepAlive every few seconds. The tracker answers each with the directory (who holds
the newest copy of each file). A peer fetches what it lacks straight from the holder, checks
length and SHA-256, and renames the file into place. Silent peers expire with their files.
The protocol, with an nc session: p2p/PROTOCOL.md.`,
  );
}

// Starts p2p/peer.ts sharing `dir`, keeping alive every 0.5 s so the demo converges quickly.
async function startPeer(trackerPort: number, dir: string): Promise<Script> {
  const perms = peerPermissions(dir, "async");
  const args = [
    "127.0.0.1",
    String(trackerPort),
    "--dir",
    dir,
    "--port",
    "0",
    "--host",
    "127.0.0.1",
    "--interval",
    "0.5",
  ];
  command(`deno run ${perms.join(" ")} p2p/peer.ts ${args.join(" ")}`);
  return await startScript("p2p/peer.ts", args, { permissions: perms });
}

// Waits (20 s at most) until every folder lists exactly `names`, then checks every copy's bytes.
async function waitUntilEveryPeerHolds(dirs: string[], names: string[]): Promise<void> {
  const synced = () => {
    for (const dir of dirs) {
      // The peer's own state folder (.p2p-sync) is its memory, not a shared file.
      const held = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n !== STATE_DIR)
        .sort();
      if (JSON.stringify(held) !== JSON.stringify(names)) return false;
    }
    return true;
  };
  const deadline = Date.now() + 20_000;
  while (!synced()) {
    check(Date.now() < deadline, "the three peers did not converge within 20 s");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  for (const [i, dir] of dirs.entries()) {
    for (const name of names) {
      const got = await Deno.readTextFile(`${dir}/${name}`);
      check(got === PEER_FILES[name], `peer ${"ABC"[i]} holds a wrong copy of ${name}`);
    }
  }
}

/**
 * Beyond the handout (README section 6): numbered messages to the echo server
 * over TCP and pings to the UDP echo server, through a link that loses 10% of
 * packets each way. TCP must hand every message back in order; UDP loses some.
 */
async function stepTcpVersusUdp(): Promise<void> {
  // The seed is picked here so that the command shown is the one this run uses.
  const seed = Math.floor(Math.random() * 2 ** 31);
  command(
    `deno run --allow-net --allow-run --allow-read=/proc --allow-sys=uid lib/tcp_vs_udp.ts --messages ${TCP_UDP_MESSAGES} --seed ${seed}`,
  );
  // The comparison's own lines, as they happen: which path and why, the commands, the results.
  const report = await compareTcpUdp({
    messages: TCP_UDP_MESSAGES,
    seed,
    log: (line) => line.startsWith("$ ") ? command(line.slice(2)) : output(line),
  });
  const conclusion = concludeTcpUdp(report);
  say(`    ${green("✓")} ${conclusion.tcp}`);
  say(`    ${conclusion.udpLostSome ? green("✓") : "-"} ${conclusion.udp}`);
  answer("What TCP does for you", conclusion.meaning);
}

/** What the TCP-versus-UDP step concludes from a comparison, in plain text. */
export interface TcpUdpConclusion {
  /** TCP's line: every message came back in order, and how late the slowest echo was. */
  tcp: string;
  /** UDP's line: how many pings were lost, or, in a rare run, that none was. */
  udp: string;
  /** Whether UDP lost a ping, as the step claims it will; false in the rare run that lost none. */
  udpLostSome: boolean;
  /** Which link the comparison took and why, and who resent TCP's losses there; wrapped. */
  meaning: string;
}

/**
 * Checks a TCP/UDP comparison the way the lab step does, and words its
 * conclusion. TCP must have handed back every message, whole and in order;
 * UDP must have answered at least one ping. A UDP run that lost nothing is
 * not a failure (at 10% each way it happens by chance, rarely): its line
 * says so, with the odds, instead of claiming a loss.
 *
 * @param report What {@linkcode compareTcpUdp} found.
 * @returns The step's lines.
 * @throws {CliError} One line, when TCP lost or reordered bytes, or no ping came back.
 *
 * @example
 * ```ts
 * import { concludeTcpUdp } from "./lab.ts";
 * import { compareTcpUdp } from "./lib/tcp_vs_udp.ts";
 * const report = await compareTcpUdp({ messages: 50 });
 * const { tcp, udp, meaning } = concludeTcpUdp(report);
 * console.log([tcp, udp, meaning].join("\n"));
 * ```
 */
export function concludeTcpUdp(
  report: Pick<TcpUdpReport, "path" | "why" | "loss" | "tcp" | "udp">,
): TcpUdpConclusion {
  const { tcp, udp } = report;
  if (!tcp.intact) {
    const why = tcp.error ? ` (${tcp.error.replace(/\s*\n\s*/g, " ")})` : "";
    throw new CliError(
      `TCP did not hand back every message in order: ${tcp.received} of ${tcp.sent} came back whole${why}`,
    );
  }
  if (udp.received === 0) {
    throw new CliError(`no UDP ping of ${udp.sent} came back: the UDP echo server never answered`);
  }
  let udpLine = `UDP: ${udp.lost} of ${udp.sent} pings lost (${
    (udp.lost / udp.sent * 100).toFixed(0)
  }%), and nothing resent them`;
  if (udp.lost === 0) {
    // A ping and its reply both get through with chance (1 - loss)², for every ping.
    const odds = Number((1 / (1 - report.loss) ** (2 * udp.sent)).toPrecision(2));
    const each = `${Number((report.loss * 100).toFixed(2))}% each way`;
    udpLine = `UDP: none of ${udp.sent} pings lost this time, a rare run (about 1 in ${
      odds.toLocaleString("en-US")
    } at ${each}); had one been lost, nothing would have resent it`;
  }
  const meaning = report.path === "namespaces"
    ? `Path: network namespaces (${report.why}). The link really lost TCP segments, and the kernels' own TCP resent ${tcp.retransmissions} segment(s); the program saw none of that, only the delay. Over UDP the program sees every loss, and must resend what it needs itself.`
    : `Path: loopback (${report.why}). TCP's retransmission was EMULATED here: the relay held a chunk back ${tcp.retransmissions} time(s) and delivered it later, in order, as a resent segment would; the kernel's TCP lost nothing. As root, with ip and python3, the lab uses network namespaces, where the kernel's own TCP resends.`;
  return {
    tcp: `TCP: all ${tcp.sent} messages came back, every byte in order, but later: slowest echo ${
      Math.round(tcp.slowestMs)
    } ms (median ${tcp.medianMs.toFixed(1)} ms)`,
    udp: udpLine,
    udpLostSome: udp.lost > 0,
    meaning: wrap(meaning, ANSWER_COLUMNS),
  };
}

// Sends `data`, half-closes, and counts the bytes echoed back.
async function echoOnce(port: number, data: Uint8Array): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const sending = writeAll(conn, data).then(() => conn.closeWrite());
    const buffer = new Uint8Array(READ_BUFFER_BYTES);
    let received = 0;
    let same = true;
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      for (let i = 0; i < n; i++) if (buffer[i] !== data[received + i]) same = false;
      received += n;
    }
    await sending;
    return same ? received : -1;
  } finally {
    conn.close();
  }
}

/** README.md beside this file: the one place the handout's questions are answered. */
const README = new URL("./README.md", import.meta.url);

/** The README heading whose numbered list answers the handout's questions. */
export const ANSWERS_HEADING = "## The handout's questions, answered for Deno";

/** Width an answer is wrapped to, after its 4-space indent. */
const ANSWER_COLUMNS = 92; // characters

/** One of the handout's questions with the README's answer, as plain text. */
export interface HandoutAnswer {
  /** The question, as the item's bold lead-in puts it. */
  question: string;
  /** The answer in plain text (no backticks, bold or link targets), wrapped for a terminal. */
  text: string;
}

/**
 * Finds the handout's answers in README.md's text: under
 * {@linkcode ANSWERS_HEADING}, an item `N. **Question?** Answer...` whose
 * answer may go on over indented lines. Markdown becomes plain text lightly:
 * backticks and bold marks go, a link keeps only its text, and the answer is
 * wrapped again to fit a terminal without splitting a code span.
 *
 * @param readme The README's markdown.
 * @param wanted The numbers of the questions the caller will print.
 * @returns Each wanted question's answer, by number.
 * @throws {CliError} One line naming the first wanted question left unanswered.
 *
 * @example
 * ```ts
 * import { handoutAnswers } from "./lab.ts";
 * const readme = [
 *   "## The handout's questions, answered for Deno",
 *   "",
 *   "3. **How do we let the OS reuse the port?** `Deno.listen()` sets",
 *   "   `SO_REUSEADDR` for you.",
 * ].join("\n");
 * const answer = handoutAnswers(readme, [3]).get(3);
 * console.log(answer?.text); // Deno.listen() sets SO_REUSEADDR for you.
 * ```
 */
export function handoutAnswers(
  readme: string,
  wanted: Iterable<number>,
): Map<number, HandoutAnswer> {
  const lines = readme.split(/\r?\n/);
  const start = lines.indexOf(ANSWERS_HEADING);
  if (start < 0) {
    throw new CliError(
      `README.md has no section "${ANSWERS_HEADING}", where the lab's answers live`,
    );
  }
  // Gather each numbered item with its indented continuation lines, up to the next section.
  const items = new Map<number, string[]>();
  let current: string[] | undefined;
  for (const line of lines.slice(start + 1)) {
    if (line.startsWith("## ")) break;
    const number = /^(\d+)\. /.exec(line);
    if (number) items.set(Number(number[1]), current = [line.slice(number[0].length)]);
    else if (current && /^\s+\S/.test(line)) current.push(line.trim());
    else current = undefined;
  }
  const answers = new Map<number, HandoutAnswer>();
  for (const n of wanted) {
    const item = /^\*\*(.+?)\*\*\s+(\S.*)$/.exec(items.get(n)?.join(" ") ?? "");
    if (!item) {
      throw new CliError(
        `README.md does not answer question ${n} under "${ANSWERS_HEADING}" (the lab needs an item "${n}. **Question?** Answer.")`,
      );
    }
    answers.set(n, { question: plainText(item[1]), text: wrap(item[2], ANSWER_COLUMNS) });
  }
  return answers;
}

function plainText(markdown: string): string {
  return markdown.replace(/\[([^\]]*)\]\([^)]*\)/g, "$1").replaceAll("**", "").replaceAll("`", "");
}

// Fills lines up to `columns` with the plain text of markdown words; a code span with its
// spaces and the punctuation around it counts as one word.
function wrap(markdown: string, columns: number): string {
  const lines: string[] = [];
  let line = "";
  for (const token of markdown.match(/(?:[^\s`]*`[^`]*`)+[^\s`]*|\S+/g) ?? []) {
    const word = plainText(token);
    if (line && line.length + 1 + word.length > columns) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  return [...lines, line].join("\n");
}

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, USAGE, { step: { type: "string" } });
  const only = values.step === undefined ? null : parseCount(values.step as string, "--step");
  if (only !== null && only > STEPS.length) {
    throw new UsageError(`--step must be from 1 to ${STEPS.length}, got "${values.step}"`);
  }
  // Every step's answers are looked up first, so a README that lost one fails before any work.
  const answers = handoutAnswers(
    await Deno.readTextFile(README),
    STEPS.flatMap((step) => step.questions ?? []),
  );
  await using origin = await startOrigin();
  say(bold("Lab 2 on loopback"));
  say(`a local web server stands in for www.google.com on 127.0.0.1:${origin.addr.port}`);
  const started = performance.now();
  for (const [i, step] of STEPS.entries()) {
    if (only !== null && only !== i + 1) continue;
    say();
    say(bold(`Step ${i + 1}. ${step.title}`));
    await step.run({ originPort: origin.addr.port });
    for (const n of step.questions ?? []) {
      const { question, text } = answers.get(n)!;
      answer(`Question ${n}: ${question}`, text);
    }
  }
  say();
  say(green(`All steps passed in ${((performance.now() - started) / 1000).toFixed(1)} s.`));
}

if (import.meta.main) runMain(USAGE, main);
