/**
 * The peer's step 3 (handout 002, peer to tracker): with the directory in
 * hand, decide which files to fetch and from whom. A pure function of plain
 * data: the directory, this peer's versions, its own address as the tracker
 * sees it, and what it remembers from earlier rounds (downloads in flight or
 * queued, holders that failed lately, skips already reported). No sockets,
 * no files, no clock: the caller passes `now`. Step 4 (`fetch.ts`) carries
 * the decisions out.
 *
 * The rules today:
 * - a file is fetched when this peer lacks it or holds an older mtime
 *   (whole seconds: the newest mtime wins);
 * - an entry whose name is not a safe shared path (one with `/` only when
 *   the tracker accepted "paths"), or whose mtime is past
 *   {@linkcode MAX_MTIME_SECONDS}, is skipped, and reported once;
 * - an entry the ignore rules (`ignore.ts`) leave out is never fetched or
 *   deleted, and reported once (once per ignored folder);
 * - the holders of the newest version are tried in the directory's order,
 *   this peer itself left out, holders that failed lately last.
 *
 * @example
 * ```ts
 * import { planDownloads } from "./plan.ts";
 * const plan = planDownloads({
 *   directory: { "a.txt": { ip: "10.0.0.2", port: 8001, mtime: 1700000000 } },
 *   local: new Map(),
 *   self: "10.0.0.3:8000",
 *   inFlight: new Set(),
 *   queued: new Set(),
 *   badHolders: new Map(),
 *   warned: new Set(),
 *   now: Date.now(),
 * });
 * plan.log; // ["fetching a.txt (missing here) from 10.0.0.2:8001"]
 * ```
 * @module
 */

import { preview } from "../lib/log.ts";
import { formatAddr } from "../lib/net.ts";
import { refusalReason } from "./files.ts";
import { type Ignored, ignoreNote, IgnoreRules } from "./ignore.ts";
import {
  type DeletedEntry,
  type Directory,
  type DirectoryEntry,
  MAX_MTIME_SECONDS,
} from "./protocol.ts";
import { planPath, type Version } from "./versions.ts";

/** A holder that failed is tried last for this long. */
export const BAD_HOLDER_MS = 30_000; // milliseconds

/** A holder to fetch from. */
export interface Source {
  /** Its IP address as the tracker gave it (an IPv6 one perhaps in brackets). */
  ip: string;
  /** Its file-serving port. */
  port: number;
  /** The peer-to-peer extensions it accepted ("range", "pipeline"), as the directory says. */
  features?: readonly string[];
}

/** A file to fetch: the directory's entry, the holders to try in order, and our copy's mtime. */
export interface Wanted {
  /** The directory's entry for the name: the version to fetch. */
  entry: DirectoryEntry;
  /** The holders to try, in order; never empty. */
  sources: Source[];
  /** Our copy's whole-second mtime when the fetch was planned; `null`: we had none. */
  localMtime: number | null;
  /** Planned by content (the "versions" extension): a newer-looking local mtime does not stop it. */
  byContent?: boolean;
}

/** A set of names as the plan reads it: a `Set` of names, or a `Map` keyed by name. */
export interface Names {
  /** Whether `name` is in it. */
  has(name: string): boolean;
}

/** Everything {@linkcode planDownloads} decides from, as plain data. */
export interface PlanInput {
  /** The tracker's directory, parsed. */
  directory: Directory;
  /** This peer's versions: file name to whole-second mtime (see {@linkcode localVersions}). */
  local: ReadonlyMap<string, number>;
  /** This peer's own `ip:port` as the tracker sees it (never fetch from ourselves), if known. */
  self: string | undefined;
  /** Names being downloaded now: left alone until they finish. */
  inFlight: Names;
  /** Names queued by the previous plan: planned again, but not reported again. */
  queued: Names;
  /** Holders that failed: `ip:port` (as {@linkcode sourceName} writes it) to when, in ms. */
  badHolders: ReadonlyMap<string, number>;
  /** Skips already reported, as {@linkcode warningKey} writes them. */
  warned: ReadonlySet<string>;
  /** The time now, in the same milliseconds as `badHolders` (`Date.now()`). */
  now: number;
  /**
   * The tracker accepted the "paths" extension: names with `/` are relative
   * paths to sync. Otherwise they are skipped (the course's tracker passes
   * any name on). @default {false}
   */
  paths?: boolean;
  /** This peer's ignore rules (`.p2pignore`). @default {IgnoreRules.DEFAULT} */
  ignore?: IgnoreRules;
}

/** One directory entry the plan will not act on. */
export interface Skipped {
  /** The name as the directory gave it (show it with `preview`, it may hold anything). */
  name: string;
  /** Why it is skipped. */
  reason: string;
}

/** What {@linkcode planDownloads} decided. */
export interface Plan {
  /** The files to fetch, in the directory's order: the whole queue, replacing the last one. */
  fetch: Map<string, Wanted>;
  /** Every entry skipped this round, and why. */
  skipped: Skipped[];
  /** The decisions worth a log line, in the directory's order: new fetches and new skips. */
  log: string[];
  /** Skips reported for the first time: add them to `warned` for the next round. */
  warned: string[];
}

/**
 * This peer's versions: its listing, and downloads finished since the
 * listing started (the listing may have missed them), the newer mtime of the
 * two winning.
 *
 * @example
 * ```ts
 * import { localVersions } from "./plan.ts";
 * localVersions([{ name: "a.txt", mtime: 5 }], new Map([["a.txt", 9]])); // Map { "a.txt" => 9 }
 * ```
 */
export function localVersions(
  files: readonly { name: string; mtime: number }[],
  recent: ReadonlyMap<string, number>,
): Map<string, number> {
  const have = new Map(files.map((f) => [f.name, f.mtime]));
  for (const [name, mtime] of recent) have.set(name, Math.max(mtime, have.get(name) ?? 0));
  return have;
}

/**
 * Decides what to fetch: every entry that is safe, newer there than here
 * (or missing here), not being downloaded now, and held by someone other
 * than this peer. Pure: the same input gives the same plan.
 *
 * @example
 * ```ts
 * import { planDownloads } from "./plan.ts";
 * const plan = planDownloads({
 *   directory: { "../x": { ip: "10.0.0.2", port: 8001, mtime: 1 } },
 *   local: new Map(), self: undefined, inFlight: new Set(), queued: new Set(),
 *   badHolders: new Map(), warned: new Set(), now: 0,
 * });
 * plan.fetch.size; // 0
 * plan.skipped[0].name; // "../x"
 * ```
 */
export function planDownloads(input: PlanInput): Plan {
  const fetch = new Map<string, Wanted>();
  const skipped: Skipped[] = [];
  const log: string[] = [];
  const warned: string[] = [];
  const skip = skipper({ skipped, log, warned }, input.warned);
  for (const [name, entry] of Object.entries(input.directory)) {
    if (skip(name, entry, input)) continue;
    // mtimes are whole seconds on the wire; a peer sending fractions must not cause refetches.
    const theirs = Math.floor(entry.mtime);
    const ours = input.local.get(name);
    if ((ours !== undefined && ours >= theirs) || input.inFlight.has(name)) continue;
    const sources = holdersInOrder(entry, input.self, input.badHolders, input.now);
    if (sources.length === 0) continue;
    fetch.set(name, { entry, sources, localMtime: ours ?? null });
    if (!input.queued.has(name)) {
      const why = ours === undefined ? "missing here" : `newer there (mtime ${theirs} > ${ours})`;
      log.push(`fetching ${name} (${why}) from ${sourceName(sources[0])}`);
    }
  }
  return { fetch, skipped, log, warned };
}

/**
 * Why a directory entry must not be acted on, or `null` when it may be: a
 * name that is not a plain shared one, or an mtime no file system keeps.
 *
 * @example
 * ```ts
 * import { skipReason } from "./plan.ts";
 * skipReason("a.txt", { ip: "10.0.0.2", port: 8001, mtime: 1e15 }); // "mtime 1000000000000000 is past ..."
 * ```
 */
export function skipReason(
  name: string,
  entry: DirectoryEntry,
  options: { paths?: boolean } = {},
): string | null {
  return refusalReason(name, { paths: options.paths ?? false }) ??
    (entry.mtime > MAX_MTIME_SECONDS
      ? `mtime ${entry.mtime} is past ${MAX_MTIME_SECONDS} (the year 2106)`
      : null);
}

/**
 * The ignore rule that leaves `name` to this peer alone, or `null`. The
 * plan never fetches, renames or deletes an ignored path.
 *
 * @example
 * ```ts
 * import { ignoredBy } from "./plan.ts";
 * ignoredBy("tools/build.py", {})?.reason; // 'default rule "*.py"'
 * ```
 */
export function ignoredBy(name: string, input: Pick<NameInput, "ignore">): Ignored | null {
  return (input.ignore ?? IgnoreRules.DEFAULT).ignored(name);
}

/** What the plans need to know about names: whether paths are synced, and the ignore rules. */
type NameInput = Pick<PlanInput, "paths" | "ignore">;

/**
 * The plans' one way of leaving an entry alone: `skip(name, entry, input)`
 * says whether to, records it in `skipped`, and reports it once: a skip
 * once per name and reason, an ignored path once per ignore rule and
 * ignored folder (`ignoring build/ (rule "build/" in .p2pignore)`).
 */
function skipper(
  plan: Pick<Plan, "skipped" | "log" | "warned">,
  warned: ReadonlySet<string>,
): (name: string, entry: DirectoryEntry | null, input: NameInput, reason?: string) => boolean {
  const said = new Set<string>();
  const say = (key: string, line: string) => {
    if (warned.has(key) || said.has(key)) return;
    said.add(key);
    plan.warned.push(key);
    plan.log.push(line);
  };
  return (name, entry, input, reason) => {
    reason ??= entry === null
      ? refusalReason(name, { paths: input.paths ?? false }) ?? undefined
      : skipReason(name, entry, input) ?? undefined;
    if (reason !== undefined) {
      plan.skipped.push({ name, reason });
      say(
        warningKey(name, reason),
        `skipping ${preview(new TextEncoder().encode(name))}: ${reason}`,
      );
      return true;
    }
    const ignored = ignoredBy(name, input);
    if (ignored === null) return false;
    plan.skipped.push({ name, reason: `ignored here (${ignored.reason})` });
    const note = ignoreNote(ignored);
    say(note.key, note.line);
    return true;
  };
}

/** The key under which a skip is remembered as reported: name and reason. */
export function warningKey(name: string, reason: string): string {
  return `${name}\n${reason}`;
}

/**
 * The holders of an entry's newest version: the chosen one first, then the
 * others in the directory's order; this peer (`self`) left out, and holders
 * that failed within {@linkcode BAD_HOLDER_MS} of `now` moved last.
 *
 * @example
 * ```ts
 * import { holdersInOrder } from "./plan.ts";
 * const entry = { ip: "10.0.0.2", port: 8001, mtime: 5, holders: [{ ip: "10.0.0.3", port: 8001, mtime: 5 }] };
 * holdersInOrder(entry, undefined, new Map([["10.0.0.2:8001", 0]]), 1000); // 10.0.0.3 first
 * ```
 */
export function holdersInOrder(
  entry: DirectoryEntry,
  self: string | undefined,
  badHolders: ReadonlyMap<string, number>,
  now: number,
): Source[] {
  const all: Source[] = [{ ip: entry.ip, port: entry.port }];
  for (const holder of entry.holders ?? []) {
    if (holder.mtime < entry.mtime) continue;
    const known = all.find((s) => s.ip === holder.ip && s.port === holder.port);
    // What the holder accepted goes with it: a download uses an extension only with such a holder.
    const features = holder.features?.length ? { features: holder.features } : {};
    if (known === undefined) all.push({ ip: holder.ip, port: holder.port, ...features });
    else Object.assign(known, features);
  }
  const failedLately = (s: Source) => {
    const when = badHolders.get(sourceName(s));
    return when !== undefined && now - when < BAD_HOLDER_MS ? 1 : 0;
  };
  return all
    .filter((s) => sourceName(s) !== self)
    .map((s, i) => ({ s, i }))
    .sort((a, b) => failedLately(a.s) - failedLately(b.s) || a.i - b.i)
    .map(({ s }) => s);
}

/**
 * A holder's address to connect to: a tracker may hand out an IPv6 address
 * already in brackets, which `formatAddr()` would bracket again.
 *
 * @example
 * ```ts
 * import { sourceAddr } from "./plan.ts";
 * sourceAddr({ ip: "[::1]", port: 8000 }); // { hostname: "::1", port: 8000 }
 * ```
 */
export function sourceAddr(source: Source): { hostname: string; port: number } {
  // "[[::1]]:8000" would neither read well nor match our own address.
  const bare = /^\[(.*)\]$/.exec(source.ip);
  return { hostname: bare ? bare[1] : source.ip, port: source.port };
}

/**
 * A holder as log lines and `badHolders` name it: `ip:port`, IPv6 in brackets.
 *
 * @example
 * ```ts
 * import { sourceName } from "./plan.ts";
 * sourceName({ ip: "::1", port: 8000 }); // "[::1]:8000"
 * ```
 */
export function sourceName(source: Source): string {
  return formatAddr(sourceAddr(source));
}

/** One file of this peer as {@linkcode planVersions} reads it. */
export interface LocalCopy {
  sha256: string;
  /** Whole-second mtime. */
  mtime: number;
}

/** Everything {@linkcode planVersions} decides from, as plain data. */
export interface VersionsPlanInput extends Omit<PlanInput, "local"> {
  /** Deleted paths, from a tracker that accepted "versions". */
  deleted: Readonly<Record<string, DeletedEntry>>;
  /** This peer's files as listed (downloads finished since included), by path. */
  local: ReadonlyMap<string, LocalCopy>;
  /** The versions this peer recorded (its state), by path. */
  recorded: ReadonlyMap<string, Version>;
  /** Deletions made here: path to the version deleted. */
  deletedHere: ReadonlyMap<string, { sha256: string }>;
}

/** What {@linkcode planVersions} decided, besides the fetches. */
export interface VersionsPlan extends Plan {
  /** Local copies that lost a conflict: rename `from` to `to`, then fetch `from`. */
  copies: { from: string; to: string; sha256: string }[];
  /** Local copies the swarm deleted: delete them if they still hold `sha256`. */
  deletes: { path: string; sha256: string; by: string }[];
}

/**
 * Decides, path by path, what to do with a directory from a tracker that
 * accepted the "versions" extension: fetch what this peer lacks or holds an
 * ancestor of, rename a copy that lost a conflict and then fetch the winner,
 * delete a copy the swarm deleted, and otherwise keep (and announce) what is
 * here. An entry without a SHA-256 comes from a course peer: the course's
 * rule (a newer mtime) decides, and only over a copy unchanged here.
 *
 * @example
 * ```ts
 * import { planVersions } from "./plan.ts";
 * const sha = (c: string) => c.repeat(64);
 * const plan = planVersions({
 *   directory: { "a.txt": { ip: "10.0.0.2", port: 8001, mtime: 5, sha256: sha("b"), history: [sha("a")] } },
 *   deleted: {},
 *   local: new Map([["a.txt", { sha256: sha("a"), mtime: 9 }]]),
 *   recorded: new Map(),
 *   deletedHere: new Map(),
 *   self: undefined, inFlight: new Set(), queued: new Set(), badHolders: new Map(), warned: new Set(), now: 0,
 * });
 * plan.fetch.has("a.txt"); // true: our copy is an older version, whatever its mtime
 * ```
 */
export function planVersions(input: VersionsPlanInput): VersionsPlan {
  const plan: VersionsPlan = {
    fetch: new Map(),
    skipped: [],
    log: [],
    warned: [],
    copies: [],
    deletes: [],
  };
  const skip = skipper(plan, input.warned);
  /** Queues a fetch of `name`; false when it cannot go now (in flight, or no holder to ask). */
  const fetch = (
    name: string,
    entry: DirectoryEntry,
    localMtime: number | null,
    why: string,
  ): boolean => {
    if (input.inFlight.has(name)) return false;
    const sources = holdersInOrder(entry, input.self, input.badHolders, input.now);
    if (sources.length === 0) return false;
    plan.fetch.set(name, { entry, sources, localMtime, byContent: true });
    if (!input.queued.has(name)) {
      plan.log.push(`fetching ${name} (${why}) from ${sourceName(sources[0])}`);
    }
    return true;
  };

  for (const [name, entry] of Object.entries(input.directory)) {
    if (skip(name, entry, input)) continue;
    const local = input.local.get(name) ?? null;
    if (entry.sha256 === undefined) {
      // A course peer's copy, newer by its mtime than any version ours know.
      const recorded = input.recorded.get(name);
      const unchanged = local !== null && recorded?.sha256 === local.sha256;
      if (local === null) fetch(name, entry, null, "missing here");
      else if (unchanged && Math.floor(entry.mtime) > local.mtime) {
        fetch(
          name,
          entry,
          local.mtime,
          `newer there (mtime ${Math.floor(entry.mtime)} > ${local.mtime})`,
        );
      }
      continue;
    }
    const version: Version = {
      sha256: entry.sha256,
      size: entry.size ?? 0,
      mtime: entry.mtime,
      by: entry.by ?? "",
      history: entry.history ?? [],
    };
    const action = planPath(
      local?.sha256 ?? null,
      { kind: "current", version, copies: entry.copies ?? [] },
      input.deletedHere.get(name)?.sha256 ?? null,
    );
    if (action.kind === "fetch") {
      fetch(
        name,
        entry,
        local?.mtime ?? null,
        local === null ? "missing here" : "a newer version there",
      );
    } else if (action.kind === "copy-then-fetch") {
      const reason = refusalReason(action.copyName, { paths: input.paths ?? false });
      if (reason !== null) {
        skip(action.copyName, null, input, `conflict copy of ${name}: ${reason}`);
        continue;
      }
      // The copy is renamed first, so by then nothing is under the name: only when the winner
      // can be fetched at once, or the name would stand empty for a round or more.
      if (fetch(name, entry, null, "the version that won a conflict")) {
        plan.copies.push({ from: name, to: action.copyName, sha256: local!.sha256 });
      }
    }
  }
  for (const [name, tombstone] of Object.entries(input.deleted)) {
    // An ignored file is this peer's alone: never deleted by sync.
    if (refusalReason(name, { paths: input.paths ?? false }) !== null) continue;
    if (ignoredBy(name, input) !== null) continue;
    const local = input.local.get(name);
    if (!local) continue;
    const action = planPath(local.sha256, { kind: "deleted", tombstone });
    if (action.kind === "delete") {
      plan.deletes.push({ path: name, sha256: local.sha256, by: tombstone.by });
    }
  }
  return plan;
}
