/**
 * Across hosts: the tracker and two peers each in their own Linux network
 * namespace, joined by a bridge as if by a switch, each with its own address
 * (`10.213.77.1` to `.3`). They sync, and the tracker records each peer by
 * the address it really comes from. A second case runs a peer on the
 * tracker's own host, started as the README shows (tracker at `127.0.0.1`),
 * and checks that a peer on another host still gets its files and gives it
 * its own. Needs root and `ip` (iproute2); anywhere else the tests are
 * skipped and their names say why. The namespaces are removed whatever
 * happens.
 */

import assert from "node:assert/strict";
import { addVeth, ip, removeNamespace, startInNamespace, whyNoNetns } from "../lib/netns.ts";
import type { Script } from "../lib/scripts.ts";
import { randomBytes, sha256 } from "./helpers.ts";
import { canonical, MIB, putFile, tempFolder, waitForSameFolders } from "./p2p_helpers.ts";

const T0 = 1_700_000_000; // seconds
const SUBNET = "10.213.77"; // a /24 used only inside the namespaces
const TAG = `p2p${Deno.pid % 100000}`; // names this run's namespaces apart from any other's
const HOSTS = { t: 1, a: 2, b: 3 } as const; // namespace suffix to the address's last number
const TRACKER_PORT = 9000;
const TRACKER_HTTP_PORT = 9001;

type Host = keyof typeof HOSTS;

/** Builds the namespaces: a bridge in `-br`, and a veth from it to each of `hosts`. */
function buildNetwork(hosts: Host[] = ["t", "a", "b"]): void {
  ip("netns", "add", `${TAG}-br`);
  ip("-n", `${TAG}-br`, "link", "add", "br0", "type", "bridge");
  ip("-n", `${TAG}-br`, "link", "set", "br0", "up");
  for (const host of hosts) {
    ip("netns", "add", `${TAG}-${host}`);
    addVeth({
      middle: `${TAG}-br`,
      host: `${TAG}-${host}`,
      stem: host,
      address: `${SUBNET}.${HOSTS[host]}`,
      master: "br0",
    });
  }
}

/** Removes every namespace of ours (their interfaces go with them). */
function removeNetwork(): void {
  for (const host of [...Object.keys(HOSTS), "br"]) removeNamespace(`${TAG}-${host}`);
}

/** Runs a project script with `deno run` inside namespace `host`. */
function startIn(host: Host, permissions: string[], script: string, args: string[]) {
  return startInNamespace(`${TAG}-${host}`, permissions, script, args);
}

/** The tracker on host `t`, on every address, at the fixed ports the peers are told. */
function startTrackerIn(): Promise<Script> {
  return startIn("t", ["--allow-net"], "p2p/tracker.ts", [
    "0.0.0.0",
    String(TRACKER_PORT),
    "--http-port",
    String(TRACKER_HTTP_PORT),
  ]);
}

function startPeerIn(host: "a" | "b", dir: string): Promise<Script> {
  return startIn(
    host,
    ["--allow-net", `--allow-read=${dir}`, `--allow-write=${dir}`],
    "p2p/peer.ts",
    [
      `${SUBNET}.${HOSTS.t}`,
      String(TRACKER_PORT),
      "--dir",
      dir,
      "--port",
      "8000",
      "--interval",
      "0.3",
    ],
  );
}

const reason = whyNoNetns("p2p");

Deno.test({
  name: reason === null
    ? "across network namespaces, two peers sync through the tracker, which records each peer's real address"
    : `across network namespaces: SKIPPED because ${reason}`,
  ignore: reason !== null,
  async fn() {
    await using a = await tempFolder();
    await using b = await tempFolder();
    const fromA = randomBytes(2 * MIB, 51);
    const fromB = new TextEncoder().encode("sent from the other host\n");
    await putFile(a.path, "from_a.bin", fromA, T0);
    await putFile(b.path, "from_b.txt", fromB, T0 + 1);
    const scripts: Script[] = [];
    try {
      buildNetwork();
      const tracker = await startTrackerIn();
      scripts.push(tracker);
      // Both peers use port 8000: on different hosts, that is no clash.
      scripts.push(await startPeerIn("a", a.path));
      scripts.push(await startPeerIn("b", b.path));
      const state = await waitForSameFolders([a.path, b.path], 20_000, scripts);
      assert.equal(
        canonical(state),
        canonical({
          "from_a.bin": { size: fromA.length, mtime: T0, sha256: sha256(fromA) },
          "from_b.txt": { size: fromB.length, mtime: T0 + 1, sha256: sha256(fromB) },
        }),
      );
      // The tracker saw each peer at its own address, and handed those out.
      await tracker.waitFor(new RegExp(`peer ${SUBNET}\\.${HOSTS.a}:8000 joined`));
      await tracker.waitFor(new RegExp(`peer ${SUBNET}\\.${HOSTS.b}:8000 joined`));
      // The line comes just after the file is in place: wait for it rather than read it at once.
      await scripts[2].waitFor(
        new RegExp(
          `^downloaded from_a\\.bin from ${SUBNET.replaceAll(".", "\\.")}\\.${HOSTS.a}:8000`,
        ),
        5000,
      );
      // And its status page, asked from inside its namespace, lists both addresses.
      const stats = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          `${TAG}-t`,
          Deno.execPath(),
          "eval",
          `const r = await fetch("http://127.0.0.1:${TRACKER_HTTP_PORT}/stats"); console.log(await r.text());`,
        ],
        stdout: "piped",
        stderr: "piped",
      }).outputSync();
      assert.ok(stats.success, new TextDecoder().decode(stats.stderr));
      const peers = JSON.parse(new TextDecoder().decode(stats.stdout)).peers as {
        ip: string;
        port: number;
      }[];
      assert.deepEqual(
        peers.map((p) => `${p.ip}:${p.port}`).sort(),
        [`${SUBNET}.${HOSTS.a}:8000`, `${SUBNET}.${HOSTS.b}:8000`],
      );
    } finally {
      for (const script of scripts.reverse()) await script.stop();
      removeNetwork();
    }
  },
});

Deno.test({
  name: reason === null
    ? "across network namespaces, a peer on the tracker's host started as the README shows syncs both ways with a peer on another host"
    : `across network namespaces, a peer beside the tracker: SKIPPED because ${reason}`,
  ignore: reason !== null,
  async fn() {
    await using a = await tempFolder();
    await using b = await tempFolder();
    const fromA = randomBytes(2 * MIB, 52);
    const fromB = randomBytes(300_000, 53);
    await putFile(a.path, "from_a.bin", fromA, T0);
    await putFile(b.path, "from_b.bin", fromB, T0 + 1);
    const scripts: Script[] = [];
    try {
      // Two hosts: the tracker and peer A share `t`; peer B is on `b`.
      buildNetwork(["t", "b"]);
      const tracker = await startTrackerIn();
      scripts.push(tracker);
      // B first, so that A's Init is answered with B's file at once: A keeps
      // the README's 5 s interval, and the test need not wait for its KeepAlive.
      const peerB = await startPeerIn("b", b.path);
      scripts.push(peerB);
      await tracker.waitFor(new RegExp(`peer ${SUBNET}\\.${HOSTS.b}:8000 joined`));
      // A exactly as the README's line: tracker at 127.0.0.1, no --host, no --port.
      const peerA = await startIn(
        "t",
        ["--allow-net", `--allow-read=${a.path}`, `--allow-write=${a.path}`],
        "p2p/peer.ts",
        ["127.0.0.1", String(TRACKER_PORT), "--dir", a.path],
      );
      scripts.push(peerA);
      const state = await waitForSameFolders([a.path, b.path], 20_000, scripts);
      assert.equal(
        canonical(state),
        canonical({
          "from_a.bin": { size: fromA.length, mtime: T0, sha256: sha256(fromA) },
          "from_b.bin": { size: fromB.length, mtime: T0 + 1, sha256: sha256(fromB) },
        }),
      );
      // The tracker knows A by its loopback address, as before...
      await tracker.waitFor(new RegExp(`peer 127\\.0\\.0\\.1:${peerA.port} joined`));
      // ...but handed B the address B reached it on, and A got B's real one.
      const reached = `${SUBNET}.${HOSTS.t}:${peerA.port}`;
      const dots = (text: string) => text.replaceAll(".", "\\.");
      await peerB.waitFor(new RegExp(`^downloaded from_a\\.bin from ${dots(reached)}`), 5000);
      await peerA.waitFor(
        new RegExp(`^downloaded from_b\\.bin from ${dots(SUBNET)}\\.${HOSTS.b}:8000`),
        5000,
      );
      // Said once on the tracker's console, with what A must do to be reached.
      await tracker.waitFor(new RegExp(`127\\.0\\.0\\.1:${peerA.port} .*${reached}`));
    } finally {
      for (const script of scripts.reverse()) await script.stop();
      removeNetwork();
    }
  },
});
