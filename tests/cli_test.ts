/**
 * Every script, run as a student runs it, answers `--help` with its usage
 * (exit 0) and an unknown flag with one line and the usage (exit 2), never a
 * stack trace.
 */

import assert from "node:assert/strict";
import { runScript } from "./helpers.ts";

const SCRIPTS = [
  "client.ts",
  "echo_server.ts",
  "proxy_server.ts",
  "proxy_client.ts",
  "udp_echo_server.ts",
  "udp_pinger.ts",
  "p2p/tracker.ts",
  "p2p/peer.ts",
  "lab.ts",
  "bench/bench.ts",
];

for (const script of SCRIPTS) {
  Deno.test(`${script} --help prints its usage and exits 0; an unknown flag is one line, exit 2`, async () => {
    const help = await runScript(script, ["--help"]);
    assert.equal(help.code, 0, help.stderr);
    assert.match(new TextDecoder().decode(help.stdout), /^usage: /);

    const bad = await runScript(script, ["--no-such-flag"]);
    assert.equal(bad.code, 2);
    const lines = bad.stderr.trimEnd().split("\n");
    assert.match(lines[0], /^error: Unknown option '--no-such-flag'\.?$/);
    assert.match(lines[1], /^usage: /);
    assert.doesNotMatch(bad.stderr, /^\s+at /m);
  });
}
