/**
 * Test plumbing shared by every test file: run a script as a student runs
 * it, wait for its "listening on" line, talk to servers over real sockets,
 * hash what came back, and count open file descriptors.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { READ_BUFFER_BYTES, writeAll } from "../lib/net.ts";

/** The project's root folder, where the scripts live. */
export const ROOT = new URL("../", import.meta.url);

/** Absolute path of a file in the project. */
export function projectPath(relative: string): string {
  return decodeURIComponent(new URL(relative, ROOT).pathname);
}

/** SHA-256 of some bytes, as hex. */
export function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** `n` pseudo-random bytes (fast, not for secrets), the same for the same seed. */
export function randomBytes(n: number, seed = 1): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  const words = new Uint32Array(out.buffer, 0, Math.floor(n / 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  for (let i = words.length * 4; i < n; i++) out[i] = i & 0xff;
  return out;
}

/** What {@linkcode exchange} got back. */
export interface Exchange {
  /** Every byte received until the server closed its side. */
  received: Uint8Array;
  /** SHA-256 of `received`. */
  sha256: string;
}

/**
 * Connects, sends `data` while reading concurrently, half-closes, and reads
 * until the server ends its side. Hashes as it goes when `keep` is false, so
 * 64 MiB need not be held twice.
 */
export async function exchange(
  port: number,
  data: Uint8Array,
  options: { keep?: boolean; hostname?: string } = {},
): Promise<Exchange & { bytes: number }> {
  const conn = await Deno.connect({ hostname: options.hostname ?? "127.0.0.1", port });
  try {
    const sending = (async () => {
      for (let at = 0; at < data.length; at += 1024 * 1024) {
        await writeAll(conn, data.subarray(at, at + 1024 * 1024));
      }
      await conn.closeWrite();
    })();
    const hash = createHash("sha256");
    const kept: Uint8Array[] = [];
    const buffer = new Uint8Array(READ_BUFFER_BYTES);
    let bytes = 0;
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      hash.update(buffer.subarray(0, n));
      if (options.keep !== false) kept.push(buffer.slice(0, n));
      bytes += n;
    }
    await sending;
    return { received: concat(kept), sha256: hash.digest("hex"), bytes };
  } finally {
    conn.close();
  }
}

/** Joins byte arrays. */
export function concat(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Reads a connection to its end. */
export async function readAll(conn: Deno.Conn): Promise<Uint8Array<ArrayBuffer>> {
  const parts: Uint8Array[] = [];
  const buffer = new Uint8Array(READ_BUFFER_BYTES);
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) return concat(parts);
    parts.push(buffer.slice(0, n));
  }
}

/** Open file descriptors of a process (Linux). */
export function countFds(pid: number): number {
  let n = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
  return n;
}

/** Resident memory of a process in bytes (Linux). */
export function rssBytes(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return kb * 1024;
}

/** Whether a command is on the PATH. */
export function haveCommand(name: string): boolean {
  try {
    return new Deno.Command("sh", { args: ["-c", `command -v ${name}`], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** A script started the way a student starts it, with `deno run`. */
export interface Script extends AsyncDisposable {
  /** The child process. */
  readonly process: Deno.ChildProcess;
  /** The port from its "listening on HOST:PORT" line (0 when it has none). */
  readonly port: number;
  /** Every stdout line so far. */
  readonly lines: string[];
  /** Resolves with the first stdout line matching `pattern`. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Sends SIGTERM (unless it exited) and resolves with its exit status. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

/**
 * Runs `deno run <permissions> <script> <args>` from the project root and,
 * unless `waitForListening` is false, waits for its "listening on" line.
 * Its stderr is collected into `lines` too, prefixed with `stderr: `.
 */
export async function startScript(
  script: string,
  args: string[],
  options: { permissions?: string[]; waitForListening?: boolean; timeoutMs?: number } = {},
): Promise<Script> {
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...(options.permissions ?? ["--allow-net"]), script, ...args],
    cwd: projectPath("."),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const lines: string[] = [];
  const waiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  const take = (line: string) => {
    lines.push(line);
    for (const w of [...waiters]) {
      if (w.pattern.test(line)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  };
  const pumps = [
    pumpLines(process.stdout, take),
    pumpLines(process.stderr, (line) => take(`stderr: ${line}`)),
  ];
  let exited = false;
  const status = process.status.then(async (s) => {
    exited = true;
    await Promise.all(pumps);
    return s;
  });
  const waitFor = (pattern: RegExp, timeoutMs = options.timeoutMs ?? 20_000) => {
    const seen = lines.find((l) => pattern.test(l));
    if (seen) return Promise.resolve(seen);
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new Error(
            `no line matching ${pattern} within ${timeoutMs} ms; got:\n${lines.join("\n")}`,
          ),
        );
      }, timeoutMs);
      waiters.push({
        pattern,
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      });
      status.then(() => {
        clearTimeout(timer);
        reject(new Error(`${script} exited before printing ${pattern}; got:\n${lines.join("\n")}`));
      });
    });
  };
  const stop = async (signal: Deno.Signal = "SIGTERM") => {
    if (!exited) {
      try {
        process.kill(signal);
      } catch {
        // It exited meanwhile.
      }
    }
    return await status;
  };
  let port = 0;
  if (options.waitForListening !== false) {
    try {
      const line = await waitFor(/listening on \S+:\d+/);
      port = Number(/listening on \S+:(\d+)/.exec(line)![1]);
    } catch (err) {
      await stop("SIGKILL");
      throw err;
    }
  }
  return {
    process,
    port,
    lines,
    waitFor,
    stop,
    [Symbol.asyncDispose]: async () => {
      await stop();
    },
  };
}

/** Runs a script to completion, collecting its output. */
export async function runScript(
  script: string,
  args: string[],
  options: { permissions?: string[]; stdin?: Uint8Array } = {},
): Promise<{ code: number; stdout: Uint8Array; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...(options.permissions ?? ["--allow-net"]), script, ...args],
    cwd: projectPath("."),
    stdin: options.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  if (options.stdin) {
    const writer = child.stdin.getWriter();
    await writer.write(options.stdin);
    await writer.close();
  }
  const out = await child.output();
  return { code: out.code, stdout: out.stdout, stderr: new TextDecoder().decode(out.stderr) };
}

async function pumpLines(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void) {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of stream) {
    pending += decoder.decode(chunk, { stream: true });
    const parts = pending.split("\n");
    pending = parts.pop()!;
    for (const line of parts) onLine(line);
  }
  if (pending) onLine(pending);
}
