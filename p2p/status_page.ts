/**
 * The tracker's status page (beyond the handout): what a person sees at
 * `http://127.0.0.1:9001/`, live peers and their files, then the directory
 * and, when peers with the "versions" extension are around, each path's
 * current version, conflict copies and deletion; and the same data as JSON
 * at `/stats` for a program. Pure: it turns a
 * {@linkcode TrackerStats} snapshot into a `Response`; `tracker.ts` serves it
 * with `Deno.serve`.
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
 * JSON, anything else 404, any method but GET and HEAD 405.
 *
 * @example
 * ```ts
 * import { statusResponse } from "./status_page.ts";
 * import type { TrackerStats } from "./tracker_state.ts";
 * declare const stats: TrackerStats;
 * statusResponse(new Request("http://127.0.0.1:9001/stats"), stats).status; // 200
 * ```
 */
export function statusResponse(request: Request, stats: TrackerStats): Response {
  const path = new URL(request.url).pathname;
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response("only GET here\n", { status: 405, headers: { allow: "GET, HEAD" } });
  }
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
  return new Response("not found: try / or /stats\n", { status: 404 });
}

/**
 * The page a person reads: live peers and their files, then the directory.
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
<table><tr><th>path</th><th>current version</th><th>live holders</th><th>conflict copies</th>` +
    `<th>deleted</th></tr>
${pathRows}
</table>
`;
  const c = stats.counters;
  return `<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>P2P tracker ${e(stats.addr)}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}</style></head>
<body><h1>P2P tracker on ${e(stats.addr)}</h1>
<p>Up since ${e(stats.startedAt)}. A peer expires after ${stats.peerTimeoutSeconds} s of silence,
checked every ${stats.sweepIntervalSeconds} s. This page reloads every 5 s; the same data as JSON is at
<a href="/stats">/stats</a>.</p>
<h2>Live peers (${stats.peers.length})</h2>
<table><tr><th>peer (ip:port)</th><th>last seen</th><th>expires in</th><th>messages</th><th>files</th></tr>
${peerRows}
</table>
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
</body></html>
`;
}
