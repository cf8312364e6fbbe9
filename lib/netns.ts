/**
 * Linux network namespaces for the lab's "two hosts on one machine" runs:
 * run `ip`, check that namespaces can be made here, wire a host to a
 * middle namespace with a veth pair, start a script inside a namespace,
 * and remove namespaces again (also those a killed run left behind).
 * Needs Linux, root and `ip` (iproute2); callers ask
 * {@linkcode whyNoNetns} first and fall back to loopback otherwise.
 *
 * Used by `lib/tcp_vs_udp.ts`, `bench/p2p_badnet.ts` and
 * `tests/p2p_netns_test.ts`.
 *
 * @module
 */

import { errorMessage } from "./cli.ts";
import { haveCommand, projectPath, type Script, startCommand } from "./scripts.ts";

/**
 * Runs `ip` with `args` and returns what it printed; throws with its
 * stderr when it fails.
 *
 * @example
 * ```ts
 * import { ip } from "./netns.ts";
 * console.log(ip("netns", "list"));
 * ```
 */
export function ip(...args: string[]): string {
  const out = new Deno.Command("ip", { args, stdout: "piped", stderr: "piped" }).outputSync();
  if (!out.success) {
    throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/**
 * Why namespaces cannot be made here, or `null` when they can: it needs
 * Linux, root, `ip`, each command in `needs` (name to the reason given when
 * it is missing), and leave to add one (tried as `PREFIX-PID-probe`).
 *
 * @example
 * ```ts
 * import { whyNoNetns } from "./netns.ts";
 * console.log(whyNoNetns("demo") ?? "network namespaces work here");
 * ```
 */
export function whyNoNetns(prefix: string, needs: Record<string, string> = {}): string | null {
  if (Deno.build.os !== "linux") return "network namespaces need Linux";
  // Ask for the uid only when allowed: otherwise Deno would prompt. The probe below decides then.
  if (Deno.permissions.querySync({ name: "sys", kind: "uid" }).state === "granted") {
    if (Deno.uid() !== 0) return "creating network namespaces needs root";
  }
  if (!haveCommand("ip")) return "the ip command (iproute2) is missing";
  for (const [command, missing] of Object.entries(needs)) {
    if (!haveCommand(command)) return missing;
  }
  const probe = `${prefix}-${Deno.pid}-probe`;
  try {
    ip("netns", "add", probe);
    ip("netns", "del", probe);
  } catch (err) {
    return `cannot create network namespaces here (${errorMessage(err)})`;
  }
  return null;
}

/**
 * Kills whatever still runs in namespace `ns`, then removes it (its
 * interfaces go with it). Quiet when it was never made or is gone already.
 */
export function removeNamespace(ns: string): void {
  try {
    for (const pid of ip("netns", "pids", ns).split(/\s+/).filter(Boolean)) {
      try {
        Deno.kill(Number(pid), "SIGKILL");
      } catch {
        // It exited meanwhile.
      }
    }
    ip("netns", "del", ns);
  } catch {
    // Never created, or removed already.
  }
}

/**
 * Removes namespaces a run left behind when its process was killed
 * (Ctrl-C in the middle of a lab): ours are named `PREFIX-PID-...`, and a
 * PID that no longer runs cannot come back for them. Does nothing without
 * leave to read `/proc`.
 */
export function removeStaleNamespaces(prefix: string): void {
  if (Deno.permissions.querySync({ name: "read", path: "/proc" }).state !== "granted") return;
  for (const line of ip("netns", "list").split("\n")) {
    const match = new RegExp(`^(${prefix}-(\\d+)-\\S+)`).exec(line);
    if (!match || Number(match[2]) === Deno.pid) continue;
    try {
      Deno.statSync(`/proc/${match[2]}`);
    } catch {
      removeNamespace(match[1]);
    }
  }
}

/** Where {@linkcode addVeth} puts a host's end of the wire. */
export interface VethOptions {
  /** The middle namespace (a bridge process or a bridge device lives there). */
  middle: string;
  /** The host's namespace. */
  host: string;
  /** The pair's name stem: `STEM1` in the middle, `STEM0` in the host. */
  stem: string;
  /** The host's IPv4 address; it gets a /24. */
  address: string;
  /** A bridge device in the middle namespace to attach `STEM1` to. @default {none} */
  master?: string;
}

/**
 * Joins namespace `host` to namespace `middle` with a veth pair, gives the
 * host's end `address`/24 and brings both ends and the host's loopback up.
 * Interface names are per namespace, so short fixed stems do.
 */
export function addVeth({ middle, host, stem, address, master }: VethOptions): void {
  ip(
    "-n",
    middle,
    "link",
    "add",
    `${stem}1`,
    "type",
    "veth",
    "peer",
    "name",
    `${stem}0`,
    "netns",
    host,
  );
  if (master !== undefined) ip("-n", middle, "link", "set", `${stem}1`, "master", master);
  ip("-n", middle, "link", "set", `${stem}1`, "up");
  ip("-n", host, "addr", "add", `${address}/24`, "dev", `${stem}0`);
  ip("-n", host, "link", "set", `${stem}0`, "up");
  ip("-n", host, "link", "set", "lo", "up");
}

/** Options for {@linkcode startInNamespace}, passed on to `startCommand`. */
export interface InNamespaceOptions {
  /** Wait for the script's "listening on" line. @default {true} */
  waitForListening?: boolean;
  /** Milliseconds to wait for it. @default {startCommand's} */
  timeoutMs?: number;
}

/**
 * Starts `deno run --quiet PERMISSIONS SCRIPT ARGS` inside namespace `ns`
 * (through `ip netns exec`), labelled `SCRIPT in NS`.
 */
export function startInNamespace(
  ns: string,
  permissions: string[],
  script: string,
  args: string[],
  options: InNamespaceOptions = {},
): Promise<Script> {
  const command = [Deno.execPath(), "run", "--quiet", ...permissions, script, ...args];
  return startCommand("ip", ["netns", "exec", ns, ...command], {
    ...options,
    label: `${script} in ${ns}`,
  });
}

/**
 * Starts `lib/lossy_bridge.py ARGS` (python3) inside namespace `ns`; it
 * prints a line starting `bridging ` once frames flow.
 */
export function startLossyBridge(ns: string, args: string[], timeoutMs?: number): Promise<Script> {
  return startCommand(
    "ip",
    ["netns", "exec", ns, "python3", projectPath("lib/lossy_bridge.py"), ...args],
    { waitForListening: false, label: "lossy_bridge.py", timeoutMs },
  );
}

/**
 * Adds up what `lib/lossy_bridge.py` printed as it stopped: every IPv4
 * frame it saw, and those it dropped.
 */
export function bridgeTotals(lines: readonly string[]): { packets: number; dropped: number } {
  const totals = { packets: 0, dropped: 0 };
  for (const line of lines) {
    const m = /forwarded (\d+) IPv4 frames, dropped (\d+)/.exec(line);
    if (m) {
      totals.packets += Number(m[1]) + Number(m[2]);
      totals.dropped += Number(m[2]);
    }
  }
  return totals;
}
