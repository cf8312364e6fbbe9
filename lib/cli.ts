/**
 * Command-line plumbing shared by every script: flag parsing on top of
 * `parseArgs` from `node:util`, validators for ports, addresses and
 * durations, and `runMain()`, which turns user errors into one line on stderr
 * and the right exit code (2 for bad usage, 1 for everything else).
 *
 * @example
 * ```ts
 * import { parseCli, parsePort, runMain } from "./cli.ts";
 * const USAGE = "usage: demo.ts [--port N]";
 * if (import.meta.main) {
 *   runMain(USAGE, () => {
 *     const { values } = parseCli(Deno.args, USAGE, { port: { type: "string", default: "8001" } });
 *     console.log(parsePort(values.port as string, "--port"));
 *   });
 * }
 * ```
 * @module
 */

import { parseArgs, type ParseArgsOptionsConfig } from "node:util";

/** Bad command-line input: `runMain()` prints it with the usage and exits 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/**
 * A failure the user can act on (port in use, host unknown, missing
 * permission): `runMain()` prints the message alone and exits 1.
 */
export class CliError extends Error {
  override name = "CliError";
}

/** The result of {@linkcode parseCli}. */
export interface ParsedCli {
  /** Flag values by long name; strings stay strings until validated. */
  values: Record<string, string | boolean | undefined>;
  /** Arguments that are not flags, in order. */
  positionals: string[];
}

/**
 * Parses `args` strictly. Every script also accepts `-h`/`--help`, which
 * prints `usage` and exits 0.
 *
 * @throws {UsageError} on an unknown flag, a missing value, or positionals
 * where none are allowed.
 */
export function parseCli(
  args: string[],
  usage: string,
  options: ParseArgsOptionsConfig,
  allowPositionals = false,
): ParsedCli {
  let parsed;
  try {
    parsed = parseArgs({
      args: joinNegativeValues(args, options),
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals,
      strict: true,
    });
  } catch (err) {
    const message = errorMessage(err);
    // A value that starts with "-" and is not a number: parseArgs's advice spans three lines.
    const ambiguous = /^Option '(-[^']+)' argument is ambiguous/.exec(message);
    if (ambiguous) {
      throw new UsageError(
        `${ambiguous[1]} needs a value; to give one that starts with "-", write ${
          longName(ambiguous[1], options)
        }=VALUE`,
      );
    }
    // A negative number where a positional goes (`tracker.ts 127.0.0.1 -1`) is no option.
    const unknown = /^Unknown option '([^']+)'/.exec(message);
    if (allowPositionals && unknown && NEGATIVE_NUMBER.test(unknown[1])) {
      throw new UsageError(
        `${unknown[1]} is not a valid value here: negative numbers are not allowed`,
      );
    }
    // parseArgs adds advice about "--" to positional-taking scripts; the first sentence says it all.
    throw new UsageError(firstLine(message).replace(/\. To specify a positional.*$/, "."));
  }
  if (parsed.values.help) {
    console.log(usage);
    Deno.exit(0);
  }
  return {
    values: parsed.values as ParsedCli["values"],
    positionals: parsed.positionals,
  };
}

/** Looks like a negative number: `-1`, `-0.5`, `-.5`. */
const NEGATIVE_NUMBER = /^-\.?\d/;

/**
 * Rewrites `--port -1` as `--port=-1` for options that take a value, so a
 * negative number reaches the flag's validator, which can say what the flag
 * takes. parseArgs would refuse it as "ambiguous" (it might be a forgotten
 * value followed by a short flag `-1`), which tells a user nothing.
 */
function joinNegativeValues(args: string[], options: ParseArgsOptionsConfig): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    // After "--" everything is a positional, as parseArgs reads it.
    if (arg === "--") return [...out, ...args.slice(i)];
    const name = optionName(arg, options);
    if (name !== undefined && options[name].type === "string" && i + 1 < args.length) {
      const value = args[i + 1];
      if (NEGATIVE_NUMBER.test(value)) out.push(`--${name}=${value}`);
      else out.push(arg, value);
      i++; // the next argument was this flag's value, never a flag of its own
      continue;
    }
    out.push(arg);
  }
  return out;
}

/** The long name of a whole-argument flag (`--port`, or `-p` when declared), else undefined. */
function optionName(arg: string, options: ParseArgsOptionsConfig): string | undefined {
  if (arg.startsWith("--")) {
    const name = arg.slice(2);
    return Object.hasOwn(options, name) ? name : undefined;
  }
  if (/^-[^-]$/.test(arg)) {
    return Object.keys(options).find((name) => options[name].short === arg[1]);
  }
  return undefined;
}

/** `--name` for a flag as the user wrote it (`-p` or `--port`). */
function longName(flag: string, options: ParseArgsOptionsConfig): string {
  const name = optionName(flag, options);
  return name === undefined ? flag : `--${name}`;
}

/**
 * Reads a TCP port: a whole number from 0 to 65535 (0 asks the OS for any
 * free port).
 *
 * @example
 * ```ts
 * parsePort("8001", "--port"); // 8001
 * ```
 */
export function parsePort(text: string, flag: string, min = 0): number {
  if (!isPort(text, min)) {
    throw new UsageError(`${flag} must be a whole number from ${min} to 65535, got "${text}"`);
  }
  return Number(text);
}

/** Whether `text` is a port number from `min` to 65535, written in digits only. */
function isPort(text: string, min: number): boolean {
  return /^\d{1,5}$/.test(text) && Number(text) <= 65535 && Number(text) >= min;
}

/**
 * Reads the port of a server to connect to: 1 to 65535 (port 0 names no
 * server).
 *
 * @example
 * ```ts
 * parseTargetPort("80", "--port"); // 80
 * ```
 */
export function parseTargetPort(text: string, flag: string): number {
  return parsePort(text, flag, 1);
}

/** A host name or IP address together with a port. */
export interface HostPort {
  /** Name or literal address; IPv6 literals are written without brackets. */
  hostname: string;
  /** 0 to 65535. */
  port: number;
}

/**
 * Reads `HOST:PORT`, `[IPv6]:PORT`, or (when `defaultPort` is given) a bare
 * `HOST`.
 *
 * @example
 * ```ts
 * parseHostPort("www.google.com:80", "--upstream"); // { hostname: "www.google.com", port: 80 }
 * ```
 *
 * @throws {UsageError} naming the part that is wrong (the form, the host or
 * the port) and quoting the whole argument.
 */
export function parseHostPort(
  text: string,
  flag: string,
  defaultPort?: number,
  minPort = 1,
): HostPort {
  const form = defaultPort === undefined ? "HOST:PORT" : "HOST or HOST:PORT";
  // Split off the port: after "]" for "[IPv6]:PORT", else after the only colon.
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(text);
  const colon = text.indexOf(":");
  const hostname = bracketed ? bracketed[1] : colon === -1 ? text : text.slice(0, colon);
  const portText = bracketed ? bracketed[2] : colon === -1 ? undefined : text.slice(colon + 1);
  if (!bracketed && portText?.includes(":")) {
    throw new UsageError(
      `${flag} must look like ${form} (an IPv6 address goes in brackets, as in [::1]:9000), got "${text}"`,
    );
  }
  if (portText === undefined && defaultPort === undefined) {
    throw new UsageError(`${flag} must look like HOST:PORT, got "${text}"`);
  }
  if (hostname === "") {
    throw new UsageError(`${flag} must look like ${form}, got "${text}" (the host is missing)`);
  }
  if (bracketed ? !isIPv6(hostname) : !isHostName(hostname) && !isIPv4(hostname)) {
    const what = bracketed
      ? `the address in brackets must be an IPv6 address, got "[${hostname}]"`
      : `the host must be a host name or an IP address, got "${hostname}"`;
    throw new UsageError(`${flag}: ${what} in "${text}"`);
  }
  if (portText !== undefined && !isPort(portText, minPort)) {
    throw new UsageError(
      `${flag}: the port must be a whole number from ${minPort} to 65535, got "${portText}" in "${text}"`,
    );
  }
  return { hostname, port: portText === undefined ? defaultPort! : Number(portText) };
}

/**
 * Reads an address to listen on or connect to, without a port: a host name,
 * an IPv4 address, or an IPv6 address (brackets optional, and removed).
 * `portFlag` names where the port goes, for the hint given when `text` ends
 * in one.
 *
 * @example
 * ```ts
 * parseHost("[::1]", "--host"); // "::1"
 * parseHost("127.0.0.1:9000", "--host"); // throws: give the port with --port
 * ```
 *
 * @throws {UsageError} on an empty value, white space, a port, or anything
 * that is not a host name or an IP address.
 */
export function parseHost(text: string, flag: string, portFlag = "--port"): string {
  const bracketed = /^\[(.*)\]$/.exec(text);
  const host = bracketed ? bracketed[1] : text;
  if (isIPv6(host)) return host;
  if (bracketed) {
    throw new UsageError(`${flag}: the address in brackets must be an IPv6 address, got "${text}"`);
  }
  // "HOST:PORT" or "[IPv6]:PORT", the form the other flags take, is an easy slip here.
  if (/^(?:\[[^\]]*\]|[^:]+):\d*$/.test(text)) {
    throw new UsageError(
      `${flag} takes an address without a port, got "${text}"; give the port with ${portFlag}`,
    );
  }
  if (!isHostName(text) && !isIPv4(text)) {
    throw new UsageError(`${flag} must be a host name or an IP address, got "${text}"`);
  }
  return text;
}

/** A dotted-quad IPv4 address, each part 0 to 255. */
function isIPv4(text: string): boolean {
  const parts = text.split(".");
  return parts.length === 4 && parts.every((part) => /^\d{1,3}$/.test(part) && Number(part) <= 255);
}

/**
 * An IPv6 address without brackets, with an optional zone (`fe80::1%eth0`):
 * the URL parser knows every legal spelling, `::` and `::ffff:1.2.3.4` too.
 */
function isIPv6(text: string): boolean {
  const [address, zone, ...rest] = text.split("%");
  if (
    !address.includes(":") || rest.length > 0 || (zone !== undefined && !/^[\w.-]+$/.test(zone))
  ) {
    return false;
  }
  return URL.canParse(`http://[${address}]/`);
}

/**
 * A DNS name: dot-separated labels of letters, digits, "-" and "_" (no label
 * starts with "-"), at most 253 characters. All digits and dots is no name,
 * only a mistyped IPv4 address or a port.
 */
function isHostName(text: string): boolean {
  const name = text.endsWith(".") ? text.slice(0, -1) : text;
  if (name.length === 0 || name.length > 253 || /^[\d.]+$/.test(name)) return false;
  return name.split(".").every((label) => /^[\p{L}\p{N}_][\p{L}\p{N}_-]{0,62}$/u.test(label));
}

/**
 * Reads the path of an HTTP request line: it starts with `/` and has no
 * white space (which would break the request line).
 *
 * @example
 * ```ts
 * parseHttpPath("/search?q=deno", "--path"); // "/search?q=deno"
 * ```
 */
export function parseHttpPath(text: string, flag: string): string {
  if (!text.startsWith("/") || /\s/.test(text)) {
    throw new UsageError(`${flag} must start with "/" and contain no spaces, got "${text}"`);
  }
  return text;
}

/**
 * The longest duration {@linkcode parseSeconds} accepts, in whole seconds.
 * Every duration ends up in `setTimeout` or `setInterval`, which keep the
 * delay as a signed 32-bit count of milliseconds: a longer delay (2^31 ms is
 * about 24.8 days) wraps around and fires at once, so `--timeout 3000000`
 * would give up immediately instead of never.
 */
export const MAX_TIMER_SECONDS = Math.floor((2 ** 31 - 1) / 1000); // 2147483 s
/** Shortest duration a flag takes: a timer cannot wait less than a millisecond. */
export const MIN_TIMER_SECONDS = 0.001;

/**
 * Reads a duration in seconds, from `min` ({@linkcode MIN_TIMER_SECONDS}
 * unless a flag needs more) up to {@linkcode MAX_TIMER_SECONDS}; fractions are
 * allowed so tests need not wait. Too short a wait is refused rather than
 * turned into a loop that spins.
 *
 * @example
 * ```ts
 * parseSeconds("0.5", "--timeout"); // 0.5
 * ```
 */
export function parseSeconds(text: string, flag: string, min = MIN_TIMER_SECONDS): number {
  const value = Number(text);
  // Plain decimals only: Number() would also take " 5", "0x10" and "1e3".
  if (!/^(?:\d+(?:\.\d*)?|\.\d+)$/.test(text) || value <= 0 || value > MAX_TIMER_SECONDS) {
    throw new UsageError(
      `${flag} must be a positive number of seconds up to ${MAX_TIMER_SECONDS} (about 24 days), got "${text}"`,
    );
  }
  if (value < min) {
    throw new UsageError(`${flag} must be at least ${min} s, got "${text}"`);
  }
  return value;
}

/** The largest number {@linkcode parseCount} takes unless told: nine digits, far past any sane count. */
export const MAX_COUNT = 999_999_999;

/**
 * Reads a whole number from `min` to `max`.
 *
 * @example
 * ```ts
 * parseCount("10", "--count"); // 10
 * ```
 */
export function parseCount(text: string, flag: string, min = 1, max = MAX_COUNT): number {
  if (!/^\d{1,9}$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new UsageError(`${flag} must be a whole number from ${min} to ${max}, got "${text}"`);
  }
  return Number(text);
}

/**
 * Reads one of a fixed set of words.
 *
 * @example
 * ```ts
 * parseChoice("async", "--mode", ["async", "worker", "process"] as const);
 * ```
 */
export function parseChoice<T extends string>(
  text: string,
  flag: string,
  choices: readonly T[],
): T {
  if (!(choices as readonly string[]).includes(text)) {
    throw new UsageError(
      `${flag} must be one of ${choices.join(", ")}, got "${text}"`,
    );
  }
  return text as T;
}

/** The message of any thrown value. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function firstLine(text: string): string {
  return text.split("\n")[0];
}

/**
 * Runs a script's `main`, mapping errors to exit codes: {@linkcode UsageError}
 * prints the line and `usage` and exits 2; {@linkcode CliError} and Deno's own
 * I/O and permission errors print one line and exit 1. A number returned by
 * `main` becomes the exit code.
 */
export async function runMain(
  usage: string,
  main: () => Promise<number | void> | number | void,
): Promise<void> {
  try {
    const code = await main();
    if (typeof code === "number") Deno.exit(code);
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`error: ${err.message}\n${usage}`);
      Deno.exit(2);
    }
    const known = err instanceof CliError || err instanceof Deno.errors.NotCapable ||
      (err instanceof Error && Object.values(Deno.errors).some((E) => err instanceof E));
    console.error(
      `error: ${known ? firstLine(errorMessage(err)) : (err as Error)?.stack ?? err}`,
    );
    Deno.exit(1);
  }
}

/**
 * Calls `stop` on the first SIGINT or SIGTERM, then exits 0 — the way a
 * server should end on Ctrl-C. A second signal exits at once.
 */
export function exitOnSignal(stop: () => Promise<void>): void {
  let stopping = false;
  const onSignal = async () => {
    if (stopping) Deno.exit(130);
    stopping = true;
    try {
      await stop();
    } finally {
      Deno.exit(0);
    }
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, onSignal);
  }
}
