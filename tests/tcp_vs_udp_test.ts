/**
 * What TCP does for you, checked: over a link that loses 10% each way, TCP
 * hands back every byte in order while UDP loses some. Runs the comparison
 * on whichever link this machine takes (network namespaces and
 * lossy_bridge.py as root, else loopback), and on loopback again by force;
 * checks the loopback relay's drops against its seeded generator, its
 * emulated TCP retransmission, and that a comparison cut short by its
 * deadline leaves no process and no namespace behind.
 *
 * @module
 */

import assert from "node:assert/strict";
import dgram from "node:dgram";
import { childrenOf, waitUntil } from "./helpers.ts";
import {
  MAX_RETRANSMISSIONS,
  retransmissionDelay,
  seededRandom,
  startLossyRelay,
} from "../lib/lossy_relay.ts";
import {
  compareTcpUdp,
  sendNumberedMessages,
  type TcpUdpReport,
  whyNoNamespaces,
} from "../lib/tcp_vs_udp.ts";
import { startUdpEchoServer } from "../udp_echo_server.ts";
import { startEchoServer } from "../echo_server.ts";

const SEED = 7;
const LOSS = 0.1;
/** Enough pings that losing none at 10% each way is out of the question (0.81^50 < 0.0001%). */
const MESSAGES = 50;

const namespacesReason = whyNoNamespaces();
const machinePath = namespacesReason === null ? "namespaces" : "loopback";

/** Runs `ip netns ARGS` and returns what it printed. */
function ipNetns(...args: string[]): string {
  const out = new Deno.Command("ip", { args: ["netns", ...args], stdout: "piped" }).outputSync();
  assert.ok(out.success, `ip netns ${args.join(" ")} failed`);
  return new TextDecoder().decode(out.stdout);
}

/** Our namespaces still listed by `ip netns list` (none, once a comparison is over). */
function ourNamespaces(): string[] {
  if (namespacesReason !== null) return [];
  return ipNetns("list").split("\n").filter((line) => line.startsWith(`tvu-${Deno.pid}-`));
}

/** The pid of a process that has exited: `sh` prints its own, then ends. */
function deadPid(): number {
  const out = new Deno.Command("sh", { args: ["-c", "echo $$"], stdout: "piped" }).outputSync();
  return Number(new TextDecoder().decode(out.stdout).trim());
}

/** Waits until every process a comparison started has exited and been reaped. */
async function assertNothingLeft(): Promise<void> {
  await waitUntil(
    () => childrenOf(Deno.pid).length === 0,
    5_000,
    "every child process to exit",
    () => `children: ${childrenOf(Deno.pid).join(", ")}`,
  );
  assert.deepEqual(ourNamespaces(), []);
}

/** What every comparison must show, on either link. */
function assertTcpWholeUdpHoled(report: TcpUdpReport): void {
  const shown = report.lines.join("\n");
  assert.equal(report.tcp.sent, MESSAGES, shown);
  assert.equal(report.tcp.received, MESSAGES, shown);
  assert.ok(report.tcp.intact, `TCP lost or reordered bytes:\n${shown}`);
  assert.equal(report.tcp.bytesReceived, report.tcp.bytesSent, shown);
  assert.equal(report.tcp.error, null, shown);
  assert.ok(report.tcp.retransmissions >= 1, `TCP never had to resend:\n${shown}`);
  assert.equal(report.udp.sent, MESSAGES, shown);
  assert.ok(report.udp.lost >= 1, `UDP lost nothing:\n${shown}`);
  assert.ok(report.udp.received >= 1, `UDP lost everything:\n${shown}`);
  assert.equal(report.udp.lost + report.udp.received, report.udp.sent, shown);
  assert.ok(report.link.dropped >= 1, shown);
}

Deno.test("retransmissionDelay() waits one timeout per drop, doubling, and gives up in the end", () => {
  const draws = (...values: number[]) => () => values.shift()!;
  assert.deepEqual(retransmissionDelay(draws(0.5), 0.1, 200), { retransmissions: 0, delayMs: 0 });
  assert.deepEqual(retransmissionDelay(draws(0.05, 0.5), 0.1, 200), {
    retransmissions: 1,
    delayMs: 200,
  });
  assert.deepEqual(retransmissionDelay(draws(0.05, 0.05, 0.05, 0.5), 0.1, 200), {
    retransmissions: 3,
    delayMs: 200 + 400 + 800,
  });
  const alwaysLost = retransmissionDelay(() => 0, 0.1, 200);
  assert.equal(alwaysLost.retransmissions, null);
  assert.equal(alwaysLost.delayMs, 200 * (2 ** (MAX_RETRANSMISSIONS + 1) - 1));
});

Deno.test("seededRandom() repeats its sequence for the same seed only", () => {
  const take = (seed: number) => Array.from({ length: 5 }, seededRandom(seed));
  assert.deepEqual(take(SEED), take(SEED));
  assert.notDeepEqual(take(SEED), take(SEED + 1));
  assert.ok(take(SEED).every((x) => x >= 0 && x < 1));
});

Deno.test("the loopback UDP relay drops exactly the datagrams its seeded generator picks, about 10% each way", async () => {
  const total = 400;
  await using server = await startUdpEchoServer({ quiet: true });
  await using relay = await startLossyRelay({
    transport: "udp",
    target: server.addr,
    loss: LOSS,
    seed: SEED,
    log: () => {},
  });
  const client = dgram.createSocket("udp4");
  let replies = 0;
  client.on("message", () => replies++);
  await new Promise<void>((resolve) => client.bind(0, "127.0.0.1", () => resolve()));
  try {
    const { forward, back } = relay.stats;
    // In batches, each waited for, so no datagram is lost to a full socket queue instead.
    for (let sent = 0; sent < total;) {
      for (const end = sent + 40; sent < end; sent++) {
        client.send(`datagram ${sent}`, relay.addr.port, "127.0.0.1");
      }
      await waitUntil(
        () =>
          forward.delivered + forward.dropped === sent &&
          back.delivered + back.dropped === forward.delivered && replies === back.delivered,
        10_000,
        `the relay to pass on ${sent} datagrams and their echoes`,
        () => JSON.stringify({ stats: relay.stats, replies }),
      );
    }
    // The same decisions, from the same generators: seed for one way, seed + 1 for the other.
    const drops = (seed: number, n: number) =>
      Array.from({ length: n }, seededRandom(seed)).filter((x) => x < LOSS).length;
    assert.equal(forward.dropped, drops(SEED, total));
    assert.equal(back.dropped, drops(SEED + 1, forward.delivered));
    assert.equal(server.stats.received, forward.delivered);
    for (const way of [forward, back]) {
      const share = way.dropped / (way.dropped + way.delivered);
      assert.ok(share > 0.05 && share < 0.15, `dropped ${(share * 100).toFixed(1)}%`);
    }
  } finally {
    await new Promise<void>((resolve) => client.close(() => resolve()));
  }
});

Deno.test("the loopback TCP relay delivers every byte in order, holding 'dropped' chunks back a timeout", async () => {
  const rtoMs = 20;
  await using server = await startEchoServer({ quiet: true, log: () => {} });
  await using relay = await startLossyRelay({
    transport: "tcp",
    target: server.addr,
    loss: 0.3,
    seed: SEED,
    rtoMs,
    log: () => {},
  });
  const run = await sendNumberedMessages({
    hostname: "127.0.0.1",
    port: relay.addr.port,
    messages: 30,
    intervalSeconds: 0.005,
  });
  assert.equal(run.error, null);
  assert.ok(run.intact, JSON.stringify(run));
  assert.equal(run.received, 30);
  const held = relay.stats.forward.dropped + relay.stats.back.dropped;
  assert.ok(held >= 1, JSON.stringify(relay.stats));
  // A chunk held back one timeout cannot have come back sooner than that.
  assert.ok(run.slowestMs >= rtoMs, JSON.stringify(run));
});

Deno.test({
  name:
    `compareTcpUdp() on this machine's own path (${machinePath}): TCP delivers every byte in order, UDP loses some`,
  async fn() {
    // A namespace left by a comparison that was killed: named for a process that is gone.
    const stale = `tvu-${deadPid()}-1-c`;
    if (machinePath === "namespaces") ipNetns("add", stale);
    try {
      const report = await compareTcpUdp({
        messages: MESSAGES,
        seed: SEED,
        intervalSeconds: 0.02,
      });
      assert.equal(report.path, machinePath, report.why);
      assert.equal(report.seed, SEED);
      assertTcpWholeUdpHoled(report);
      if (machinePath === "namespaces") {
        assert.match(report.lines[0], /^Path: network namespaces/);
        assert.ok(report.lines.some((l) => /kernels retransmitted [1-9]\d* segment/.test(l)));
        assert.ok(!ipNetns("list").includes(stale), `${stale} was left behind`);
      } else {
        assert.match(report.lines[0], /^Path: loopback \(.+\)/);
      }
    } finally {
      // Only if the comparison failed to: never leave one of ours behind.
      if (machinePath === "namespaces" && ipNetns("list").includes(stale)) ipNetns("del", stale);
    }
    await assertNothingLeft();
  },
});

Deno.test("compareTcpUdp() on the loopback path by force: UDP really loses, TCP's resends are emulated and say so", async () => {
  const report = await compareTcpUdp({
    messages: MESSAGES,
    seed: SEED,
    intervalSeconds: 0.02,
    path: "loopback",
  });
  assert.equal(report.path, "loopback");
  assertTcpWholeUdpHoled(report);
  assert.match(report.lines[0], /^Path: loopback \(the loopback path was asked for\)/);
  assert.match(report.lines.join("\n"), /TCP is EMULATED/);
  assert.ok(report.lines.some((l) => /held chunks back \d+ time\(s\).*\(emulated\)/.test(l)));
  await assertNothingLeft();
});

Deno.test("compareTcpUdp() cut short by its deadline stops every process and removes its namespaces", async () => {
  await assert.rejects(
    compareTcpUdp({ messages: MESSAGES, seed: SEED, deadlineSeconds: 1 }),
    /took over 1 s/,
  );
  await assertNothingLeft();
});
