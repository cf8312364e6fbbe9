/**
 * Draws the benchmark's chart as plain SVG (no library): horizontal bars of
 * ratios, one group per figure, every server against the same reference
 * (Node `net` for the echo part, the Node relay for the proxy part, its own
 * rate without the reset storm for the hostile part), then the targets as a
 * share of their goal. It carries its own background and
 * switches colours with `prefers-color-scheme`, so it reads on GitHub's light
 * and dark themes alike.
 *
 * @example
 * ```ts
 * import { drawChart } from "./chart.ts";
 * const results = JSON.parse(Deno.readTextFileSync("bench/results.json"));
 * Deno.writeTextFileSync("bench/chart.svg", drawChart(results));
 * ```
 * @module
 */

import type { Results } from "./bench.ts";
import { PROXY_CASES } from "./proxy_part.ts";
import type { UdpRow } from "./udp_part.ts";
import {
  formatGoal,
  formatMeasured,
  formatNumber,
  formatRatio,
  numberAt,
  ratio,
} from "./report.ts";

/** One bar: a ratio, the words beside it, and whether it is one of ours. */
interface Bar {
  label: string;
  value: number | null;
  text: string;
  kind: "ours" | "reference" | "missed";
  /** Where a goal tick goes, on the same scale as `value`. */
  tick?: number;
}

/** A titled group of bars sharing one scale, with a dashed line at 1. */
interface Group {
  title: string;
  oneLabel: string;
  bars: Bar[];
  /** Longer bars are cut at this value (their figures still say how long they are). */
  cap?: number;
}

const WIDTH = 980; // px, the whole drawing
const LABEL_WIDTH = 250; // px, left column with server names
const TEXT_PX_PER_CHAR = 6.5; // px, rough width of one 12px character, to keep figures on the page
const BAR_AREA = 400; // px, the longest bar (its figures need room to its right)
const ROW = 22; // px per bar
const BAR = 14; // px, bar thickness
const GROUP_GAP = 40; // px above each group's bars (its title lives there)
const MARGIN = 16; // px around everything
const TARGET_CAP = 3; // target bars are cut at 3 times their goal

function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function echoGroups(results: Results): Group[] {
  const echo = results.echo;
  if (!echo || echo.rows.length === 0) return [];
  const node = echo.rows.find((r) => r.id === "node");
  const group = (title: string, key: "connsPerSec" | "mibPerSec", unit: string): Group => ({
    title,
    oneLabel: "Node net = 1",
    bars: echo.rows.map((r) => {
      const value = ratio(r[key], node?.[key]);
      return {
        label: r.label,
        value,
        text: `${formatRatio(value)}  (${formatNumber(r[key])} ${unit})`,
        kind: r.ours ? "ours" : "reference",
      };
    }),
  });
  return [
    group(
      `Echo: connections/s (${formatNumber(echo.settings.conns)} one after another)`,
      "connsPerSec",
      "conn/s",
    ),
    group(
      `Echo: bulk MiB/s (${
        formatNumber(echo.settings.bulkBytes / 1024 / 1024)
      } MiB on one connection)`,
      "mibPerSec",
      "MiB/s",
    ),
  ];
}

function proxyGroups(results: Results): Group[] {
  const proxy = results.proxy;
  if (!proxy || proxy.rows.length === 0) return [];
  const node = proxy.rows.find((r) => r.id === "node");
  const shown = PROXY_CASES.filter((c) => c.id !== "10m_close");
  return shown.map((c) => {
    const key = c.path === "/1k" ? "reqPerSec" : "mibPerSec";
    const unit = c.path === "/1k" ? "req/s" : "MiB/s";
    return {
      title: `Proxy: ${unit}, ${c.path === "/1k" ? "1 KiB" : "10 MiB"} file, ${
        c.close ? "Connection: close" : "keep-alive"
      }`,
      oneLabel: "Node relay = 1",
      bars: proxy.rows.map((r) => {
        const figure = r.cases[c.id]?.[key] ?? null;
        const value = ratio(figure, node?.cases[c.id]?.[key]);
        return {
          label: r.label,
          value,
          text: value === null && r.errors.length
            ? r.errors[0]
            : `${formatRatio(value)}  (${formatNumber(figure)} ${unit})`,
          kind: r.ours ? "ours" : "reference",
        };
      }),
    };
  });
}

function p2pGroups(results: Results): Group[] {
  const transfer = results.p2p?.transfer;
  if (!transfer?.available) return [];
  const d = transfer.data;
  const bar = (label: string, prefix: string, unit: string, digits: number): Bar => {
    const p2p = numberAt(d, `${prefix}.p2p${unit}`);
    const copy = numberAt(d, `${prefix}.copy${unit}`);
    const value = numberAt(d, `${prefix}.ratio`) ?? ratio(p2p, copy);
    const shown = unit === "MBps" ? "MB/s" : "files/s";
    return {
      label,
      value,
      text: `${formatRatio(value)}  (${formatNumber(p2p, digits)} vs ${
        formatNumber(copy, digits)
      } ${shown})`,
      kind: "ours",
    };
  };
  const large = numberAt(d, "large.bytes");
  const files = numberAt(d, "small.files");
  return [{
    title: "P2P: two peers through the tracker, against a plain socket copy of the same bytes",
    oneLabel: "plain copy = 1",
    bars: [
      bar(
        `${large ? formatNumber(large / 1024 / 1024) + " MiB" : "large"} file`,
        "large",
        "MBps",
        0,
      ),
      bar(`${files ? formatNumber(files) : "many"} small files`, "small", "FilesPerSec", 0),
    ],
  }];
}

function hostileGroups(results: Results): Group[] {
  const hostile = results.hostile;
  if (!hostile || hostile.storm.length === 0) return [];
  const s = hostile.settings;
  return [{
    title: `Hostile: good clients served beside ${
      formatNumber(s.resetRate)
    } resets/s, as a share of the rate alone`,
    oneLabel: "alone = 1",
    bars: hostile.storm.map((r) => ({
      label: r.label,
      value: r.ratio,
      text: r.ratio === null && r.errors.length
        ? r.errors[0]
        : `${formatRatio(r.ratio)}  (${formatNumber(r.storm?.connsPerSec)} vs ${
          formatNumber(r.alone?.connsPerSec)
        } conn/s)`,
      kind: r.ours ? "ours" : "reference",
    })),
  }];
}

function udpGroups(results: Results): Group[] {
  const udp = results.udp;
  if (!udp || udp.rows.length === 0) return [];
  const node = udp.rows.find((r) => r.id === "node");
  const group = (title: string, pick: (r: UdpRow) => number | null): Group => ({
    title,
    oneLabel: "Node dgram = 1",
    bars: udp.rows.map((r) => {
      const value = ratio(pick(r), node ? pick(node) : null);
      return {
        label: r.label,
        value,
        text: `${formatRatio(value)}  (${formatNumber(pick(r))}/s)`,
        kind: r.ours ? "ours" : "reference",
      };
    }),
  });
  const s = udp.settings;
  return [
    group(`UDP: round trips/s (${s.rttSize} B, one at a time)`, (r) => r.rtt.perSec),
    group(
      `UDP: datagrams/s (${s.window} of ${s.windowSize} B in flight)`,
      (r) => r.datagramsPerSec,
    ),
  ];
}

function targetGroup(results: Results): Group[] {
  const targets = [
    ...(results.echo?.targets ?? []),
    ...(results.proxy?.targets ?? []),
    ...(results.p2p?.targets ?? []),
    ...(results.hostile?.targets ?? []),
    ...(results.udp?.targets ?? []),
  ].filter((t) => !t.informational);
  if (targets.length === 0) return [];
  return [{
    title: "Targets: measured as a share of the goal (past the line = reached)",
    oneLabel: "goal",
    cap: TARGET_CAP,
    bars: targets.map((t) => {
      // For an upper bound (latency, memory) the share is goal / measured, so longer is better too.
      const share = t.measured === null
        ? null
        : t.atMost
        ? ratio(t.goal, t.measured)
        : ratio(t.measured, t.goal);
      const verdict = t.met === null ? "not measured" : t.met ? "reached" : "missed";
      return {
        label: t.what,
        value: share,
        text: `${formatMeasured(t)} (goal ${formatGoal(t)}) ${verdict}`,
        kind: t.met === false ? "missed" : "ours",
      };
    }),
  }];
}

/** The whole chart for `results`, as SVG text. */
export function drawChart(results: Results): string {
  const groups = [
    ...echoGroups(results),
    ...proxyGroups(results),
    ...p2pGroups(results),
    ...hostileGroups(results),
    ...udpGroups(results),
    ...targetGroup(results),
  ];
  const parts: string[] = [];
  let y = MARGIN + 24;
  parts.push(
    `<text class="title" x="${MARGIN}" y="${y}">Socket lab benchmark: our servers (blue) ` +
      `against Node, Python fork and socat (grey)</text>`,
  );
  y += 10;
  for (const group of groups) {
    y += GROUP_GAP;
    parts.push(`<text class="group" x="${MARGIN}" y="${y - 12}">${escapeXml(group.title)}</text>`);
    const cap = group.cap ?? Infinity;
    const top = Math.min(cap, Math.max(1.1, ...group.bars.map((b) => b.value ?? 0))) * 1.05;
    const scale = BAR_AREA / top;
    const x0 = MARGIN + LABEL_WIDTH;
    const xOne = x0 + scale;
    const height = group.bars.length * ROW;
    // The reference line first, so bars and figures are drawn over it.
    parts.push(
      `<line class="one" x1="${xOne.toFixed(1)}" y1="${y - 4}" x2="${xOne.toFixed(1)}" y2="${
        y + height - 4
      }"/>`,
      `<text class="note" x="${xOne.toFixed(1)}" y="${y + height + 8}" text-anchor="middle">${
        escapeXml(group.oneLabel)
      }</text>`,
    );
    for (const [i, bar] of group.bars.entries()) {
      const rowY = y + i * ROW;
      parts.push(
        `<text class="label" x="${x0 - 8}" y="${rowY + BAR - 2}" text-anchor="end">${
          escapeXml(bar.label)
        }</text>`,
      );
      const w = bar.value === null ? 0 : Math.max(1, Math.min(cap, bar.value) * scale);
      parts.push(
        `<rect class="${bar.kind}" x="${x0}" y="${rowY}" width="${
          w.toFixed(1)
        }" height="${BAR}" rx="2"/>`,
      );
      // A figure that would run past the right edge goes inside the end of its bar.
      const inside = x0 + w + 6 + bar.text.length * TEXT_PX_PER_CHAR > WIDTH - MARGIN;
      const textX = inside ? x0 + w - 6 : x0 + w + 6;
      parts.push(
        `<text class="${inside ? "value inside" : "value"}" x="${textX.toFixed(1)}" y="${
          rowY + BAR - 2
        }"${inside ? ' text-anchor="end"' : ""}>${escapeXml(bar.text)}</text>`,
      );
    }
    y += height;
  }
  y += 36;
  const v = results.versions;
  const m = results.machine;
  const footer = `${String(results.date).slice(0, 10)} · ${m.cores} cores ${m.cpu}, ` +
    `${m.memoryGiB} GiB (shared machine) · deno ${v.deno} · node ${v.node} · ${v.python} · ` +
    `${String(v.socat).replace(/ on .*/, "")} · ${v.wrk?.split(" [")[0]}`;
  parts.push(`<text class="note" x="${MARGIN}" y="${y}">${escapeXml(footer)}</text>`);
  const height = y + MARGIN;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" ` +
    `viewBox="0 0 ${WIDTH} ${height}" role="img" aria-label="Benchmark ratios">
<style>
  .bg { fill: #ffffff; stroke: #d0d7de; }
  text { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; fill: #1f2328; }
  .title { font-size: 16px; font-weight: 600; }
  .group { font-size: 14px; font-weight: 600; }
  .label, .value { font-size: 12px; }
  .value { paint-order: stroke; stroke: #ffffff; stroke-width: 3px; stroke-linejoin: round; }
  .note { font-size: 11px; fill: #59636e; }
  text.inside { fill: #ffffff; stroke: none; }
  .ours { fill: #0969da; }
  .reference { fill: #8c959f; }
  .missed { fill: #bc4c00; }
  .one { stroke: #59636e; stroke-dasharray: 4 3; }
  @media (prefers-color-scheme: dark) {
    .bg { fill: #0d1117; stroke: #30363d; }
    text { fill: #e6edf3; }
    .value { stroke: #0d1117; }
    text.inside { fill: #ffffff; stroke: none; }
    .note { fill: #9198a1; }
    .ours { fill: #4493f8; }
    .reference { fill: #6e7681; }
    .missed { fill: #db6d28; }
    .one { stroke: #9198a1; }
  }
</style>
<rect class="bg" x="0.5" y="0.5" width="${WIDTH - 1}" height="${height - 1}" rx="6"/>
${parts.join("\n")}
</svg>
`;
}
