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
 * console.log((await sampler.stop()).peakBytes / 1024 / 1024, "MiB at peak");
 * await server.stop();
 * ```
 * @module
 */

import { type Mode, MODE_PERMISSIONS } from "../lib/concurrency.ts";
import { freePort, projectPath, type Script, startCommand, startScript } from "../lib/scripts.ts";
import { peerPermissions } from "../p2p/peer.ts";

/** The project's root folder, with a trailing slash: every command runs from there. */
export const ROOT = projectPath(".");

/** How long a server may take to say it is listening. */
const START_TIMEOUT_MS = 30_000;
/** After SIGTERM, how long a server may take to exit before SIGKILL. */
const STOP_GRACE_MS = 3_000;

/** A server under test, before it is started: what the tables call it and how to run it. */
export interface ServerSpec {
  /** Its key in bench/results.json. */
  id: string;
  /** What the tables call it. */
  label: string;
  /** Ours (blue in the chart) or a reference (grey). */
  ours: boolean;
  /** The command that starts it, from the project root. */
  command: string[];
  /** Its port when the command cannot say it (socat); otherwise read from its "listening on" line. */
  knownPort?: number;
}

/** A server under test, running in its own process. */
export interface RunningServer extends AsyncDisposable {
  /** What the tables call it. */
  readonly label: string;
  /** Its process id (the root of its process tree). */
  readonly pid: number;
  /** The port it listens on, from its "listening on HOST:PORT" line. */
  readonly port: number;
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
 * Starts `command` from the project root (with `startCommand()` from
 * lib/scripts.ts) and waits until it listens: for its `listening on
 * HOST:PORT` line, or (with `knownPort`) for a successful connection.
 */
export async function spawnServer(
  label: string,
  command: string[],
  options: SpawnOptions = {},
): Promise<RunningServer> {
  const script = await startCommand(command[0], command.slice(1), {
    label,
    waitForListening: options.knownPort === undefined,
    timeoutMs: START_TIMEOUT_MS,
  });
  const pid = script.process.pid;
  let exited = false;
  script.process.status.then(() => exited = true);
  const stop = async () => {
    if (exited) return;
    const family = await treePids(pid);
    const timer = setTimeout(() => {
      for (const p of [pid, ...family]) signal(p, "SIGKILL");
    }, STOP_GRACE_MS);
    await script.stop("SIGTERM");
    clearTimeout(timer);
    // Forked children still serving a connection would outlive their parent.
    for (const p of family) signal(p, "SIGKILL");
  };
  let port = script.port;
  if (options.knownPort !== undefined) {
    port = options.knownPort;
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (!await canConnect(port)) {
      if (exited || Date.now() > deadline) {
        await stop();
        const said = script.lines.length ? `; it printed:\n  ${script.lines.join("\n  ")}` : "";
        throw new Error(`${label} did not listen on port ${port}${said}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return { label, pid, port, stop, [Symbol.asyncDispose]: stop };
}

/** What a load generator printed and how it ended. */
export interface ToolRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * The JSON line a load generator printed last. Throws, with its exit code
 * and the first line it said, when it failed or printed no JSON.
 */
export function lastJson<T>(run: ToolRun, what = "load generator"): T {
  const last = run.stdout.trim().split("\n").pop() ?? "";
  if (run.code !== 0 || !last.startsWith("{")) {
    const said = (run.stderr || run.stdout).trim().split("\n")[0] ?? "";
    throw new Error(`${what} exited ${run.code}: ${said}`);
  }
  return JSON.parse(last) as T;
}

/** A command as a reader would type it: this `deno` binary shown as `deno`. */
export function shownCommand(command: readonly string[]): string {
  return command.map((a) => a === Deno.execPath() ? "deno" : a).join(" ");
}

/**
 * Starts the server of one table row; if it does not start, notes why in
 * the row's `errors`, says so, and returns null (the row is left empty).
 */
export async function startOrNote(
  part: string,
  spec: Pick<ServerSpec, "label" | "command" | "knownPort">,
  errors: string[],
  say: (line: string) => void,
): Promise<RunningServer | null> {
  try {
    return await spawnServer(spec.label, spec.command, { knownPort: spec.knownPort });
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    errors.push(why);
    say(`${part}: ${spec.label} did not start: ${why}`);
    return null;
  }
}

/** Where Debian puts daemons (haproxy, nginx): not on a normal user's PATH. */
const SBIN_DIRS = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/**
 * The path of program `name`, looked up on the PATH and then in the sbin
 * folders; null when it is not installed.
 *
 * @example
 * ```ts
 * import { findProgram } from "./servers.ts";
 * console.log(await findProgram("haproxy") ?? "haproxy is not installed");
 * ```
 */
export async function findProgram(name: string): Promise<string | null> {
  if (!/^[\w.+-]+$/.test(name)) throw new TypeError(`Not a program name: ${JSON.stringify(name)}`);
  const path = [Deno.env.get("PATH") ?? "", ...SBIN_DIRS].join(":");
  const run = await runTool(["sh", "-c", `PATH='${path.replaceAll("'", "")}' command -v ${name}`]);
  const found = run.stdout.trim();
  return run.code === 0 && found.startsWith("/") ? found : null;
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

/**
 * The command that starts one of our server scripts under test: as a student
 * runs it, with the narrowest permissions of `mode`, on a free port, quiet.
 */
export function ourServerCommand(script: string, mode: Mode, args: string[] = []): string[] {
  return [
    Deno.execPath(),
    "run",
    ...MODE_PERMISSIONS[mode],
    script,
    "--port",
    "0",
    ...args,
    "--mode",
    mode,
    "--quiet",
  ];
}

/**
 * socat as a forking TCP server on a port of its own choosing: `fork`,
 * `reuseaddr`, a listen backlog of 1,024, and `target` as the other address
 * (`PIPE` for an echo, `TCP:HOST:PORT` for a relay).
 */
export function socatFork(socat: string, target: string): { command: string[]; knownPort: number } {
  const port = freePort();
  return {
    command: [socat, `TCP-LISTEN:${port},bind=127.0.0.1,fork,reuseaddr,backlog=1024`, target],
    knownPort: port,
  };
}

/** Whether something accepts connections on `port`. */
async function canConnect(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.close();
    return true;
  } catch {
    return false;
  }
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

/** What {@linkcode RssSampler} saw at most. */
export interface MemoryPeak {
  /** Highest sum of VmRSS over the process tree, in bytes. */
  peakBytes: number;
  /** Most processes in the tree at one sample. */
  peakProcesses: number;
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

  /** Stops sampling and returns the peaks. */
  async stop(): Promise<MemoryPeak> {
    await this.child.stdin.close();
    const out = await this.#readAll(false);
    await this.child.status;
    const last = out.trim().split("\n").pop() ?? "";
    return last.startsWith("{") ? JSON.parse(last) : { peakBytes: 0, peakProcesses: 0 };
  }
}

/** What `bench/reset_storm.py` reports when it stops. */
export interface StormReport {
  /** Connections made and reset. */
  resets: number;
  /** Connections that could not be made. */
  failures: number;
  /** How long it ran. */
  seconds: number;
  /** Resets per second it reached. */
  resetsPerSec: number;
  /** The first failure, if any. */
  firstError: string | null;
}

/** A running reset storm; `stop()` ends it and resolves with its report. */
export interface ResetStorm extends AsyncDisposable {
  stop(): Promise<StormReport>;
}

/** Options for {@linkcode startResetStorm}. */
export interface ResetStormOptions {
  /** The Python interpreter. @default {"python3"} */
  python?: string;
  /** Resets per second to aim for. @default {300} */
  rate?: number;
  /** Its own time limit in seconds, should the end of its stdin go astray. @default {60} */
  maxSeconds?: number;
  /** Milliseconds it may take to start, and to stop and report. @default {10_000} */
  startStopMs?: number;
}

/**
 * Starts `bench/reset_storm.py` against `port` on 127.0.0.1: connections
 * opened and reset at once (SO_LINGER 0) at a steady rate, as port scanners
 * and killed load tools do. Resolves once the first one was reset; the end
 * of its stdin (`stop()`) stops it.
 *
 * @example
 * ```ts
 * import { startResetStorm } from "./servers.ts";
 * await using storm = await startResetStorm(8001, { rate: 200 });
 * // ... serve good clients on 8001 meanwhile ...
 * console.log((await storm.stop()).resetsPerSec, "resets/s");
 * ```
 */
export async function startResetStorm(
  port: number,
  options: ResetStormOptions = {},
): Promise<ResetStorm> {
  const startStopMs = options.startStopMs ?? 10_000;
  const child = new Deno.Command(options.python ?? "python3", {
    args: [
      projectPath("bench/reset_storm.py"),
      String(port),
      "--rate",
      String(options.rate ?? 300),
      "--seconds",
      String(options.maxSeconds ?? 60),
      "--until-eof",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const lastLine = async () => (await stderr).trim().split("\n").pop();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let said = "";
  const readUntil = async (pattern: RegExp): Promise<boolean> => {
    while (!pattern.test(said)) {
      const { value, done } = await reader.read();
      if (done) return false;
      said += value;
    }
    return true;
  };
  const kill = () => {
    try {
      child.kill("SIGKILL");
    } catch {
      // It exited already.
    }
  };
  // Whatever happens, the child exits, its output is read to the end, and its stdin is closed.
  let ended: Promise<void> | null = null;
  const end = () =>
    ended ??= (async () => {
      kill();
      await child.status;
      while (!(await reader.read()).done) {
        // Output after the report: none expected.
      }
      await child.stdin.close().catch(() => {});
      await stderr;
    })();
  const killer = setTimeout(kill, startStopMs);
  const started = await readUntil(/^storming$/m);
  clearTimeout(killer);
  if (!started) {
    await end();
    throw new Error(`reset_storm.py did not start: ${await lastLine()}`);
  }
  return {
    async stop() {
      const killer = setTimeout(kill, startStopMs);
      try {
        // The end of its stdin stops it; it prints one JSON line and exits.
        await child.stdin.close().catch(() => {});
        if (!await readUntil(/^\{.*\}$/m)) {
          throw new Error(`reset_storm.py printed no report: ${await lastLine()}`);
        }
        return JSON.parse(said.split("\n").find((l) => l.startsWith("{"))!) as StormReport;
      } finally {
        clearTimeout(killer);
        await end();
      }
    },
    [Symbol.asyncDispose]: end,
  };
}

// ---------------------------------------------------------------- the P2P benchmarks' set-up

/**
 * Starts `p2p/tracker.ts` on 127.0.0.1, its TCP port and its status page on
 * free ports, quiet: the tracker every P2P benchmark runs against.
 *
 * @example
 * ```ts
 * import { startBenchTracker } from "./servers.ts";
 * await using tracker = await startBenchTracker();
 * console.log("tracker on port", tracker.port);
 * ```
 */
export function startBenchTracker(timeoutMs?: number): Promise<Script> {
  return startScript("p2p/tracker.ts", ["--port", "0", "--http-port", "0", "--quiet"], {
    timeoutMs,
  });
}

/** Options for {@linkcode startBenchPeer}. */
export interface BenchPeerOptions {
  /** Seconds between the peer's rounds. */
  interval: number | string;
  /** Where it serves requests; passed as `--mode` only when given. @default {"async"} */
  mode?: Mode;
  /** Address it serves files on. @default {"127.0.0.1"} */
  host?: string;
  /** Milliseconds it may take to say it is listening. @default {startScript's} */
  timeoutMs?: number;
  /** With `--quiet` (no line per file served); off where those lines are the figures. @default {true} */
  quiet?: boolean;
}

/**
 * Starts a `p2p/peer.ts` (quiet unless told) sharing `dir`, serving on a free port and
 * talking to the tracker at 127.0.0.1:`trackerPort`, with the permissions
 * its mode needs.
 *
 * @example
 * ```ts
 * import { startBenchPeer, startBenchTracker } from "./servers.ts";
 * await using tracker = await startBenchTracker();
 * await using peer = await startBenchPeer(tracker.port, "/tmp/share", { interval: 1 });
 * ```
 */
export function startBenchPeer(
  trackerPort: number,
  dir: string,
  options: BenchPeerOptions,
): Promise<Script> {
  const mode = options.mode ?? "async";
  return startScript("p2p/peer.ts", [
    "127.0.0.1",
    String(trackerPort),
    "--dir",
    dir,
    "--host",
    options.host ?? "127.0.0.1",
    "--port",
    "0",
    "--interval",
    String(options.interval),
    ...(options.mode === undefined ? [] : ["--mode", options.mode]),
    ...(options.quiet === false ? [] : ["--quiet"]),
  ], { permissions: peerPermissions(dir, mode), timeoutMs: options.timeoutMs });
}

/** How many files a peer's folder shares: hidden ones (temp files, the peer's state) left out. */
export function countShared(dir: string): number {
  let n = 0;
  for (const entry of Deno.readDirSync(dir)) if (!entry.name.startsWith(".")) n++;
  return n;
}

/**
 * A file under `/proc`, read through `cat`: Deno lets a script read `/proc`
 * only with `--allow-all`, while `cat` needs no more than `--allow-run`.
 * Asynchronous, so timings taken meanwhile do not stall.
 */
export async function readProc(path: string): Promise<string> {
  const out = await new Deno.Command("cat", { args: [path], stdout: "piped" }).output();
  if (!out.success) throw new Error(`cannot read ${path}`);
  return new TextDecoder().decode(out.stdout);
}

/** Peak resident memory (VmHWM) of one live process, in MiB (not rounded). */
export async function peakRssMiB(pid: number): Promise<number> {
  const status = await readProc(`/proc/${pid}/status`);
  return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

/** The kernel's clock ticks per second (`getconf CLK_TCK`), which `/proc/PID/stat` counts in. */
export function clockTicksPerSecond(): number {
  try {
    const out = new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped" }).outputSync();
    const value = Number(new TextDecoder().decode(out.stdout).trim());
    return value > 0 ? value : 100;
  } catch {
    return 100; // Linux's usual value
  }
}

/** CPU seconds (user + system) a live process has used so far. */
export async function cpuSeconds(
  pid: number,
  ticksPerSecond = clockTicksPerSecond(),
): Promise<number> {
  const stat = await readProc(`/proc/${pid}/stat`);
  // Fields after the command name, which is in parentheses and may hold spaces.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime, fields 14 and 15 of stat(5).
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}
