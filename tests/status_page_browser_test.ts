/**
 * The tracker's status page in a real browser: a tracker with two peers,
 * opened in headless Chromium (Debian's `chromium`), must show both peers
 * and their files. A screenshot is saved to `tests/tmp/status_page.png`.
 * Skips, saying why, where Chromium is missing or cannot start.
 */

import assert from "node:assert/strict";
import { haveCommand, projectPath } from "./helpers.ts";
import {
  putFile,
  startPeerScript,
  startTrackerScript,
  tempFolder,
  waitUntil,
} from "./p2p_helpers.ts";

/** Flags a sandboxed root session needs; background networking is refused on this network. */
const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--hide-scrollbars",
];

async function chromium(args: string[]): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  await using profile = await tempFolder("chromium_profile_");
  const out = await new Deno.Command("chromium", {
    args: [...CHROMIUM_FLAGS, `--user-data-dir=${profile.path}`, ...args],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { ok: out.success, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

/** Why the browser test cannot run here, or `null` when Chromium starts. */
const cannotRun = !haveCommand("chromium")
  ? "chromium is not installed (Debian package chromium)"
  : await chromium(["--dump-dom", "about:blank"]).then((probe) =>
    probe.ok ? null : `chromium cannot start: ${probe.stderr.trim().split("\n")[0]}`
  );

Deno.test({
  name: `the tracker's status page shows live peers and their files in headless Chromium${
    cannotRun ? ` (skipped: ${cannotRun})` : ""
  }`,
  ignore: cannotRun !== null,
  async fn(t) {
    await using dirA = await tempFolder();
    await using dirB = await tempFolder();
    await putFile(
      dirA.path,
      "notes-from-a.txt",
      new TextEncoder().encode("alpha\n"),
      1_700_000_000,
    );
    await putFile(dirB.path, "photo-from-b.bin", new Uint8Array(5000).fill(7), 1_700_000_100);
    await using tracker = await startTrackerScript();
    const statusLine = await tracker.waitFor(/status page on http:\/\/\S+\//);
    const url = /status page on (http:\/\/\S+\/)/.exec(statusLine)![1];
    await using peerA = await startPeerScript(dirA.path, tracker.port);
    await using peerB = await startPeerScript(dirB.path, tracker.port, { mode: "worker" });
    await waitUntil(
      async () => {
        const stats = await (await fetch(`${url}stats`)).json();
        return stats.peers?.length === 2 && Object.keys(stats.directory ?? {}).length === 2;
      },
      15_000,
      "two peers with two files at the tracker",
    );

    await t.step("the page lists both peers and both files", async () => {
      const page = await chromium(["--dump-dom", url]);
      assert.ok(page.ok, page.stderr);
      assert.match(page.stdout, /notes-from-a\.txt/);
      assert.match(page.stdout, /photo-from-b\.bin/);
      for (const peer of [peerA, peerB]) {
        const port = /listening on \S+:(\d+)/.exec(
          peer.lines.find((l) => /listening on/.test(l))!,
        )![1];
        assert.match(page.stdout, new RegExp(`127\\.0\\.0\\.1:${port}`));
      }
    });

    await t.step("a screenshot is saved", async () => {
      await Deno.mkdir(projectPath("tests/tmp"), { recursive: true });
      const file = projectPath("tests/tmp/status_page.png");
      const shot = await chromium(["--window-size=1200,800", `--screenshot=${file}`, url]);
      assert.ok(shot.ok, shot.stderr);
      const png = await Deno.readFile(file);
      assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]); // "PNG"
      assert.ok(png.length > 5000, `screenshot is only ${png.length} bytes`);
    });
  },
});
