/**
 * Command-line plumbing shared by every script: flag parsing on top of
 * `parseArgs` from `node:util`, validators for ports, addresses and
 * durations, and `runMain()`, which turns user errors into one line on stderr
 * and the right exit code (2 for bad usage, 1 for everything else).
 *
 * @example
 * ```ts
 * import { parseCli, parsePort, runMain } from "./lib/cli.ts";
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
      args,
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals,
      strict: true,
    });
  } catch (err) {
    // parseArgs adds advice about "--" to positional-taking scripts; the first sentence says it all.
    throw new UsageError(
      firstLine(errorMessage(err)).replace(/\. To specify a positional.*$/, "."),
    );
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
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535 || Number(text) < min) {
    throw new UsageError(`${flag} must be a whole number from ${min} to 65535, got "${text}"`);
  }
  return Number(text);
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
 */
export function parseHostPort(
  text: string,
  flag: string,
  defaultPort?: number,
  minPort = 1,
): HostPort {
  const match = /^(?:\[([^\]]+)\]|([^:\s]+))(?::([^:]*))?$/.exec(text);
  if (!match || (match[3] === undefined && defaultPort === undefined)) {
    throw new UsageError(`${flag} must look like HOST:PORT, got "${text}"`);
  }
  const hostname = match[1] ?? match[2];
  const port = match[3] === undefined ? defaultPort! : parsePort(match[3], flag, minPort);
  return { hostname, port };
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
 * Reads a duration in seconds; fractions are allowed so tests need not wait.
 *
 * @example
 * ```ts
 * parseSeconds("0.5", "--timeout"); // 0.5
 * ```
 */
export function parseSeconds(text: string, flag: string): number {
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || value <= 0) {
    throw new UsageError(
      `${flag} must be a positive number of seconds, got "${text}"`,
    );
  }
  return value;
}

/**
 * Reads a whole number of at least `min`.
 *
 * @example
 * ```ts
 * parseCount("10", "--count"); // 10
 * ```
 */
export function parseCount(text: string, flag: string, min = 1): number {
  if (!/^\d{1,9}$/.test(text) || Number(text) < min) {
    throw new UsageError(
      `${flag} must be a whole number of at least ${min}, got "${text}"`,
    );
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
