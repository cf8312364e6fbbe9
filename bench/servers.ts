/**
 * Process plumbing for the benchmark: start a server under test in a process
 * of its own and learn its port, run a load generator to completion, and
 * sample the resident memory of a process together with all its children
 * (Linux `/proc`).
 *
 * @example
 * ```ts
 * import { RssSampler, spawnServer } from "./servers.ts";
 * const server = await spawnServer("node net", ["node", "bench/node_echo.mjs", "0"]);
 * const sampler = await RssSampler.start(server.pid, 20);
 * // ... drive load at server.port ...
 * console.log((await sampler.stop()) / 1024 / 1024, "MiB at peak");
 * await server.stop();
 * ```
 * @module
 */

import { errorMessage } from "../lib/cli.ts";

/** The project's root folder: every command runs from there, as a student's would. */
export const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname);

/** How long a server may take to say it is listening. */
const START_TIMEOUT_MS = 30_000;
/** After SIGTERM, how long a server may take to exit before SIGKILL. */
const STOP_GRACE_MS = 3_000;
/** Lines of a server's output kept for error messages. */
const KEPT_LINES = 20;

/** A server under test, running in its own process. */
export interface RunningServer extends AsyncDisposable {
  /** What the tables call it. */
  readonly label: string;
  /** Its process id (the root of its process tree). */
  readonly pid: number;
  /** The port it listens on, from its "listening on HOST:PORT" line. */
  readonly port: number;
  /** Its last lines of output, for error messages. */
  readonly lines: string[];
  /** SIGTERM, then SIGKILL for it and any child left after the grace time. */
  stop(): Promise<void>;
}

/** Options for {@linkcode spawnServer}. */
export interface SpawnOptions {
  /**
   * The port, when the server prints no "listening on" line (socat): the
   * server counts as started once a connection to it succeeds.
   */
  knownPort?: number;
}

/**
 * Starts `command` from the project root and waits until it listens: for a
 * line containing `listening on HOST:PORT`, or (with `knownPort`) for a
 * successful connection.
 */
export async function spawnServer(
  label: string,
  command: string[],
  options: SpawnOptions = {},
): Promise<RunningServer> {
  const child = new Deno.Command(command[0], {
    args: command.slice(1),
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const lines: string[] = [];
  let onListening: (port: number) => void = () => {};
  const listening = new Promise<number>((resolve) => onListening = resolve);
  const take = (line: string) => {
    lines.push(line);
    if (lines.length > KEPT_LINES) lines.shift();
    const match = /listening on \S+:(\d+)/.exec(line);
    if (match) onListening(Number(match[1]));
  };
  // Keep reading both pipes all along, or a chatty server would block on a full pipe.
  const pumps = Promise.all([pumpLines(child.stdout, take), pumpLines(child.stderr, take)]);
  let exited = false;
  const status = child.status.then(async (s) => {
    exited = true;
    await pumps;
    return s;
  });
  const stop = async () => {
    if (exited) return;
    const family = await treePids(child.pid);
    signal(child.pid, "SIGTERM");
    const timer = setTimeout(() => {
      for (const pid of [child.pid, ...family]) signal(pid, "SIGKILL");
    }, STOP_GRACE_MS);
    await status;
    clearTimeout(timer);
    // Forked children still serving a connection would outlive their parent.
    for (const pid of family) signal(pid, "SIGKILL");
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const port = await Promise.race([
      options.knownPort === undefined ? listening : waitForPort(options.knownPort, () => exited),
      status.then((s) => {
        throw new Error(`${label} exited with code ${s.code} before listening`);
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`${label} did not listen within ${START_TIMEOUT_MS} ms`)),
          START_TIMEOUT_MS,
        );
      }),
    ]);
    return {
      label,
      pid: child.pid,
      port,
      lines,
      stop,
      [Symbol.asyncDispose]: stop,
    };
  } catch (err) {
    await stop();
    const said = lines.length ? `; it printed:\n  ${lines.join("\n  ")}` : "";
    throw new Error(`${errorMessage(err)}${said}`);
  } finally {
    clearTimeout(timer);
  }
}

/** What a load generator printed and how it ended. */
export interface ToolRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command from the project root to completion, collecting its output. */
export async function runTool(command: string[]): Promise<ToolRun> {
  const out = await new Deno.Command(command[0], {
    args: command.slice(1),
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** A port that was free a moment ago, for servers that cannot pick their own (socat). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Resolves with `port` once a connection to it succeeds. */
async function waitForPort(port: number, gaveUp: () => boolean): Promise<number> {
  while (!gaveUp()) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return port;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return port;
}

function signal(pid: number, name: Deno.Signal): void {
  try {
    Deno.kill(pid, name);
  } catch {
    // It has exited already.
  }
}

/** The command that runs `bench/rss_sampler.ts`, the one part allowed to read `/proc`. */
function samplerCommand(args: string[]): string[] {
  return [Deno.execPath(), "run", "--allow-all", "bench/rss_sampler.ts", ...args];
}

/** The process ids of every descendant of `root` (not `root` itself). */
export async function treePids(root: number): Promise<number[]> {
  const run = await runTool(samplerCommand(["--pid", String(root), "--descendants"]));
  return run.code === 0 ? JSON.parse(run.stdout) : [];
}

/**
 * Samples the resident memory of a process and all its children every
 * `intervalMs`, in a process of its own (`bench/rss_sampler.ts`), from
 * {@linkcode RssSampler.start} until `stop()`, which returns the peak.
 */
export class RssSampler {
  private constructor(readonly child: Deno.ChildProcess, readonly lines: ReadableStream<string>) {}

  /** Starts sampling; resolves once the first sample is taken. */
  static async start(pid: number, intervalMs: number): Promise<RssSampler> {
    const [command, ...args] = samplerCommand([
      "--pid",
      String(pid),
      "--interval-ms",
      String(intervalMs),
    ]);
    const child = new Deno.Command(command, {
      args,
      cwd: ROOT,
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const sampler = new RssSampler(child, child.stdout.pipeThrough(new TextDecoderStream()));
    const first = await sampler.#readAll(true);
    if (!first.includes("sampling")) {
      throw new Error(`the memory sampler did not start: ${first.trim() || "no output"}`);
    }
    return sampler;
  }

  #reader: ReadableStreamDefaultReader<string> | null = null;

  async #readAll(untilFirstLine: boolean): Promise<string> {
    this.#reader ??= this.lines.getReader();
    let text = "";
    while (true) {
      const { value, done } = await this.#reader.read();
      if (done) return text;
      text += value;
      if (untilFirstLine && text.includes("\n")) return text;
    }
  }

  /** Stops sampling and returns the peak, in bytes. */
  async stop(): Promise<number> {
    await this.child.stdin.close();
    const out = await this.#readAll(false);
    await this.child.status;
    const last = out.trim().split("\n").pop() ?? "";
    return last.startsWith("{") ? JSON.parse(last).peakBytes : 0;
  }
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
