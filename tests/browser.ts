/**
 * Headless Chromium for the tests that need a real browser (the status page,
 * the forward proxy): the flags a sandboxed root session needs, one run of
 * the browser with a throwaway profile, and why it cannot run here.
 */

import { haveCommand } from "./helpers.ts";
import { tempFolder } from "./p2p_helpers.ts";

/** Flags a sandboxed root session needs; background networking is refused on this network. */
export const CHROMIUM_FLAGS = [
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

/** What one run of the browser printed. */
export interface ChromiumRun {
  ok: boolean;
  stdout: string;
  stderr: string;
}

/** Runs headless Chromium once with `args` and a fresh profile, for at most a minute. */
export async function runChromium(args: string[]): Promise<ChromiumRun> {
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

/** Why a browser test cannot run here, or `null` when Chromium starts. */
export async function whyNoChromium(): Promise<string | null> {
  if (!haveCommand("chromium")) return "chromium is not installed (Debian package chromium)";
  const probe = await runChromium(["--dump-dom", "about:blank"]);
  return probe.ok ? null : `chromium cannot start: ${probe.stderr.trim().split("\n")[0]}`;
}
