/**
 * The benchmark's P2P part: it runs `bench/p2p_transfer.ts` (two peers, one
 * large file and many small ones, next to a plain socket copy) and
 * `bench/p2p_tracker_load.ts` (many simulated peers against one tracker) and
 * `bench/p2p_big.ts` (a big folder: 100,000 files with 100-character names)
 * and `bench/p2p_badnet.ts` (400 small files over 100 ms and 5% loss each
 * way) and `bench/p2p_propagation.ts` (how fast an edit reaches another
 * peer, and whether the status page is live) and `bench/p2p_resume.ts`
 * (downloads that stop part-way and continue), each in its own process, and
 * folds the JSON they print into the report.
 *
 * Those scripts print one JSON object on stdout (the last line that starts
 * with `{`, or the whole output). Every numeric field is shown in the table,
 * and the figures the issue sets goals for (the transfer's ratio to the
 * plain copy and its peers' peak memory, the tracker's p99 latency) become
 * targets next to the other parts'. With `--quick` they get small sizes.
 *
 * @module
 */

import { errorMessage } from "../lib/cli.ts";
import { formatNumber, numberAt, type Target, target, textTable } from "./report.ts";
import { ROOT, runTool } from "./servers.ts";

/** The P2P scripts, by the key their JSON gets in results.json. */
export const P2P_SCRIPTS = {
  transfer: "bench/p2p_transfer.ts",
  trackerLoad: "bench/p2p_tracker_load.ts",
  bigFolder: "bench/p2p_big.ts",
  badNet: "bench/p2p_badnet.ts",
  propagation: "bench/p2p_propagation.ts",
  resume: "bench/p2p_resume.ts",
} as const;

/** Small sizes for `--quick`: a smoke test, not a measurement. */
const QUICK_ARGS: Record<string, string[]> = {
  [P2P_SCRIPTS.transfer]: ["--large-mib", "16", "--files", "50"],
  [P2P_SCRIPTS.trackerLoad]: ["--peers", "50", "--interval", "1", "--duration", "2"],
  [P2P_SCRIPTS.bigFolder]: ["--files", "5000", "--interval", "1"],
  [P2P_SCRIPTS.badNet]: ["--quick"],
  [P2P_SCRIPTS.propagation]: ["--quick"],
  [P2P_SCRIPTS.resume]: ["--quick"],
};

/** One P2P script's outcome. */
export interface P2pScriptResult {
  script: string;
  /** False while the script does not exist yet, or when it failed. */
  available: boolean;
  /** Why there are no figures, when there are none. */
  note?: string;
  /** What it printed, as parsed JSON. */
  data?: Record<string, unknown>;
}

/** The P2P part of results.json. */
export interface P2pPart {
  date: string;
  transfer: P2pScriptResult;
  trackerLoad: P2pScriptResult;
  /** The big folder (absent in results written before it existed). */
  bigFolder?: P2pScriptResult;
  /** Small files over a slow, lossy link (absent in results written before it existed). */
  badNet?: P2pScriptResult;
  /** Edits timed to another peer, and the status page (absent in older results). */
  propagation?: P2pScriptResult;
  /** Downloads that resume (absent in older results). */
  resume?: P2pScriptResult;
  targets: Target[];
}

/** Permissions the P2P scripts get: the benchmark's own. */
const PERMISSIONS = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-run",
  "--allow-env",
  "--allow-sys",
];

async function runScript(script: string, quick: boolean): Promise<P2pScriptResult> {
  try {
    Deno.statSync(`${ROOT}${script}`);
  } catch {
    return { script, available: false, note: "not yet available" };
  }
  try {
    const run = await runTool([
      Deno.execPath(),
      "run",
      ...PERMISSIONS,
      script,
      ...(quick ? QUICK_ARGS[script] ?? [] : []),
    ]);
    if (run.code !== 0) {
      // Progress goes to stderr first; the reason for failing comes last.
      const why = (run.stderr || run.stdout).trim().split("\n").pop();
      return { script, available: false, note: `exited ${run.code}: ${why}` };
    }
    return { script, available: true, data: parseJson(run.stdout) };
  } catch (err) {
    return { script, available: false, note: errorMessage(err) };
  }
}

/** The whole output as JSON, or else its last line that looks like a JSON object. */
function parseJson(out: string): Record<string, unknown> {
  try {
    return JSON.parse(out);
  } catch {
    const last = out.trim().split("\n").reverse().find((l) => l.trim().startsWith("{"));
    if (!last) throw new Error("printed no JSON object");
    return JSON.parse(last);
  }
}

/** The goals of issue 4, read from the figures the two scripts printed. */
function p2pTargets(transfer: P2pScriptResult, trackerLoad: P2pScriptResult): Target[] {
  const targets: Target[] = [];
  if (transfer.available) {
    const d = transfer.data;
    targets.push(
      target(
        "p2p",
        "P2P large file MB/s vs plain socket copy",
        numberAt(d, "large.ratio"),
        numberAt(d, "targets.ratio") ?? 0.5,
      ),
    );
    const peaks = [
      "large.senderPeakRssMiB",
      "large.receiverPeakRssMiB",
      "small.senderPeakRssMiB",
      "small.receiverPeakRssMiB",
    ].map((path) => numberAt(d, path)).filter((n) => n !== null);
    targets.push(
      target(
        "p2p",
        "P2P peak RSS per peer",
        peaks.length ? Math.max(...peaks) : null,
        numberAt(d, "targets.peakRssMiB") ?? 100,
        "MiB",
        false,
        true,
      ),
      target(
        "p2p",
        "P2P small files/s vs plain socket copy",
        numberAt(d, "small.ratio"),
        numberAt(d, "targets.ratio") ?? 0.5,
        "x",
        true,
      ),
    );
  }
  if (trackerLoad.available) {
    const d = trackerLoad.data;
    targets.push(
      target(
        "p2p",
        "tracker p99 directory latency",
        numberAt(d, "p99Ms"),
        numberAt(d, "targetP99Ms") ?? 50,
        "ms",
        false,
        true,
      ),
    );
  }
  return targets;
}

/** Runs both P2P scripts (when they exist) and collects their figures. */
export async function runP2pPart(quick: boolean, say: (line: string) => void): Promise<P2pPart> {
  const transfer = await runScript(P2P_SCRIPTS.transfer, quick);
  say(`p2p: transfer ${transfer.available ? "done" : transfer.note}`);
  const trackerLoad = await runScript(P2P_SCRIPTS.trackerLoad, quick);
  say(`p2p: tracker load ${trackerLoad.available ? "done" : trackerLoad.note}`);
  const bigFolder = await runScript(P2P_SCRIPTS.bigFolder, quick);
  say(`p2p: big folder ${bigFolder.available ? "done" : bigFolder.note}`);
  const badNet = await runScript(P2P_SCRIPTS.badNet, quick);
  say(`p2p: bad network ${badNet.available ? "done" : badNet.note}`);
  const propagation = await runScript(P2P_SCRIPTS.propagation, quick);
  say(`p2p: propagation ${propagation.available ? "done" : propagation.note}`);
  const resume = await runScript(P2P_SCRIPTS.resume, quick);
  say(`p2p: resume ${resume.available ? "done" : resume.note}`);
  return {
    date: new Date().toISOString(),
    transfer,
    trackerLoad,
    bigFolder,
    badNet,
    propagation,
    resume,
    targets: [
      ...p2pTargets(transfer, trackerLoad),
      ...issue10TransferTargets(transfer),
      ...propagationTargets(propagation),
      ...resumeTargets(resume),
      ...badNetTargets(badNet),
    ],
  };
}

/** Issue 10's goals for the transfer's two ratios (issue 4 asked 0.5x of both). */
function issue10TransferTargets(transfer: P2pScriptResult): Target[] {
  if (!transfer.available) return [];
  const d = transfer.data;
  const large = numberAt(d, "large.bytes");
  const files = numberAt(d, "small.files");
  return [
    target(
      "p2p",
      `P2P ${large ? formatNumber(large / 1024 / 1024) + " MiB" : "large file"} vs plain copy ` +
        "(issue 10)",
      numberAt(d, "large.ratio"),
      0.7,
    ),
    target(
      "p2p",
      `P2P ${files ? formatNumber(files) : "many"} small files/s vs plain copy (issue 10)`,
      numberAt(d, "small.ratio"),
      0.6,
    ),
  ];
}

/** Issue 10's propagation goal (median edit), and its status page row (live or not). */
function propagationTargets(propagation: P2pScriptResult): Target[] {
  if (!propagation.available) return [];
  const d = propagation.data;
  const edits = numberAt(d, "edits");
  const max = numberAt(d, "maxMs");
  const status = typeof d?.statusPage === "string" ? d.statusPage : "not checked";
  const live = status.startsWith("live");
  return [
    target(
      "p2p",
      `P2P edit reaches another peer, --interval ${numberAt(d, "interval") ?? "?"}: median of ` +
        `${edits ?? "?"} (max ${formatNumber(max)} ms)`,
      numberAt(d, "medianMs"),
      numberAt(d, "targets.medianMs") ?? 1000,
      "ms",
      false,
      true,
    ),
    {
      ...target("p2p", "tracker status page", live ? 1 : 0, 1),
      words: { measured: status, goal: "live (no full reloads)" },
    },
  ];
}

/** Issue 10's resume goals: what the holders sent, against what was missing. */
function resumeTargets(resume: P2pScriptResult): Target[] {
  if (!resume.available) return [];
  const d = resume.data;
  const mib = numberAt(d, "fileMiB");
  const goal = numberAt(d, "targets.sentRatio") ?? 1.05;
  return [
    target(
      "p2p",
      `P2P ${mib ?? "?"} MiB download killed at 40%, restarted: holder sent / file`,
      numberAt(d, "restart.sentRatio"),
      goal,
      "x",
      false,
      true,
    ),
    target(
      "p2p",
      `P2P ${mib ?? "?"} MiB, holder killed at 40%: second holder sent / what was missing`,
      numberAt(d, "holderGone.sentRatio"),
      goal,
      "x",
      false,
      true,
    ),
  ];
}

/** Issue 10's bad-network goal: seconds until every file arrived, labelled with the link used. */
function badNetTargets(badNet: P2pScriptResult): Target[] {
  if (!badNet.available) return [];
  const d = badNet.data;
  const files = numberAt(d, "files");
  const intact = numberAt(d, "intact");
  const via = d?.path === "namespaces" ? "namespaces" : "loopback relay, loss emulated";
  // A run that gave up reports its give-up time: over the goal, so it shows as missed.
  const partial = intact === files ? "" : `; only ${intact ?? 0} arrived intact`;
  return [
    target(
      "p2p",
      `P2P ${files ?? "?"} small files over 100 ms / 5% loss (${via}${partial})`,
      numberAt(d, "seconds"),
      numberAt(d, "targets.seconds") ?? 8,
      "s",
      false,
      true,
    ),
  ];
}

/** Every numeric leaf of a JSON value, as dotted paths (the `targets` list left out). */
function numericLeaves(value: unknown, path = ""): [string, number][] {
  if (typeof value === "number") return [[path, value]];
  if (typeof value !== "object" || value === null) return [];
  return Object.entries(value).flatMap(([key, inner]) =>
    path === "" && key === "targets" ? [] : numericLeaves(inner, path ? `${path}.${key}` : key)
  );
}

/** The P2P part as a text table: one line per figure, or "not yet available". */
export function p2pTable(part: P2pPart): string {
  const rows: string[][] = [];
  const results = [
    part.transfer,
    part.trackerLoad,
    part.bigFolder,
    part.badNet,
    part.propagation,
    part.resume,
  ];
  for (const result of results) {
    if (result === undefined) continue;
    if (!result.available) {
      rows.push([result.script, "", result.note ?? "no figures"]);
      continue;
    }
    // Which link a bad-network run took (the loopback relay only emulates loss).
    if (typeof result.data?.path === "string") {
      rows.push([result.script, "path", result.data.path]);
    }
    // Whether the tracker's status page is live (a quality, not a figure).
    if (typeof result.data?.statusPage === "string") {
      rows.push([result.script, "statusPage", result.data.statusPage]);
    }
    for (const [key, value] of numericLeaves(result.data)) {
      rows.push([result.script, key, formatNumber(value, Number.isInteger(value) ? 0 : 2)]);
    }
  }
  return `P2P (figures as the P2P scripts report them)\n${
    textTable(["script", "figure", "value"], rows, "llr")
  }`;
}
