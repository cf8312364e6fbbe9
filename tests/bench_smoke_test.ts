/**
 * Smoke test of the benchmark: `bench/bench.ts --part echo --quick` runs
 * every echo server for real with small sizes, and writes JSON and an SVG
 * chart of the expected shape; `--part hostile --quick` does the same for
 * the misbehaving clients, and `--part udp --quick` for the UDP echo servers.
 * It never checks how fast anything is, only that every figure was really
 * measured.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type P2pScriptResult, p2pTable } from "../bench/p2p_part.ts";
import { parseWrk } from "../bench/proxy_part.ts";
import { findProgram } from "../bench/servers.ts";
import { haveCommand, projectPath } from "./helpers.ts";

interface Row {
  id: string;
  label: string;
  ours: boolean;
  connsPerSec: number | null;
  mibPerSec: number | null;
  burst: Record<string, number | null>;
  runs: Record<string, number[]>;
  errors: string[];
}

function isPositive(n: unknown): boolean {
  return typeof n === "number" && Number.isFinite(n) && n > 0;
}

/** Runs `bench/bench.ts --quick` for one part, writing into `dir`; returns its stdout. */
async function runBenchPart(part: string, dir: string): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      "bench/bench.ts",
      "--part",
      part,
      "--quick",
      "--json",
      `${dir}/results.json`,
      "--chart",
      `${dir}/chart.svg`,
    ],
    cwd: projectPath("."),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `bench.ts failed:\n${stdout}\n${stderr}`);
  return stdout;
}

Deno.test("bench.ts --part echo --quick measures every echo server and writes JSON and a chart", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bench_smoke_" });
  try {
    const json = `${dir}/results.json`;
    const chart = `${dir}/chart.svg`;
    const stdout = await runBenchPart("echo", dir);
    assert.match(stdout, /Echo: .*\n.*conn\/s.*xNode/);
    assert.match(stdout, /Targets\n/);

    const results = JSON.parse(await Deno.readTextFile(json));
    assert.equal(results.quick, true);
    assert.ok(!Number.isNaN(Date.parse(results.date)), "date is a date");
    assert.ok(isPositive(results.machine.cores), "machine.cores");
    assert.equal(results.versions.deno, Deno.version.deno);
    for (const tool of ["node", "python", "socat", "wrk"]) {
      assert.equal(typeof results.versions[tool], "string", `versions.${tool}`);
    }
    assert.equal(results.proxy, undefined, "only the echo part ran");

    const rows: Row[] = results.echo.rows;
    const expected = ["async", "worker", "process"];
    if (haveCommand("node")) expected.unshift("node");
    if (haveCommand("python3")) expected.push("python");
    if (haveCommand("socat")) expected.push("socat");
    assert.deepEqual(rows.map((r) => r.id).sort(), [...expected].sort());
    for (const row of rows) {
      assert.deepEqual(row.errors, [], `${row.label} had errors`);
      assert.ok(isPositive(row.connsPerSec), `${row.label} connsPerSec = ${row.connsPerSec}`);
      assert.ok(isPositive(row.mibPerSec), `${row.label} mibPerSec = ${row.mibPerSec}`);
      for (const key of ["p50Ms", "p99Ms", "maxMs", "seconds", "peakRssMiB", "peakProcesses"]) {
        assert.ok(isPositive(row.burst[key]), `${row.label} burst.${key} = ${row.burst[key]}`);
      }
      assert.ok(row.burst.p50Ms! <= row.burst.p99Ms!, `${row.label} p50 <= p99`);
      assert.equal(row.runs.connsPerSec.length, results.echo.settings.rounds);
    }

    const targets = results.echo.targets;
    assert.equal(targets.length, 5);
    for (const t of targets) {
      assert.equal(typeof t.what, "string");
      assert.ok(isPositive(t.goal), `${t.what} goal`);
      if (t.what.includes("Node") && !haveCommand("node")) continue;
      if (t.what.includes("Python") && !haveCommand("python3")) continue;
      assert.ok(isPositive(t.measured), `${t.what} measured = ${t.measured}`);
      assert.equal(t.met, t.measured >= t.goal);
    }

    const svg = await Deno.readTextFile(chart);
    assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.match(svg, /prefers-color-scheme: dark/);
    for (const row of rows) assert.ok(svg.includes(`>${row.label}<`), `chart shows ${row.label}`);
    assert.equal((svg.match(/<rect /g) ?? []).length, 1 + rows.length * 2 + targets.length);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseWrk() reads rates, latency percentiles and errors from wrk's report", () => {
  const report = `Running 10s test @ http://127.0.0.1:8080/1k
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   701.20us  310.00us  12.00ms   90.00%
  Latency Distribution
     50%  617.52us
     75%    0.90ms
     90%    1.20ms
     99%    2.34ms
  123456 requests in 10.00s, 130.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 20
  Non-2xx or 3xx responses: 5
Requests/sec:  12345.67
Transfer/sec:      1.50GB
`;
  assert.deepEqual(parseWrk(report), {
    reqPerSec: 12345.67,
    mibPerSec: 1536,
    p50Ms: 0.618,
    p99Ms: 2.34,
    errors: 28,
    errorKinds: "read 3, timeout 20, non-2xx 5",
  });
  const clean = parseWrk("Requests/sec:  10.00\nTransfer/sec:  512.00KB\n");
  assert.equal(clean.mibPerSec, 0.5);
  assert.equal(clean.errors, 0);
  assert.equal(clean.errorKinds, undefined);
  assert.equal(parseWrk("unable to connect to 127.0.0.1:1").reqPerSec, null);
});

Deno.test("bench.ts --part proxy --quick measures every relay (haproxy, both Node relays, socat, ours) or says why not", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bench_smoke_" });
  try {
    const stdout = await runBenchPart("proxy", dir);
    const results = JSON.parse(await Deno.readTextFile(`${dir}/results.json`));
    assert.equal(results.echo, undefined, "only the proxy part ran");
    const proxy = results.proxy;
    if (!haveCommand("wrk")) {
      assert.deepEqual(proxy.missing, ["wrk"]);
      assert.deepEqual(proxy.rows, []);
      return;
    }
    assert.match(stdout, /Proxy: .*\norigin: .+: .+\nrelay .*xNode/);
    assert.match(stdout, /Targets\n/);
    const nginx = await findProgram("nginx");
    assert.equal(proxy.origin.id, nginx ? "nginx" : "deno", `origin: ${proxy.origin.why}`);

    // Rows whose program is missing are kept, with the reason instead of figures.
    const installed: Record<string, boolean> = {
      haproxy: await findProgram("haproxy") !== null,
      node: haveCommand("node"),
      "node-nagle": haveCommand("node"),
      socat: haveCommand("socat"),
    };
    const ids = ["direct", "haproxy", "node", "node-nagle", "socat", "async", "worker", "process"];
    assert.deepEqual(proxy.rows.map((r: { id: string }) => r.id), [...ids, "forward"]);
    for (const row of proxy.rows) {
      const skipped = Object.keys(row.cases).length === 0;
      if (installed[row.id] === false || (row.id === "forward" && skipped)) {
        assert.ok(skipped, `${row.label} has no figures`);
        assert.match(row.errors[0] ?? "", /is not installed|does not mention --forward/);
        continue;
      }
      assert.deepEqual(row.errors, [], `${row.label} had errors`);
      for (const [id, figures] of Object.entries(row.cases)) {
        const f = figures as Record<string, number>;
        assert.ok(isPositive(f.reqPerSec), `${row.label} ${id} req/s = ${f.reqPerSec}`);
        assert.ok(isPositive(f.mibPerSec), `${row.label} ${id} MiB/s = ${f.mibPerSec}`);
        assert.ok(f.p50Ms <= f.p99Ms, `${row.label} ${id} p50 <= p99`);
        assert.equal(typeof f.originCpuPct, "number", `${row.label} ${id} origin CPU`);
      }
      assert.equal(Object.keys(row.cases).length, 4, `${row.label} ran every case`);
      if (row.id !== "direct") assert.ok(isPositive(row.peakRssMiB), `${row.label} peak RSS`);
    }

    // The goals of issue 12, measured whenever both sides ran.
    const measured = (what: string, ...ids: string[]) => {
      const t = proxy.targets.find((t: { what: string }) => t.what === what);
      assert.ok(t, `target "${what}" is reported`);
      const ran = ids.every((id) =>
        Object.keys(proxy.rows.find((r: { id: string }) => r.id === id).cases).length > 0
      );
      if (ran) assert.ok(isPositive(t.measured), `${what} measured = ${t.measured}`);
      else assert.equal(t.measured, null, `${what} is not measured`);
    };
    measured("async req/s vs haproxy (1 KiB)", "async", "haproxy");
    measured("async req/s vs tuned Node (1 KiB)", "async", "node");
    measured("async MiB/s vs tuned Node (10 MiB)", "async", "node");
    measured("forward req/s vs relay mode (1 KiB)", "forward", "async");

    const svg = await Deno.readTextFile(`${dir}/chart.svg`);
    for (const row of proxy.rows) {
      assert.ok(svg.includes(`>${row.label}<`), `chart shows ${row.label}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bench.ts --part hostile --quick measures storm, tiny segments and silent connections", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bench_smoke_" });
  try {
    const stdout = await runBenchPart("hostile", dir);
    for (const title of ["Reset storm: ", "Tiny segments: ", "Silent connections: ", "Targets"]) {
      assert.ok(stdout.includes(title), `the report has "${title}"`);
    }
    const results = JSON.parse(await Deno.readTextFile(`${dir}/results.json`));
    assert.equal(results.echo, undefined, "only the hostile part ran");
    const hostile = results.hostile;
    const python = haveCommand("python3");
    const node = haveCommand("node");

    const modes = ["async", "worker", "process"];
    const ours = [...modes.map((m) => `echo-${m}`), ...modes.map((m) => `proxy-${m}`)];
    const storm = [...(node ? ["node"] : []), ...(python ? ["python"] : []), ...ours];
    assert.deepEqual(hostile.storm.map((r: { id: string }) => r.id), storm);
    for (const row of hostile.storm) {
      // Good clients alone must be served cleanly; under the storm only the figures count.
      assert.ok(isPositive(row.alone?.connsPerSec), `${row.label} alone conn/s`);
      assert.equal(row.alone.errors, 0, `${row.label} alone: ${row.errors}`);
      if (python) {
        assert.ok(isPositive(row.resetsPerSec), `${row.label} resets/s = ${row.resetsPerSec}`);
        assert.equal(typeof row.storm?.connsPerSec, "number", `${row.label} storm conn/s`);
      }
    }

    const tiny = [...(node ? ["node"] : []), ...ours];
    assert.deepEqual(hostile.tiny.map((r: { id: string }) => r.id), tiny);
    for (const row of hostile.tiny) {
      assert.ok(isPositive(row.baselineMiB), `${row.label} baseline = ${row.baselineMiB}`);
      assert.ok(row.peakMiB >= row.baselineMiB, `${row.label} peak >= baseline`);
      assert.ok(isPositive(row.bytesSent), `${row.label} bytes sent = ${row.bytesSent}`);
    }

    const silent = hostile.silent;
    assert.deepEqual(silent.errors, []);
    assert.equal(silent.opened, hostile.settings.silentConns);
    assert.ok(isPositive(silent.initMaxMs), `Init max = ${silent.initMaxMs}`);
    assert.ok(
      silent.fdsWithSilent >= silent.opened,
      "the tracker holds a descriptor per connection",
    );
    assert.equal(typeof silent.closedByServer, "number");

    // Two per storm row of ours, one per tiny row of ours, two for the tracker.
    assert.equal(hostile.targets.length, ours.length * 3 + 2);
    const svg = await Deno.readTextFile(`${dir}/chart.svg`);
    assert.ok(svg.includes("Hostile: good clients served beside"), "the chart has the storm group");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bench.ts --part udp --quick measures round trips and datagrams for every UDP echo server", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bench_smoke_" });
  try {
    const stdout = await runBenchPart("udp", dir);
    assert.match(stdout, /UDP: .*\n.*rt\/s.*xNode.*dgram\/s/);
    assert.match(stdout, /Targets\n/);
    const results = JSON.parse(await Deno.readTextFile(`${dir}/results.json`));
    assert.equal(results.echo, undefined, "only the udp part ran");
    const udp = results.udp;

    const expected = ["ours"];
    if (haveCommand("node")) expected.unshift("node");
    if (haveCommand("python3")) expected.splice(expected.length - 1, 0, "python");
    assert.deepEqual(udp.rows.map((r: { id: string }) => r.id), expected);
    for (const row of udp.rows) {
      assert.deepEqual(row.errors, [], `${row.label} had errors`);
      assert.ok(isPositive(row.rtt.perSec), `${row.label} round trips/s = ${row.rtt.perSec}`);
      assert.ok(isPositive(row.rtt.p50Ms), `${row.label} p50 = ${row.rtt.p50Ms}`);
      assert.ok(row.rtt.p50Ms <= row.rtt.p99Ms, `${row.label} p50 <= p99`);
      assert.ok(isPositive(row.datagramsPerSec), `${row.label} datagrams/s`);
      assert.equal(typeof row.lost.rtt, "number");
      assert.equal(typeof row.lost.window, "number");
      assert.equal(row.runs.roundTripsPerSec.length, udp.settings.rounds);
    }

    assert.equal(udp.targets.length, 2);
    for (const t of udp.targets) {
      if (!haveCommand("node")) {
        assert.equal(t.measured, null, `${t.what} needs Node`);
        continue;
      }
      assert.ok(isPositive(t.measured), `${t.what} measured = ${t.measured}`);
      assert.equal(t.met, t.measured >= t.goal);
    }
    const svg = await Deno.readTextFile(`${dir}/chart.svg`);
    assert.ok(svg.includes("UDP: round trips/s"), "the chart has the UDP groups");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Runs one P2P bench script with `--quick`, killed after `ms`; returns the JSON it printed. */
async function runQuickScript(script: string, ms: number): Promise<Record<string, unknown>> {
  const aborter = new AbortController();
  const timer = setTimeout(() => aborter.abort(), ms);
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net",
        "--allow-read",
        "--allow-write",
        "--allow-run",
        script,
        "--quick",
      ],
      cwd: projectPath("."),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
      signal: aborter.signal,
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, `${script} failed (or ran past ${ms} ms):\n${stdout}\n${stderr}`);
    return JSON.parse(stdout.trim().split("\n").at(-1)!);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("p2p_propagation.ts and p2p_resume.ts --quick report issue 10's figures, and the p2p table shows them", async () => {
  // Each bounded: 3 edits take well under a second each with push, 15 s without.
  const propagation = await runQuickScript("bench/p2p_propagation.ts", 25_000);
  assert.equal(propagation.edits, 3);
  assert.equal((propagation.timesMs as number[]).length, 3);
  assert.ok(isPositive(propagation.medianMs), `median ${propagation.medianMs}`);
  assert.ok((propagation.maxMs as number) >= (propagation.medianMs as number));
  assert.equal(propagation.statusPage, "live (server-sent events)");

  const resume = await runQuickScript("bench/p2p_resume.ts", 30_000);
  assert.equal(resume.fileMiB, 32);
  for (const figure of ["restart", "holderGone"]) {
    const d = resume[figure] as Record<string, number>;
    assert.ok(isPositive(d.sentBytes), `${figure}: ${JSON.stringify(d)}`);
    assert.ok(isPositive(d.sentRatio), `${figure}: ${JSON.stringify(d)}`);
    // Continued, not started again: the holder was asked from a byte past the start.
    assert.ok(d.resumedFromByte > 0, `${figure}: ${JSON.stringify(d)}`);
  }

  const skipped = (script: string): P2pScriptResult => ({
    script,
    available: false,
    note: "skipped",
  });
  const table = p2pTable({
    date: new Date().toISOString(),
    transfer: skipped("bench/p2p_transfer.ts"),
    trackerLoad: skipped("bench/p2p_tracker_load.ts"),
    propagation: { script: "bench/p2p_propagation.ts", available: true, data: propagation },
    resume: { script: "bench/p2p_resume.ts", available: true, data: resume },
    targets: [],
  });
  assert.match(table, /p2p_propagation\.ts\s+statusPage\s+live \(server-sent events\)/);
  assert.match(table, /p2p_propagation\.ts\s+medianMs/);
  assert.match(table, /p2p_resume\.ts\s+restart\.sentRatio/);
  assert.match(table, /p2p_resume\.ts\s+holderGone\.sentRatio/);
});
