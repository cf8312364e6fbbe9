#!/usr/bin/env -S deno run --allow-net --allow-read --allow-write --allow-run --allow-env
/**
 * The whole of Lab 2, offline, in one command: `deno task lab`.
 *
 * A local web server stands in for www.google.com; then, in the handouts'
 * order, each step runs our script the way you would type it, shows what
 * happened, and answers the handout's question for Deno. Every step checks
 * its own result: any failure prints one line and exits 1.
 *
 * @module
 */

import { CliError, parseCli, parseCount, runMain, UsageError } from "./lib/cli.ts";
import { MODE_PERMISSIONS, MODES } from "./lib/concurrency.ts";
import { READ_BUFFER_BYTES, writeAll } from "./lib/net.ts";
import { startOrigin } from "./lib/origin.ts";
import { peerPermissions } from "./p2p/peer.ts";
import { haveCommand, runScript, type Script, startScript } from "./lib/scripts.ts";

const USAGE = `usage: deno task lab [--step N]
Runs every step of the lab on loopback (about half a minute), or only step N.`;

/** Clients each mode serves at once in the side-by-side step. */
const SIDE_BY_SIDE_CLIENTS = 20;

const useColour = Deno.stdout.isTerminal() && !Deno.env.get("NO_COLOR");
const paint = (code: number) => (text: string) => useColour ? `\x1b[${code}m${text}\x1b[0m` : text;
const bold = paint(1);
const dim = paint(2);
const green = paint(32);
const cyan = paint(36);

/** One step of the walk-through. */
interface Step {
  title: string;
  /** Runs the step; throws {@linkcode CliError} with one line when it fails. */
  run(context: LabContext): Promise<void>;
}

/** What the steps share: the stand-in web server. */
interface LabContext {
  originPort: number;
}

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

function answer(question: string, text: string): void {
  say(`  ${bold(question)}`);
  for (const line of text.split("\n")) say(`    ${line}`);
}

function check(ok: boolean, failure: string): void {
  if (!ok) throw new CliError(failure);
}

const STEPS: Step[] = [
  {
    title: "Client: ask a web server for a page (client.ts)",
    async run({ originPort }) {
      const args = ["--host", "127.0.0.1", "--port", String(originPort)];
      command(`deno run --allow-net client.ts ${args.join(" ")}`);
      const result = await runScript("client.ts", args);
      const page = new TextDecoder().decode(result.stdout);
      check(result.code === 0, `client.ts failed: ${result.stderr.trim()}`);
      check(page.startsWith("HTTP/1.0 200 OK"), "client.ts did not print an HTTP 200 reply");
      output(result.stderr, 4);
      output(page, 6);
      answer(
        "Question 1: how do you ask for a TCP socket?",
        `Deno.connect({ hostname, port }) opens a TCP connection (transport "tcp" is the default);
IPv4 or IPv6 follows from the address the name resolves to. There is no separate socket() step.`,
      );
      answer(
        "Question 5: what does reading return once the server has sent everything?",
        `conn.read(buffer) resolves to null (Python's recv() gives b""). client.ts half-closes
after its request (closeWrite), the server replies and closes, and the null ends the loop.`,
      );
    },
  },
  {
    title: "Echo server, checked with the handout's nc command (echo_server.ts)",
    async run() {
      command("deno run --allow-net echo_server.ts --port 0   # the lab uses 8001");
      await using server = await startScript("echo_server.ts", ["--port", "0"]);
      // The handout's check sends "Foobar" and a newline (echo adds it); our fallback sends it as is.
      let sent: string;
      let echoed: string;
      if (haveCommand("nc")) {
        sent = "Foobar\n";
        command(`echo "Foobar" | nc localhost ${server.port} -q 1`);
        const nc = await new Deno.Command("sh", {
          args: ["-c", `echo "Foobar" | nc localhost ${server.port} -q 1`],
          stdout: "piped",
          stderr: "piped",
        }).output();
        echoed = new TextDecoder().decode(nc.stdout);
      } else {
        sent = "Foobar";
        say(dim("  (nc is not installed: using client.ts --message instead)"));
        const args = ["--host", "127.0.0.1", "--port", String(server.port), "--message", sent];
        command(`deno run --allow-net client.ts ${args.slice(0, -1).join(" ")} "${sent}"`);
        echoed = new TextDecoder().decode((await runScript("client.ts", args)).stdout);
      }
      output(echoed);
      check(
        echoed === sent,
        `the echo server answered ${JSON.stringify(echoed)}, not ${JSON.stringify(sent)}`,
      );
      await server.waitFor(/^Closed /);
      say("  the server printed:");
      output(server.lines.join("\n"));
      answer(
        "Question 2: client socket or server socket?",
        `Deno.connect() gives a client connection (a Deno.Conn) that you read and write.
Deno.listen() gives a Deno.Listener bound to a port; each accept() hands you a new Deno.Conn
for one client, while the listener keeps waiting for the next.`,
      );
      answer(
        "Question 4: what do we learn about an incoming connection?",
        `conn.remoteAddr holds the client's IP address and port (its ephemeral port), and
conn.localAddr our own end: together the socket pair that names this connection.`,
      );
    },
  },
  {
    title: "Reusing the port at once (the SO_REUSEADDR question)",
    async run() {
      // Make the server's side of a connection close first, so it sits in TIME_WAIT.
      const first = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = first.addr.port;
      const client = await Deno.connect({ port });
      const accepted = await first.accept();
      accepted.close();
      first.close();
      await client.read(new Uint8Array(1));
      client.close();
      const timeWait = new TextDecoder().decode(
        (await new Deno.Command("sh", {
          args: ["-c", `ss -tan state time-wait '( sport = :${port} )' 2>/dev/null | tail -n +2`],
          stdout: "piped",
        }).output()).stdout,
      ).trim();
      if (timeWait) output(timeWait, 2);
      let rebound = false;
      try {
        Deno.listen({ hostname: "127.0.0.1", port }).close();
        rebound = true;
      } catch (err) {
        throw new CliError(`could not listen on port ${port} again: ${(err as Error).message}`);
      }
      check(rebound, "rebinding failed");
      say(
        `  listened on port ${port} again right away${
          timeWait ? ", with a connection in TIME_WAIT" : ""
        }`,
      );
      answer(
        "Question 3: how do we let the OS reuse the port?",
        `Python needs setsockopt(SOL_SOCKET, SO_REUSEADDR, 1). Deno.listen() sets SO_REUSEADDR
itself (checked here on Linux), so a restarted server binds again at once, as shown above.
(reusePort: true, for SO_REUSEPORT, is a different option and still needs --unstable-net.)`,
      );
    },
  },
  {
    title: `Many clients at once: the three concurrency modes side by side`,
    async run() {
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
    },
  },
  {
    title: "Proxy server and proxy client, ten clients at once (proxy_server.ts, proxy_client.ts)",
    async run({ originPort }) {
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
    },
  },
  {
    title: "P2P file synchronizer: a tracker and three peers (p2p/tracker.ts, p2p/peer.ts)",
    async run() {
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
        `deno run --allow-net p2p/tracker.ts ${
          trackerArgs.join(" ")
        }   # short expiry for the demo`,
      );
      await using tracker = await startScript("p2p/tracker.ts", trackerArgs);
      const samples: Record<string, string> = {
        "hello.txt": "Hello from peer A\n",
        "notes.md": "# Notes from peer B\n",
        "numbers.csv": "n,square\n1,1\n2,4\n3,9\n",
      };
      const dirs: string[] = [];
      const peers: Script[] = [];
      try {
        for (const [i, [name, text]] of Object.entries(samples).entries()) {
          const dir = await Deno.makeTempDir({ prefix: `lab_peer_${"ABC"[i]}_` });
          dirs.push(dir);
          await Deno.writeTextFile(`${dir}/${name}`, text);
          const perms = peerPermissions(dir, "async");
          const args = [
            "127.0.0.1",
            String(tracker.port),
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
          peers.push(await startScript("p2p/peer.ts", args, { permissions: perms }));
        }
        const names = Object.keys(samples).sort();
        const synced = () => {
          for (const dir of dirs) {
            const held = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
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
            check(got === samples[name], `peer ${"ABC"[i]} holds a wrong copy of ${name}`);
          }
        }
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
    },
  },
];

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

async function main(): Promise<void> {
  const { values } = parseCli(Deno.args, USAGE, { step: { type: "string" } });
  const only = values.step === undefined ? null : parseCount(values.step as string, "--step");
  if (only !== null && only > STEPS.length) {
    throw new UsageError(`--step must be from 1 to ${STEPS.length}, got "${values.step}"`);
  }
  await using origin = await startOrigin();
  say(bold("Lab 2 on loopback"));
  say(`a local web server stands in for www.google.com on 127.0.0.1:${origin.addr.port}`);
  const started = performance.now();
  for (const [i, step] of STEPS.entries()) {
    if (only !== null && only !== i + 1) continue;
    say();
    say(bold(`Step ${i + 1}. ${step.title}`));
    await step.run({ originPort: origin.addr.port });
  }
  say();
  say(green(`All steps passed in ${((performance.now() - started) / 1000).toFixed(1)} s.`));
}

if (import.meta.main) runMain(USAGE, main);
