/**
 * Output a student can read: an escaped preview of bytes that arrived, byte
 * counts in human units, and the `Log` function type every server takes.
 *
 * @example
 * ```ts
 * import { preview } from "./log.ts";
 * preview(new TextEncoder().encode("Foobar\n")); // '"Foobar\\n"'
 * ```
 * @module
 */

/** Where a server writes its lines. */
export type Log = (line: string) => void;

/** Prints to stdout. */
export const printLog: Log = (line) => console.log(line);

/** Prints nothing (`--quiet`). */
export const silentLog: Log = () => {};

/** Bytes shown in a preview before it is cut with `…`. */
export const PREVIEW_BYTES = 60;

/**
 * Shows up to `limit` bytes as a quoted, escaped string: printable ASCII as
 * is, `\n` `\r` `\t` `\\` `\"` escaped, other bytes as `\xNN`. A 500 MB upload
 * therefore prints one short line, and binary data cannot garble a terminal.
 */
export function preview(bytes: Uint8Array, limit = PREVIEW_BYTES): string {
  let out = '"';
  const end = Math.min(bytes.length, limit);
  for (let i = 0; i < end; i++) {
    const b = bytes[i];
    if (b === 0x0a) out += "\\n";
    else if (b === 0x0d) out += "\\r";
    else if (b === 0x09) out += "\\t";
    else if (b === 0x5c) out += "\\\\";
    else if (b === 0x22) out += '\\"';
    else if (b >= 0x20 && b < 0x7f) out += String.fromCharCode(b);
    else out += "\\x" + b.toString(16).padStart(2, "0");
  }
  out += '"';
  return bytes.length > limit ? `${out}… (${bytes.length} bytes)` : out;
}

/**
 * A byte count in the unit a person reads fastest: `512 B`, `3.0 KiB`,
 * `64.0 MiB`.
 */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

/** Milliseconds since `start` (a `performance.now()` reading), for log lines. */
export function elapsedMs(start: number): string {
  return `${(performance.now() - start).toFixed(1)} ms`;
}
