/**
 * The tracker's status page in a real browser: a tracker with two peers,
 * opened in headless Chromium (Debian's `chromium`), must show both peers
 * and their files; left open, it must show a third peer that joins without
 * reloading (driven over Chromium's DevTools protocol, a WebSocket). A
 * screenshot is saved to `tests/tmp/status_page.png`, and one of the page
 * after the live update to `tests/tmp/status_page_live.png`. Skips, saying
 * why, where Chromium is missing or cannot start.
 */

import assert from "node:assert/strict";
import { projectPath } from "./helpers.ts";
import { CHROMIUM_FLAGS, runChromium, whyNoChromium } from "./browser.ts";
import {
  putFile,
  startPeerScript,
  startTrackerScript,
  tempFolder,
  waitUntil,
} from "./p2p_helpers.ts";

/** A page open in a headless Chromium that a test drives over the DevTools protocol. */
interface BrowserPage extends AsyncDisposable {
  /** The value of a JavaScript expression in the page. */
  evaluate(expression: string): Promise<unknown>;
  /** A PNG of the page as it is now. */
  screenshot(): Promise<Uint8Array>;
}

/**
 * Opens `url` in a headless Chromium with remote debugging on a free port,
 * and connects to the page's DevTools WebSocket. Disposing closes the
 * socket, stops Chromium and removes its profile.
 */
async function openPage(url: string): Promise<BrowserPage> {
  const profile = await tempFolder("chromium_profile_");
  const child = new Deno.Command("chromium", {
    args: [
      ...CHROMIUM_FLAGS,
      `--user-data-dir=${profile.path}`,
      "--remote-debugging-port=0",
      "--remote-allow-origins=*",
      "--window-size=1200,900",
      url,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  // Chromium says where its DevTools listen on stderr; the rest of stderr is read and dropped.
  const stderr = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let said = "";
  const drained = (async () => {
    for (let r = await stderr.read(); !r.done; r = await stderr.read()) said += r.value;
  })();
  let ws: WebSocket | null = null;
  const stop = async () => {
    if (ws && ws.readyState !== WebSocket.CLOSED) {
      const closed = new Promise((resolve) => ws!.addEventListener("close", resolve));
      ws.close();
      await closed;
    }
    try {
      child.kill("SIGTERM");
    } catch {
      // It has exited already.
    }
    await child.status;
    await drained;
    await profile[Symbol.asyncDispose]();
  };
  try {
    await waitUntil(() => /DevTools listening on ws:/.test(said), 30_000, "Chromium's DevTools");
    const port = /DevTools listening on ws:\/\/[^:]+:(\d+)\//.exec(said)![1];
    let target: { type: string; webSocketDebuggerUrl: string } | undefined;
    await waitUntil(
      async () => {
        const list = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
        target = list.find((t: { type: string }) => t.type === "page");
        return target !== undefined;
      },
      30_000,
      "the page's DevTools target",
    );
    ws = new WebSocket(target!.webSocketDebuggerUrl);
    await new Promise((resolve, reject) => {
      ws!.addEventListener("open", resolve);
      ws!.addEventListener("error", () => reject(new Error("DevTools WebSocket failed")));
    });
  } catch (err) {
    await stop();
    throw err;
  }
  // One command at a time is all a test needs: each reply is matched by its id.
  let nextId = 0;
  const call = (method: string, params: Record<string, unknown> = {}) => {
    const id = ++nextId;
    return new Promise<Record<string, unknown>>((resolve, reject) => {
      const onMessage = (event: MessageEvent) => {
        const reply = JSON.parse(event.data);
        if (reply.id !== id) return;
        ws!.removeEventListener("message", onMessage);
        if (reply.error) reject(new Error(`${method}: ${JSON.stringify(reply.error)}`));
        else resolve(reply.result);
      };
      ws!.addEventListener("message", onMessage);
      ws!.send(JSON.stringify({ id, method, params }));
    });
  };
  return {
    async evaluate(expression) {
      const result = await call("Runtime.evaluate", { expression, returnByValue: true });
      return (result.result as { value?: unknown }).value;
    },
    async screenshot() {
      const result = await call("Page.captureScreenshot", { format: "png" });
      return Uint8Array.from(atob(result.data as string), (c) => c.charCodeAt(0));
    },
    [Symbol.asyncDispose]: stop,
  };
}

/** Why the browser test cannot run here, or `null` when Chromium starts. */
const cannotRun = await whyNoChromium();

Deno.test({
  name: `the tracker's status page shows live peers and their files in headless Chromium${
    cannotRun ? ` (skipped: ${cannotRun})` : ""
  }`,
  ignore: cannotRun !== null,
  async fn(t) {
    await using dirA = await tempFolder();
    await using dirB = await tempFolder();
    await putFile(
      dirA.path,
      "notes-from-a.txt",
      new TextEncoder().encode("alpha\n"),
      1_700_000_000,
    );
    await putFile(dirB.path, "photo-from-b.bin", new Uint8Array(5000).fill(7), 1_700_000_100);
    await using tracker = await startTrackerScript();
    const statusLine = await tracker.waitFor(/status page on http:\/\/\S+\//);
    const url = /status page on (http:\/\/\S+\/)/.exec(statusLine)![1];
    await using peerA = await startPeerScript(dirA.path, tracker.port);
    await using peerB = await startPeerScript(dirB.path, tracker.port, { mode: "worker" });
    await waitUntil(
      async () => {
        const stats = await (await fetch(`${url}stats`)).json();
        return stats.peers?.length === 2 && Object.keys(stats.directory ?? {}).length === 2;
      },
      15_000,
      "two peers with two files at the tracker",
    );

    await t.step("the page lists both peers and both files", async () => {
      const page = await runChromium(["--dump-dom", url]);
      assert.ok(page.ok, page.stderr);
      assert.match(page.stdout, /notes-from-a\.txt/);
      assert.match(page.stdout, /photo-from-b\.bin/);
      for (const peer of [peerA, peerB]) {
        const port = /listening on \S+:(\d+)/.exec(
          peer.lines.find((l) => /listening on/.test(l))!,
        )![1];
        assert.match(page.stdout, new RegExp(`127\\.0\\.0\\.1:${port}`));
      }
    });

    await t.step("a screenshot is saved", async () => {
      await Deno.mkdir(projectPath("tests/tmp"), { recursive: true });
      const file = projectPath("tests/tmp/status_page.png");
      const shot = await runChromium(["--window-size=1200,800", `--screenshot=${file}`, url]);
      assert.ok(shot.ok, shot.stderr);
      const png = await Deno.readFile(file);
      assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]); // "PNG"
      assert.ok(png.length > 5000, `screenshot is only ${png.length} bytes`);
    });

    await t.step("left open, the page shows a peer that joins, without reloading", async () => {
      await using page = await openPage(url);
      const text = () => page.evaluate(`document.getElementById("live")?.innerText ?? ""`);
      await waitUntil(
        async () => /notes-from-a\.txt/.test(String(await text())),
        30_000,
        "the page to load",
      );
      // Set once by the page's script as it loads: a reload would set it again.
      const loadedAt = await page.evaluate("window.statusLoadedAt");
      assert.equal(typeof loadedAt, "number", "the page's live script ran");

      await using dirC = await tempFolder();
      await putFile(
        dirC.path,
        "late-from-c.txt",
        new TextEncoder().encode("gamma\n"),
        1_700_000_200,
      );
      await using peerC = await startPeerScript(dirC.path, tracker.port);
      const port = /listening on \S+:(\d+)/.exec(await peerC.waitFor(/listening on/))![1];
      await waitUntil(
        async () => {
          const shown = String(await text());
          return shown.includes(`127.0.0.1:${port}`) && shown.includes("late-from-c.txt");
        },
        30_000,
        "the third peer and its file on the open page",
      );
      assert.equal(
        await page.evaluate("window.statusLoadedAt"),
        loadedAt,
        "the page did not reload",
      );
      assert.equal(await page.evaluate(`performance.getEntriesByType("navigation").length`), 1);
      assert.ok(Number(await page.evaluate("window.statusUpdates")) >= 1, "updates came by events");

      const file = projectPath("tests/tmp/status_page_live.png");
      const png = await page.screenshot();
      await Deno.writeFile(file, png);
      assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]); // "PNG"
    });
  },
});
