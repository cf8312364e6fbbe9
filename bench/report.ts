/**
 * Shared pieces of the benchmark report: the target record, number and ratio
 * formatting, and plain-text tables for the terminal.
 *
 * @example
 * ```ts
 * import { formatNumber, textTable } from "./report.ts";
 * console.log(textTable(["server", "conn/s"], [["node net", formatNumber(3665.9)]]));
 * ```
 * @module
 */

/** One goal from the issues, checked against this run's figures. */
export interface Target {
  /** Which part it belongs to: "echo", "proxy" or "p2p". */
  part: string;
  /** What is compared, in words: "async conn/s vs Node net". */
  what: string;
  /** The measured ratio (or absolute figure when `unit` is not "x"); null when not measured. */
  measured: number | null;
  /** The goal: at least this much (at most, with `atMost`). */
  goal: number;
  /** The goal is an upper bound (latency, memory). */
  atMost?: boolean;
  /** "x" for a ratio, otherwise the unit of an absolute figure. */
  unit: string;
  /** Whether the goal was reached; null when it could not be measured. */
  met: boolean | null;
  /** Only shown, not a goal from the issues (an extra view of the same comparison). */
  informational?: boolean;
  /**
   * Words to show instead of the numbers, for a goal that is a quality, not
   * a figure (the status page is "live"): `measured` is then 1 when it holds.
   */
  words?: { measured: string; goal: string };
}

/** `a / b`, or null when either is missing or `b` is not positive. */
export function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  if (a == null || b == null || !(b > 0) || !Number.isFinite(a)) return null;
  return a / b;
}

/** Builds a {@linkcode Target} from a measured value and a goal. */
export function target(
  part: string,
  what: string,
  measured: number | null,
  goal: number,
  unit = "x",
  informational = false,
  atMost = false,
): Target {
  return {
    part,
    what,
    measured,
    goal,
    unit,
    met: measured === null ? null : atMost ? measured <= goal : measured >= goal,
    ...(atMost ? { atMost } : {}),
    ...(informational ? { informational } : {}),
  };
}

/** A number with thousands separators and `digits` decimals; "—" when missing. */
export function formatNumber(n: number | null | undefined, digits = 0): string {
  if (n == null || !Number.isFinite(n)) return "—";
  return n.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** A ratio as `1.27x`; "—" when missing. */
export function formatRatio(r: number | null | undefined): string {
  return r == null || !Number.isFinite(r) ? "—" : `${r.toFixed(2)}x`;
}

/** The measured side of a target, in its unit. */
export function formatMeasured(t: Target): string {
  if (t.words) return t.words.measured;
  if (t.unit === "x") return formatRatio(t.measured);
  const digits = t.measured !== null && Math.abs(t.measured) < 100 ? 1 : 0;
  return `${formatNumber(t.measured, digits)} ${t.unit}`;
}

/** The goal side of a target: `>= 1.20x`, `>= 1,000 conn/s`. */
export function formatGoal(t: Target): string {
  if (t.words) return t.words.goal;
  const bound = t.atMost ? "<=" : ">=";
  return t.unit === "x"
    ? `${bound} ${t.goal.toFixed(2)}x`
    : `${bound} ${formatNumber(t.goal)} ${t.unit}`;
}

/** "reached", "MISSED" or "not measured". */
export function verdict(t: Target): string {
  if (t.met === null) return "not measured";
  if (t.informational) return "(info)";
  return t.met ? "reached" : "MISSED";
}

/** The targets as a text table. */
export function targetTable(targets: Target[]): string {
  return textTable(
    ["target", "goal", "measured", ""],
    targets.map((t) => [t.what, formatGoal(t), formatMeasured(t), verdict(t)]),
    "llrl",
  );
}

/**
 * Lays out rows under headers in padded columns. `align` has one letter per
 * column, `l` or `r` (default: the first column left, the rest right).
 */
export function textTable(headers: string[], rows: string[][], align?: string): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const side = (i: number) => align?.[i] ?? (i === 0 ? "l" : "r");
  const line = (cells: string[]) =>
    cells
      .map((c, i) => side(i) === "l" ? c.padEnd(widths[i]) : c.padStart(widths[i]))
      .join("  ")
      .trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("  ");
  return [line(headers), rule, ...rows.map(line)].join("\n");
}

/** Rounds for JSON: figures keep 2 decimals (or 3 significant digits when small). */
export function round(n: number | null | undefined): number | null {
  if (n == null || !Number.isFinite(n)) return null;
  if (Math.abs(n) >= 10) return Math.round(n * 100) / 100;
  return Number(n.toPrecision(3));
}

/** A number at a dotted path in some JSON, or null. */
export function numberAt(data: unknown, path: string): number | null {
  let value = data;
  for (const key of path.split(".")) {
    if (typeof value !== "object" || value === null) return null;
    value = (value as Record<string, unknown>)[key];
  }
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}
