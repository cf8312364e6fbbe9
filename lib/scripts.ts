/**
 * Runs the project's scripts the way a student runs them (`deno run` with
 * explicit permissions, from the project folder) and follows their output:
 * wait for the "listening on HOST:PORT" line, read the port, stop with a
 * signal. The tests, the lab walk-through and the benchmark all use it.
 *
 * @example
 * ```ts
 * import { startScript } from "./scripts.ts";
 * await using echo = await startScript("echo_server.ts", ["--port", "0"]);
 * console.log(`echo server on port ${echo.port}`);
 * ```
 * @module
 */

/** The project's root folder, where the scripts live. */
export const ROOT = new URL("../", import.meta.url);

/** Absolute path of a file in the project. */
export function projectPath(relative: string): string {
  return decodeURIComponent(new URL(relative, ROOT).pathname);
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
export function startScript(
  script: string,
  args: string[],
  options: { permissions?: readonly string[]; waitForListening?: boolean; timeoutMs?: number } = {},
): Promise<Script> {
  return startCommand(
    Deno.execPath(),
    ["run", "--quiet", ...(options.permissions ?? ["--allow-net"]), script, ...args],
    { ...options, label: script },
  );
}

/**
 * Like {@linkcode startScript} for any program: a Python peer, or `deno`
 * run through `ip netns exec`. Runs `command args` from the project root and,
 * unless `waitForListening` is false, waits for its "listening on" line.
 *
 * @example
 * ```ts
 * import { startCommand } from "./scripts.ts";
 * await using peer = await startCommand("python3", ["peer.py", "127.0.0.1", "9000"]);
 * ```
 */
export async function startCommand(
  command: string,
  args: string[],
  options: { waitForListening?: boolean; timeoutMs?: number; label?: string } = {},
): Promise<Script> {
  const script = options.label ?? command;
  const process = new Deno.Command(command, {
    args,
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
  options: { permissions?: readonly string[]; stdin?: Uint8Array } = {},
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

/** Whether a command is on the PATH (for steps and tests that need a Debian tool). */
export function haveCommand(name: string): boolean {
  try {
    return new Deno.Command("sh", { args: ["-c", `command -v ${name}`], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/**
 * A loopback port that was free a moment ago, for a program that must be
 * told its port (socat, or a server restarted on the same port). Another
 * process could take it in between; callers that can, should bind port 0.
 */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}
