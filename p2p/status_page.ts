/**
 * The tracker's status page (beyond the handout): what a person sees at
 * `http://127.0.0.1:9001/`, live peers and their files, the downloads our
 * peers report in progress with their rate, then the directory and, when
 * peers with the "versions" extension are around, each path's current
 * version, conflict copies and deletion; and the same data as JSON at
 * `/stats` for a program. The page keeps itself up to date without
 * reloading: a few lines of script take the page's body again from
 * `/events` (server-sent events, {@linkcode StatusEvents}) whenever it
 * changes. The rest is pure: it turns a {@linkcode TrackerStats} snapshot
 * into a `Response`; `tracker.ts` serves it with `Deno.serve`.
 *
 * @example
 * ```ts
 * import { statusResponse } from "./status_page.ts";
 * import type { TrackerStats } from "./tracker_state.ts";
 * declare const stats: TrackerStats;
 * Deno.serve({ port: 9001 }, (request) => statusResponse(request, stats));
 * ```
 * @module
 */

import { formatBytes } from "../lib/log.ts";
import { hostPort, type TrackerStats } from "./tracker_state.ts";

/**
 * Names the HTML page lists per table (and per peer): a page of 100,000
 * files would be tens of megabytes, reloaded every 5 s. The rest is
 * counted ("and 99,500 more"); `/stats?full` has everything.
 */
export const PAGE_LIST_LIMIT = 500; // names

/**
 * Items `/stats` lists per list (the directory, the paths, each peer's
 * files) unless asked for `/stats?full`: its `truncated` field then says
 * how many were left out of each.
 */
export const STATS_LIST_LIMIT = 10_000; // items

/**
 * `stats` with each list cut to `limit` items, and how many were left out
 * of each (by list name; a peer's files as `peer ip:port`).
 */
export function capStats(
  stats: TrackerStats,
  limit: number,
): TrackerStats & { truncated?: Record<string, number> } {
  const truncated: Record<string, number> = {};
  const names = Object.keys(stats.directory);
  const directory = names.length <= limit
    ? stats.directory
    : Object.fromEntries(names.slice(0, limit).map((n) => [n, stats.directory[n]]));
  if (names.length > limit) truncated.directory = names.length - limit;
  if (stats.paths.length > limit) truncated.paths = stats.paths.length - limit;
  const peers = stats.peers.map((p) => {
    if (p.files.length <= limit) return p;
    truncated[`peer ${hostPort(p)}`] = p.files.length - limit;
    return { ...p, files: p.files.slice(0, limit) };
  });
  const capped = { ...stats, peers, directory, paths: stats.paths.slice(0, limit) };
  return Object.keys(truncated).length === 0 ? stats : { ...capped, truncated };
}

/** `items` joined, at most `limit` of them, then how many more there are. */
function firstOf(items: string[], limit: number, join: string, more: (n: number) => string) {
  if (items.length <= limit) return items.join(join);
  return items.slice(0, limit).join(join) + join + more(items.length - limit);
}

/**
 * Escapes text for HTML: file names come from peers and may hold markup.
 *
 * @example
 * ```ts
 * import { escapeHtml } from "./status_page.ts";
 * escapeHtml("<img>"); // "&#60;img&#62;"
 * ```
 */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * Answers one request to the status page: `/` the HTML page, `/stats` the
 * JSON, `/events` the page's live updates (only given `events`), anything
 * else 404, any method but GET and HEAD 405. `stats` is a snapshot, or the
 * function that takes one (called only when a page or JSON is asked for).
 *
 * @example
 * ```ts
 * import { statusResponse } from "./status_page.ts";
 * import type { TrackerStats } from "./tracker_state.ts";
 * declare const stats: TrackerStats;
 * statusResponse(new Request("http://127.0.0.1:9001/stats"), stats).status; // 200
 * ```
 */
export function statusResponse(
  request: Request,
  snapshot: TrackerStats | (() => TrackerStats),
  events?: StatusEvents,
): Response {
  const path = new URL(request.url).pathname;
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response("only GET here\n", { status: 405, headers: { allow: "GET, HEAD" } });
  }
  if (path === "/events" && events) return events.respond(request);
  const stats = typeof snapshot === "function" ? snapshot() : snapshot;
  if (path === "/stats") {
    const full = new URL(request.url).searchParams.has("full");
    const shown = full ? stats : capStats(stats, STATS_LIST_LIMIT);
    return new Response(JSON.stringify(shown, null, 2) + "\n", {
      headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" },
    });
  }
  if (path === "/") {
    return new Response(statusPage(stats), {
      headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" },
    });
  }
  return new Response("not found: try /, /stats or /events\n", { status: 404 });
}

/**
 * The page a person reads: {@linkcode statusBody} in a page whose script
 * replaces that body with each update from `/events`, so that it stays
 * live without reloading. Without script it reloads every 5 s instead.
 *
 * @example
 * ```ts
 * import { statusPage } from "./status_page.ts";
 * import type { TrackerStats } from "./tracker_state.ts";
 * declare const stats: TrackerStats;
 * const html = statusPage(stats); // "<!doctype html>..."
 * ```
 */
export function statusPage(stats: TrackerStats): string {
  return `<!doctype html>
<html><head><meta charset="utf-8">
<noscript><meta http-equiv="refresh" content="5"></noscript>
<title>P2P tracker ${escapeHtml(stats.addr)}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}
#live-note{color:#666}progress{width:8em}</style></head>
<body><p id="live-note">Live: this page updates itself (server-sent events from
<a href="/events">/events</a>); the same data as JSON is at <a href="/stats">/stats</a>.</p>
<div id="live">
${statusBody(stats)}</div>
<script>
// Each event carries the whole body again (escaped by the tracker): put it in place, no reload.
// statusLoadedAt and statusUpdates let a test see that the page was loaded once and updated since.
window.statusLoadedAt = Date.now();
window.statusUpdates = 0;
const live = document.getElementById("live");
const note = document.getElementById("live-note");
const source = new EventSource("/events");
source.addEventListener("status", (event) => {
  live.innerHTML = event.data;
  window.statusUpdates++;
  note.firstChild.textContent = "Live (updated " + new Date().toLocaleTimeString() + "): this page updates itself (server-sent events from ";
});
// EventSource reconnects by itself (after the tracker restarts, say); say so meanwhile.
source.addEventListener("error", () => {
  note.firstChild.textContent = "Not connected, retrying: this page updates itself (server-sent events from ";
});
</script>
</body></html>
`;
}

/**
 * What the status page shows, without the page around it (what `/events`
 * sends): live peers and their files, downloads in progress, the
 * directory, versions, counters. Names are escaped.
 *
 * @example
 * ```ts
 * import { statusBody } from "./status_page.ts";
 * import type { TrackerStats } from "./tracker_state.ts";
 * declare const stats: TrackerStats;
 * const html = statusBody(stats); // "<h1>P2P tracker on ..."
 * ```
 */
export function statusBody(stats: TrackerStats): string {
  const e = escapeHtml;
  const time = (seconds: number) => new Date(seconds * 1000).toISOString().replace(".000Z", "Z");
  const peerRows = stats.peers.map((p) =>
    `<tr><td>${e(hostPort(p))}</td><td>${p.secondsSinceLastSeen.toFixed(1)} s ago</td>` +
    `<td>${p.secondsToExpiry.toFixed(1)} s</td><td>${p.messages}</td>` +
    `<td>${
      p.files.length === 0 ? "<i>none</i>" : firstOf(
        p.files.slice(0, PAGE_LIST_LIMIT + 1).map((f) => e(f.name)),
        PAGE_LIST_LIMIT,
        ", ",
        () => `<i>and ${p.files.length - PAGE_LIST_LIMIT} more</i>`,
      )
    }</td></tr>`
  ).join("\n");
  const directoryNames = Object.keys(stats.directory);
  const moreRow = (n: number, columns: number) =>
    `<tr><td colspan="${columns}"><i>and ${n} more (see <a href="/stats?full">/stats?full</a>)</i></td></tr>`;
  const fileRows = directoryNames.slice(0, PAGE_LIST_LIMIT).map((name) =>
    [
      name,
      stats.directory[name],
    ] as const
  ).map(([name, d]) =>
    `<tr><td>${e(name)}</td><td>${e(time(d.mtime))}</td>` +
    `<td>${d.size === undefined ? "?" : d.size}</td><td>${e(hostPort(d))}</td>` +
    `<td>${(d.holders ?? []).slice(1).map((h) => e(hostPort(h))).join(", ")}</td></tr>`
  ).join("\n") +
    (directoryNames.length > PAGE_LIST_LIMIT
      ? "\n" + moreRow(directoryNames.length - PAGE_LIST_LIMIT, 5)
      : "");
  const short = (sha: string) => e(sha.slice(0, 8));
  const pathRows =
    stats.paths.slice(0, PAGE_LIST_LIMIT).map((p) =>
      `<tr><td>${e(p.name)}</td><td>${
        p.current
          ? `${short(p.current.sha256)} by ${e(p.current.by || "?")}, ${e(time(p.current.mtime))}`
          : "<i>none</i>"
      }</td><td>${p.current ? p.current.holders : ""}</td><td>${
        p.copies.map((c) => `${short(c.sha256)} as ${e(c.name)}`).join("<br>")
      }</td><td>${
        p.deleted
          ? `${short(p.deleted.sha256)} by ${e(p.deleted.by || "?")}, ${e(time(p.deleted.time))}`
          : ""
      }</td></tr>`
    ).join("\n") +
    (stats.paths.length > PAGE_LIST_LIMIT
      ? "\n" + moreRow(stats.paths.length - PAGE_LIST_LIMIT, 5)
      : "");
  // Only peers with the "versions" extension make records: a course-only swarm sees no such table.
  const versions = stats.paths.length === 0 ? "" : `<h2>Versions (${stats.paths.length} paths)</h2>
<p>${stats.paths.filter((p) => p.copies.length > 0).length} with conflict copies,
${stats.paths.filter((p) => p.deleted).length} deleted (tombstones).</p>
<table><tr><th>path</th><th>current version</th><th>live holders</th><th>conflict copies</th>` +
    `<th>deleted</th></tr>
${pathRows}
</table>
`;
  const c = stats.counters;
  return `<h1>P2P tracker on ${e(stats.addr)}</h1>
<p>Up since ${e(stats.startedAt)}. A peer expires after ${stats.peerTimeoutSeconds} s of silence,
checked every ${stats.sweepIntervalSeconds} s.</p>
<h2>Live peers (${stats.peers.length})</h2>
<table><tr><th>peer (ip:port)</th><th>last seen</th><th>expires in</th><th>messages</th><th>files</th></tr>
${peerRows}
</table>
${transfersTable(stats)}
<h2>Directory (${directoryNames.length} files)</h2>
<table><tr><th>name</th><th>mtime</th><th>bytes</th><th>fetch from</th><th>also held by</th></tr>
${fileRows}
</table>
${versions}<h2>Counters</h2>
<p>${c.connections} connections (${c.openConnections} open), ${c.messages} messages
(${c.fileLists} with file lists, ${c.keepAlives} keep-alives), ${c.responses} directory responses,
${c.peersJoined} peers joined, ${c.peersExpired} expired, ${c.rejected} connections rejected,
${c.unsafeNames} unsafe file names ignored, ${c.silentClosed} silent connections closed,
${c.sendTimeouts} closed for not reading, ${c.portChanges} peers replaced by another port of theirs;
versions: ${c.conflicts} conflicts, ${c.deletions} deletions, ${c.revivals} revivals.
Big folders: ${c.listParts} parts of file lists taken, ${c.pages} directory pages sent.</p>
`;
}

/**
 * The downloads our peers reported in their last KeepAlive (extension
 * "transfers"): who fetches what from whom, how far, how fast.
 */
function transfersTable(stats: TrackerStats): string {
  const e = escapeHtml;
  const rows = stats.peers.flatMap((p) =>
    (p.transfers ?? []).map((t) =>
      `<tr><td>${e(hostPort(p))}</td><td>${e(t.name)}</td><td>${e(t.from)}</td>` +
      `<td><progress max="${t.size}" value="${t.bytes}"></progress> ` +
      `${formatBytes(t.bytes)} of ${formatBytes(t.size)}` +
      `${t.size > 0 ? ` (${Math.floor((t.bytes / t.size) * 100)}%)` : ""}</td>` +
      `<td>${formatRate(t.rate)}</td><td>${t.secondsAgo.toFixed(1)} s ago</td></tr>`
    )
  );
  const table = rows.length === 0
    ? "<p><i>none reported</i> (our peers report their downloads while they run; the course's peers do not)</p>"
    : `<table><tr><th>peer</th><th>file</th><th>from</th><th>received</th><th>rate</th>` +
      `<th>reported</th></tr>\n${rows.join("\n")}\n</table>`;
  return `<h2>Transfers in progress (${rows.length})</h2>\n${table}`;
}

/** A rate a person reads: `512 B/s`, `3.0 MiB/s`. */
function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(Math.round(bytesPerSecond))}/s`;
}

/** Shortest time between two looks at the tracker for `/events`. */
export const EVENT_TICK_MS = 1000; // milliseconds
/**
 * A comment line is sent to every viewer at least this often, so that a
 * viewer that went away is noticed (a write fails) even when nothing changes.
 */
export const EVENT_PING_MS = 15_000; // milliseconds
/** Viewers of `/events` at once; more are answered 503 (each costs a connection and a copy). */
export const MAX_EVENT_VIEWERS = 64; // connections

const encoder = new TextEncoder();

/** One `/events` viewer: its stream, and the body it was last sent. */
interface Viewer {
  stream: ReadableStreamDefaultController<Uint8Array>;
  sent: string;
}

/**
 * The status page's live updates (`/events`, server-sent events): every
 * tick, while someone watches, one snapshot is taken and rendered
 * ({@linkcode statusBody}), and sent as an event `status` to each viewer
 * whose copy differs. Each event is the whole body, so a viewer that is
 * slow to read misses nothing by skipping one: it is sent the newest body
 * once it has taken the last, and never more than one is queued for it.
 * A tick waits at least ten times as long as rendering took, so a huge
 * directory cannot keep the tracker busy rendering.
 *
 * @example
 * ```ts
 * import { StatusEvents, statusResponse } from "./status_page.ts";
 * import type { TrackerStats } from "./tracker_state.ts";
 * declare const stats: () => TrackerStats;
 * const events = new StatusEvents(stats);
 * const server = Deno.serve({ port: 9001 }, (request) => statusResponse(request, stats, events));
 * // On the way out: end the streams first, or shutdown() waits for them.
 * events.close();
 * await server.shutdown();
 * ```
 */
export class StatusEvents {
  #stats: () => TrackerStats;
  #viewers = new Set<Viewer>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #lastPing = 0;
  #closed = false;

  /** Updates from `stats`, taken only while someone watches. */
  constructor(stats: () => TrackerStats) {
    this.#stats = stats;
  }

  /** Viewers connected now. */
  get viewers(): number {
    return this.#viewers.size;
  }

  /** The event stream for one viewer: the current body at once, then each change. */
  respond(request: Request): Response {
    if (this.#closed || this.#viewers.size >= MAX_EVENT_VIEWERS) {
      return new Response("too many viewers, or stopping: try again later\n", { status: 503 });
    }
    const headers = {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store",
    };
    if (request.method === "HEAD") return new Response(null, { headers });
    let viewer: Viewer;
    const body = new ReadableStream<Uint8Array>({
      start: (stream) => {
        viewer = { stream, sent: "" };
        this.#viewers.add(viewer);
        // First how long a browser waits before reconnecting after the stream ends, then the body.
        this.#send(viewer, statusBody(this.#stats()), "retry: 2000\n\n");
        this.#schedule();
      },
      // The viewer went away (Deno.serve cancels the body): stop feeding it.
      cancel: () => this.#drop(viewer),
    });
    return new Response(body, { headers });
  }

  /** Ends every stream and stops the ticks: call it before `Deno.serve`'s `shutdown()`. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const viewer of this.#viewers) {
      try {
        viewer.stream.close();
      } catch {
        // Already closed or errored: nothing to end.
      }
    }
    this.#viewers.clear();
  }

  #drop(viewer: Viewer): void {
    this.#viewers.delete(viewer);
    if (this.#viewers.size === 0) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }

  /** The next tick, unless one is set or nobody watches. */
  #schedule(delay = EVENT_TICK_MS): void {
    if (this.#timer !== undefined || this.#viewers.size === 0 || this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#tick();
    }, delay);
  }

  /** One look: render once, send to each viewer that is ready and has an older body. */
  #tick(): void {
    const started = performance.now();
    const body = statusBody(this.#stats());
    const ping = started - this.#lastPing >= EVENT_PING_MS;
    if (ping) this.#lastPing = started;
    for (const viewer of this.#viewers) {
      if (viewer.sent !== body) this.#send(viewer, body);
      else if (ping) this.#enqueue(viewer, ": ping\n\n");
    }
    this.#schedule(Math.max(EVENT_TICK_MS, 10 * (performance.now() - started)));
  }

  /** Sends `body` as one `status` event, unless the viewer has not taken the last one yet. */
  #send(viewer: Viewer, body: string, before = ""): void {
    if ((viewer.stream.desiredSize ?? 0) <= 0) return;
    // An event's data is its lines, each after "data: "; the browser joins them with "\n".
    const data = body.split(/\r\n|\r|\n/).map((line) => `data: ${line}\n`).join("");
    if (this.#enqueue(viewer, `${before}event: status\n${data}\n`)) viewer.sent = body;
  }

  /** Queues text on a viewer's stream; a stream that is gone drops the viewer. */
  #enqueue(viewer: Viewer, text: string): boolean {
    try {
      viewer.stream.enqueue(encoder.encode(text));
      return true;
    } catch {
      this.#drop(viewer);
      return false;
    }
  }
}
