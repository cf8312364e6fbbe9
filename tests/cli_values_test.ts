/**
 * Bad flag values, as a new user types them, get one plain line that names
 * the flag and says what it takes (exit 2), or one line for a runtime
 * failure such as a missing folder (exit 1): never a stack trace, a message
 * cut short, or a value that silently means something else (a timer past
 * 2^31 ms that fires at once).
 *
 * The scripts run as a student runs them, and every bad value is refused
 * before anything listens. Where a regression would let a server start, its
 * net permission covers one unused port only, so it fails fast instead of
 * serving for ever.
 */

import assert from "node:assert/strict";
import {
  MAX_TIMER_SECONDS,
  parseCli,
  parseCount,
  parseHost,
  parseHostPort,
  parseSeconds,
  UsageError,
} from "../lib/cli.ts";
import { runScript } from "./helpers.ts";

/** Lets a script that wrongly got past its checks fail to listen rather than run on. */
const NARROW_NET = "--allow-net=127.0.0.1:1";

/** A folder for the peer, removed at the end of the test. */
async function tempFolder(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "cli_values_" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

/**
 * A line of a stack trace, `    at main (file:///…/peer.ts:791:22)`. Plain
 * `^\s+at ` would also match the usage text's "at most 32" continuation line.
 */
const STACK_FRAME = /^\s+at .*:\d+:\d+\)?$/m;

/** The stderr of a run must be one `error: ` line (plus the usage for exit 2), no stack trace. */
function assertOneLine(
  run: { code: number; stderr: string },
  code: number,
  message: RegExp,
  what: string,
): void {
  const lines = run.stderr.trimEnd().split("\n");
  assert.equal(run.code, code, `${what}: ${run.stderr}`);
  assert.match(lines[0], /^error: /, what);
  assert.match(lines[0], message, what);
  assert.doesNotMatch(run.stderr, STACK_FRAME, `${what}: no stack trace`);
  if (code === 2) assert.match(lines[1], /^usage: /, what);
  else assert.equal(lines.length, 1, `${what}: one line only`);
}

interface BadValue {
  script: string;
  args: string[];
  message: RegExp;
  permissions?: string[];
}

const PEER_PERMISSIONS = [NARROW_NET, "--allow-read", "--allow-write"];

/** Cases that need no folder. `DIR` in args is replaced by a fresh temp folder. */
const BAD_VALUES: BadValue[] = [
  // Durations past 2^31 ms used to wrap around to "at once".
  {
    script: "client.ts",
    args: ["--host", "127.0.0.1", "--port", "1", "--timeout", "3000000"],
    message:
      /^error: --timeout must be a positive number of seconds up to 2147483 \(about 24 days\), got "3000000"$/,
  },
  {
    script: "p2p/peer.ts",
    args: ["--dir", "DIR", "--interval", "3000000"],
    message: /^error: --interval must be a positive number of seconds up to 2147483 .*"3000000"$/,
    permissions: PEER_PERMISSIONS,
  },
  {
    script: "p2p/tracker.ts",
    args: ["--sweep-interval", "3000000"],
    message: /^error: --sweep-interval must be a positive number of seconds up to 2147483 /,
    permissions: [NARROW_NET],
  },
  {
    script: "p2p/tracker.ts",
    args: ["--peer-timeout", "3000000"],
    message: /^error: --peer-timeout must be a positive number of seconds up to 2147483 /,
    permissions: [NARROW_NET],
  },
  {
    script: "proxy_server.ts",
    args: ["--idle-timeout", "3000000"],
    message: /^error: --idle-timeout must be a positive number of seconds up to 2147483 /,
    permissions: [NARROW_NET],
  },
  {
    script: "proxy_client.ts",
    args: ["--timeout", "-1"],
    message: /^error: --timeout must be a positive number of seconds up to 2147483 .*"-1"$/,
    permissions: [NARROW_NET],
  },
  // Negative numbers reach the flag's own check instead of parseArgs's "ambiguous".
  {
    script: "echo_server.ts",
    args: ["--port", "-1"],
    message: /^error: --port must be a whole number from 0 to 65535, got "-1"$/,
    permissions: [NARROW_NET],
  },
  {
    script: "echo_server.ts",
    args: ["--workers", "-3"],
    message: /^error: --workers .*"-3"/,
    permissions: [NARROW_NET],
  },
  {
    script: "echo_server.ts",
    args: ["--max-conns", "-1"],
    message: /^error: --max-conns .*"-1"/,
    permissions: [NARROW_NET],
  },
  // Too short a wait is refused rather than turned into a spinning loop.
  {
    script: "p2p/peer.ts",
    args: ["127.0.0.1", "9000", "--dir", ".", "--interval", "0.001"],
    message: /^error: --interval must be at least 0\.1 s, got "0\.001"$/,
    permissions: [NARROW_NET],
  },
  {
    script: "p2p/tracker.ts",
    args: ["--sweep-interval", "0.0000001"],
    message: /^error: --sweep-interval must be at least 0\.001 s, got "0\.0000001"$/,
    permissions: [NARROW_NET],
  },
  // A negative positional (the course's `tracker.ts HOST PORT`) is no unknown option.
  {
    script: "p2p/tracker.ts",
    args: ["127.0.0.1", "-1"],
    message: /^error: -1 is not a valid value here: negative numbers are not allowed$/,
    permissions: [NARROW_NET],
  },
  {
    script: "p2p/tracker.ts",
    args: ["--http-port", "-1"],
    message: /^error: --http-port must be a whole number from 0 to 65535, got "-1"$/,
    permissions: [NARROW_NET],
  },
  {
    script: "proxy_client.ts",
    args: ["--count", "99999999999"],
    message: /^error: --count must be a whole number from 1 to 10000, got "99999999999"$/,
    permissions: [NARROW_NET],
  },
  // A bad port inside HOST:PORT is blamed on the port, not on the whole argument.
  {
    script: "proxy_server.ts",
    args: ["--upstream", "127.0.0.1:0"],
    message:
      /^error: --upstream: the port must be a whole number from 1 to 65535, got "0" in "127\.0\.0\.1:0"$/,
    permissions: [NARROW_NET],
  },
  {
    script: "p2p/peer.ts",
    args: ["--dir", "DIR", "--tracker", "host:"],
    message: /^error: --tracker: the port must be .*, got "" in "host:"$/,
    permissions: PEER_PERMISSIONS,
  },
  {
    script: "p2p/peer.ts",
    args: ["--dir", "DIR", "--tracker", ":9000"],
    message: /^error: --tracker must look like HOST:PORT, got ":9000" \(the host is missing\)$/,
    permissions: PEER_PERMISSIONS,
  },
  // An address given with a port where only the address belongs.
  {
    // Passes once lib/server_cli.ts checks --host with parseHost().
    script: "echo_server.ts",
    args: ["--host", "127.0.0.1:9000"],
    message:
      /^error: --host takes an address without a port, got "127\.0\.0\.1:9000"; give the port with --port$/,
    permissions: [NARROW_NET],
  },
  {
    script: "p2p/tracker.ts",
    args: ["--host", "127.0.0.1:9000"],
    message:
      /^error: --host takes an address without a port, got "127\.0\.0\.1:9000"; give the port with --port$/,
    permissions: [NARROW_NET],
  },
  {
    script: "p2p/tracker.ts",
    args: ["127.0.0.1:9000", "9000"],
    message: /^error: HOST takes an address without a port, .*; give the port with PORT$/,
    permissions: [NARROW_NET],
  },
  {
    script: "p2p/tracker.ts",
    args: ["", "9000"],
    message: /^error: HOST must be a host name or an IP address, got ""$/,
    permissions: [NARROW_NET],
  },
  {
    script: "p2p/peer.ts",
    args: ["--dir", "DIR", "127.0.0.1:9000", "9000"],
    message:
      /^error: TRACKER_IP takes an address without a port, .*; give the port with TRACKER_PORT$/,
    permissions: PEER_PERMISSIONS,
  },
  {
    script: "p2p/peer.ts",
    args: ["--dir", "DIR", "--host", "127.0.0.1:9000"],
    message: /^error: --host takes an address without a port/,
    permissions: PEER_PERMISSIONS,
  },
  {
    script: "client.ts",
    args: ["--host", "", "--port", "1"],
    message: /^error: --host must be a host name or an IP address, got ""$/,
    permissions: [NARROW_NET],
  },
  // An empty folder name is a usage slip, not a stack trace from Deno.stat().
  {
    script: "p2p/peer.ts",
    args: ["--dir", ""],
    message: /^error: --dir must name a folder, got ""$/,
    permissions: PEER_PERMISSIONS,
  },
  {
    script: "p2p/peer.ts",
    args: ["--dir", "  "],
    message: /^error: --dir must name a folder, got " {2}"$/,
    permissions: PEER_PERMISSIONS,
  },
];

for (const { script, args, message, permissions } of BAD_VALUES) {
  const shown = args.map((arg) => arg === "" || /\s/.test(arg) ? JSON.stringify(arg) : arg);
  Deno.test(`${script} ${shown.join(" ")} is refused in one line naming the flag, exit 2`, async () => {
    await using dir = await tempFolder();
    const run = await runScript(script, args.map((arg) => arg === "DIR" ? dir.path : arg), {
      permissions,
    });
    assertOneLine(run, 2, message, `${script} ${shown.join(" ")}`);
    assert.equal(run.stdout.length, 0, "nothing started");
  });
}

Deno.test("p2p/peer.ts: a --dir that is missing or not a folder is one line, exit 1", async () => {
  await using dir = await tempFolder();
  const file = `${dir.path}/file.txt`;
  await Deno.writeTextFile(file, "not a folder\n");
  const missing = await runScript("p2p/peer.ts", ["--dir", `${dir.path}/nope`], {
    permissions: PEER_PERMISSIONS,
  });
  assertOneLine(missing, 1, /^error: --dir \S+\/nope: no such folder$/, "missing folder");
  const notFolder = await runScript("p2p/peer.ts", ["--dir", file], {
    permissions: PEER_PERMISSIONS,
  });
  assertOneLine(notFolder, 1, /^error: --dir \S+\/file\.txt is not a folder$/, "a file");
});

Deno.test("parseSeconds() takes plain decimals up to MAX_TIMER_SECONDS, which still fits a timer", () => {
  // The bound is what setTimeout can hold: one second more would wrap around.
  assert.ok(MAX_TIMER_SECONDS * 1000 <= 2 ** 31 - 1);
  assert.ok((MAX_TIMER_SECONDS + 1) * 1000 > 2 ** 31 - 1);
  assert.equal(parseSeconds("0.5", "--timeout"), 0.5);
  assert.equal(parseSeconds(".25", "--timeout"), 0.25);
  assert.equal(parseSeconds(String(MAX_TIMER_SECONDS), "--timeout"), MAX_TIMER_SECONDS);
  for (
    const text of [
      "3000000",
      String(MAX_TIMER_SECONDS + 1),
      "2147483.5",
      "0",
      "-1",
      "abc",
      "",
      " 5",
      "1e3",
      "0x10",
      "Infinity",
    ]
  ) {
    assert.throws(
      () => parseSeconds(text, "--interval"),
      (err) =>
        err instanceof UsageError &&
        err.message ===
          `--interval must be a positive number of seconds up to 2147483 (about 24 days), got "${text}"`,
      text,
    );
  }
});

Deno.test("parseHost() takes names and IPv4/IPv6 literals, and refuses ports, blanks and junk", () => {
  for (
    const [text, want] of [
      ["localhost", "localhost"],
      ["www.google.com", "www.google.com"],
      ["127.0.0.1", "127.0.0.1"],
      ["0.0.0.0", "0.0.0.0"],
      ["::", "::"],
      ["::1", "::1"],
      ["[::1]", "::1"],
      ["fe80::1", "fe80::1"],
      ["[fe80::1]", "fe80::1"],
      ["::ffff:192.0.2.1", "::ffff:192.0.2.1"],
    ]
  ) {
    assert.equal(parseHost(text, "--host"), want, text);
  }
  const refusals: [string, RegExp][] = [
    ["", /^--host must be a host name or an IP address, got ""$/],
    [" ", /^--host must be a host name or an IP address, got " "$/],
    ["a b", /must be a host name or an IP address/],
    ["http://example.org", /must be a host name or an IP address/],
    ["8000", /must be a host name or an IP address/],
    ["300.1.1.1", /must be a host name or an IP address/],
    ["[example.org]", /^--host: the address in brackets must be an IPv6 address/],
    [
      "127.0.0.1:9000",
      /^--host takes an address without a port, got "127\.0\.0\.1:9000"; give the port with --port$/,
    ],
    ["[::1]:9000", /^--host takes an address without a port/],
    ["localhost:", /^--host takes an address without a port/],
  ];
  for (const [text, message] of refusals) {
    assert.throws(
      () => parseHost(text, "--host"),
      (err) => err instanceof UsageError && message.test(err.message),
      JSON.stringify(text),
    );
  }
  assert.throws(() => parseHost("h:1", "HOST", "PORT"), /give the port with PORT$/);
});

Deno.test("parseHostPort() blames the part that is wrong and quotes the whole argument", () => {
  assert.deepEqual(parseHostPort("127.0.0.1:9000", "--tracker"), {
    hostname: "127.0.0.1",
    port: 9000,
  });
  assert.deepEqual(parseHostPort("[::1]:9000", "--tracker"), { hostname: "::1", port: 9000 });
  assert.deepEqual(parseHostPort("example.org", "--upstream", 80), {
    hostname: "example.org",
    port: 80,
  });
  const refusals: [string, RegExp][] = [
    [
      "127.0.0.1:0",
      /^--upstream: the port must be a whole number from 1 to 65535, got "0" in "127\.0\.0\.1:0"$/,
    ],
    ["host:", /^--upstream: the port must be .*, got "" in "host:"$/],
    ["host:70000", /^--upstream: the port must be .*, got "70000" in "host:70000"$/],
    [":9000", /^--upstream must look like HOST:PORT, got ":9000" \(the host is missing\)$/],
    ["nowhere", /^--upstream must look like HOST:PORT, got "nowhere"$/],
    ["::1:9000", /^--upstream must look like HOST:PORT \(an IPv6 address goes in brackets/],
    [
      "a b:80",
      /^--upstream: the host must be a host name or an IP address, got "a b" in "a b:80"$/,
    ],
    ["[example.org]:80", /^--upstream: the address in brackets must be an IPv6 address/],
  ];
  for (const [text, message] of refusals) {
    assert.throws(
      () => parseHostPort(text, "--upstream"),
      (err) => err instanceof UsageError && message.test(err.message),
      text,
    );
  }
});

Deno.test("parseCount() names its whole range, the upper end too", () => {
  assert.equal(parseCount("10", "--count", 1, 10), 10);
  assert.throws(
    () => parseCount("11", "--count", 1, 10),
    /^UsageError: --count must be a whole number from 1 to 10, got "11"$/,
  );
  assert.throws(() => parseCount("99999999999", "--workers"), /from 1 to 999999999, got "9+"$/);
});

Deno.test("parseCli() hands a negative number to a value flag, and says plainly what else to do", () => {
  const options = {
    port: { type: "string", short: "p" },
    message: { type: "string" },
    quiet: { type: "boolean" },
  } as const;
  assert.deepEqual(parseCli(["--port", "-1"], "usage", options).values.port, "-1");
  assert.deepEqual(parseCli(["-p", "-0.5"], "usage", options).values.port, "-0.5");
  assert.deepEqual({ ...parseCli(["--message", "-3", "--quiet"], "usage", options).values }, {
    message: "-3",
    quiet: true,
  });
  // After "--" nothing is a flag, so nothing is joined.
  assert.deepEqual(
    parseCli(["--port", "1", "--", "--port", "-1"], "usage", options, true).positionals,
    ["--port", "-1"],
  );
  // A value that starts with "-" but is no number: one line with the way out.
  assert.throws(
    () => parseCli(["--message", "-x"], "usage", options),
    (err) =>
      err instanceof UsageError &&
      err.message ===
        `--message needs a value; to give one that starts with "-", write --message=VALUE`,
  );
  assert.throws(
    () => parseCli(["-p", "-x"], "usage", options),
    (err) =>
      err instanceof UsageError && /^-p needs a value; .* write --port=VALUE$/.test(err.message),
  );
});
