/**
 * Versions by content and ancestry: for one path, which version of a file the
 * swarm keeps, decided without trusting anybody's clock.
 *
 * A version is the SHA-256 of the file's bytes plus its history: the versions
 * it was based on, newest first. A change based on the current version
 * replaces it, whatever the mtimes say. Two versions where neither is based
 * on the other are a conflict: both are kept, the winner under the file's
 * name and the loser as a conflict copy (see {@linkcode conflictCopyName});
 * only then do the mtimes count, to pick the winner. A deletion is a version
 * too (a tombstone): it wins over the version it deleted and loses to any
 * edit made without knowing about it.
 *
 * The tracker calls {@linkcode announce} and {@linkcode remove} when a peer
 * reports a version or a deletion; each peer calls {@linkcode planPath} to
 * decide what to do with its own copy. Every function here is pure: no I/O,
 * no clock (callers pass `now`).
 *
 * The one promise these rules keep: a peer overwrites or deletes its copy only
 * when the swarm has seen that exact content superseded (it is in the
 * history), or after renaming it to a conflict copy. Anything else it keeps
 * and announces, so an edit can be outvoted but never lost.
 *
 * @module
 */

/** Versions kept in a history: older ancestors are forgotten (a later conflict then keeps both). */
export const MAX_HISTORY = 16;

/** Conflict copies a path remembers, newest first. */
export const MAX_COPIES = 8;

/** The author of a version that came from a peer without an id (the course's programs). */
export const UNKNOWN_AUTHOR = "0000000";

/** One version of one file. */
export interface Version {
  /** SHA-256 of the contents, lowercase hex. */
  sha256: string;
  /** Length in bytes. */
  size: number;
  /** Modification time, whole seconds since 1970 (carried and set, as the course does). */
  mtime: number;
  /** Id of the peer that made this version. */
  by: string;
  /** SHA-256s of the versions this one was based on, newest first, at most {@linkcode MAX_HISTORY}. */
  history: string[];
}

/** A deletion: which version was deleted, its history, when and by whom. */
export interface Tombstone {
  sha256: string;
  history: string[];
  /** When the deletion happened, ms since 1970. */
  deletedAt: number;
  by: string;
}

/** A version that lost a conflict, and the name its holders keep it under. */
export interface ConflictCopy {
  sha256: string;
  name: string;
}

/** What the tracker knows about one path. */
export interface PathRecord {
  /** The version under the path's name, or `null` when it is deleted. */
  current: Version | null;
  /** Set when the path is deleted (then `current` is `null`). */
  tombstone: Tombstone | null;
  /** Versions that lost a conflict here, newest first. */
  copies: ConflictCopy[];
}

/** What {@linkcode announce} made of a version. */
export type AnnounceOutcome =
  /** Nothing was known of this path: the version is now current. */
  | "new"
  /** It is the current version. */
  | "same"
  /** The current version (or the deletion) is based on it: its holder is behind. */
  | "behind"
  /** Based on the current version: it replaced it. */
  | "forward"
  /** An edit of a deleted file: the edit wins and the file is back. */
  | "revived"
  /** A conflict it won: the previous current version became a conflict copy. */
  | "won"
  /** A conflict it lost (now or before): it is a conflict copy. */
  | "lost";

/** What {@linkcode remove} made of a deletion. */
export type RemoveOutcome =
  /** The current version was deleted: the path now has a tombstone. */
  | "deleted"
  /** The path was already deleted, or nothing was known of it and now a tombstone is. */
  | "already"
  /** The deleted version had been edited since: the edit stays. */
  | "outdated";

/** Whether `sha256` is `version` itself or one of its ancestors. */
function knows(version: { sha256: string; history: string[] }, sha256: string): boolean {
  return version.sha256 === sha256 || version.history.includes(sha256);
}

/** `a` then `b` without repeats, at most {@linkcode MAX_HISTORY} long. */
function mergeHistory(a: readonly string[], b: readonly string[], without: string): string[] {
  const merged: string[] = [];
  for (const sha of [...a, ...b]) {
    if (sha !== without && !merged.includes(sha)) merged.push(sha);
    if (merged.length === MAX_HISTORY) break;
  }
  return merged;
}

/**
 * Whether `a` wins a conflict against `b`: the newer mtime, then (a stable
 * tie-break every tracker computes the same way) the smaller SHA-256.
 */
export function winsConflict(a: Version, b: Version): boolean {
  if (a.mtime !== b.mtime) return a.mtime > b.mtime;
  return a.sha256 < b.sha256;
}

function addCopy(copies: ConflictCopy[], copy: ConflictCopy): ConflictCopy[] {
  const rest = copies.filter((c) => c.sha256 !== copy.sha256);
  return [copy, ...rest].slice(0, MAX_COPIES);
}

/**
 * The tracker's rule for a version a peer announces at `path`. Returns the
 * path's new record (the old one is not changed) and what happened.
 * `currentHeld` says whether any peer online holds the current version: if
 * none does, a conflicting version wins whatever its mtime (the other is
 * still kept, as a copy its holders make when they return).
 *
 * @example
 * ```ts
 * import { announce } from "./versions.ts";
 * const a = { sha256: "aa", size: 1, mtime: 100, by: "PEERONE", history: [] };
 * const b = { sha256: "bb", size: 1, mtime: 50, by: "PEERTWO", history: ["aa"] };
 * const first = announce(undefined, "notes.txt", a);
 * // b was based on a: it replaces a although its mtime is older.
 * announce(first.record, "notes.txt", b).outcome; // "forward"
 * ```
 */
export function announce(
  record: PathRecord | undefined,
  path: string,
  version: Version,
  currentHeld = true,
): { record: PathRecord; outcome: AnnounceOutcome } {
  const copies = record?.copies ?? [];
  const current = record?.current ?? null;
  const tombstone = record?.tombstone ?? null;
  const replaced = (next: Version, outcome: AnnounceOutcome, nextCopies = copies) => ({
    record: { current: next, tombstone: null, copies: nextCopies },
    outcome,
  });

  if (current === null && tombstone === null) return replaced(version, "new");
  if (current !== null && current.sha256 === version.sha256) {
    return { record: record!, outcome: "same" };
  }
  if (copies.some((c) => c.sha256 === version.sha256)) {
    return { record: record!, outcome: "lost" };
  }
  if (current === null) {
    // Deleted: the holder of the deleted version (or an older one) is behind; anything else
    // is an edit the deleting peer never saw, and an edit is never lost to a deletion.
    if (knows(tombstone!, version.sha256)) return { record: record!, outcome: "behind" };
    const history = mergeHistory(version.history, [tombstone!.sha256, ...tombstone!.history], "");
    return replaced({ ...version, history }, "revived");
  }
  if (current.history.includes(version.sha256)) return { record: record!, outcome: "behind" };
  if (version.history.includes(current.sha256)) return replaced(version, "forward");

  // Neither is based on the other: keep both. The loser's ancestors join the winner's
  // history (the loser itself survives as a copy, so they are superseded), but not the
  // loser: its holders must rename it, never overwrite it.
  // A current version nobody online holds cannot be fetched: the announced one takes the name
  // at once, and the absent one becomes a copy its holders make when they come back.
  const announcedWins = !currentHeld || winsConflict(version, current);
  const [winner, loser] = announcedWins ? [version, current] : [current, version];
  const next: Version = {
    ...winner,
    history: mergeHistory(winner.history, loser.history, loser.sha256),
  };
  const nextCopies = addCopy(copies, {
    sha256: loser.sha256,
    name: conflictCopyName(path, loser),
  });
  return replaced(next, winner === version ? "won" : "lost", nextCopies);
}

/**
 * The tracker's rule for a deletion a peer reports: the peer had version
 * `sha256` at `path` and deleted it at `deletedAt` (ms) .
 *
 * @example
 * ```ts
 * import { announce, remove } from "./versions.ts";
 * const a = { sha256: "aa", size: 1, mtime: 100, by: "PEERONE", history: [] };
 * const { record } = announce(undefined, "notes.txt", a);
 * remove(record, { sha256: "aa", deletedAt: 1_000, by: "PEERTWO" }).outcome; // "deleted"
 * ```
 */
export function remove(
  record: PathRecord | undefined,
  deletion: { sha256: string; deletedAt: number; by: string },
): { record: PathRecord; outcome: RemoveOutcome } {
  const current = record?.current ?? null;
  const copies = record?.copies ?? [];
  if (current !== null) {
    if (current.sha256 !== deletion.sha256) return { record: record!, outcome: "outdated" };
    const tombstone = { ...deletion, history: current.history };
    return { record: { current: null, tombstone, copies }, outcome: "deleted" };
  }
  const tombstone = record?.tombstone ?? null;
  if (tombstone !== null && knows(tombstone, deletion.sha256)) {
    return { record: record!, outcome: "already" };
  }
  // Nothing known (the tracker restarted, say): remember the deletion so that a peer that
  // still holds this version deletes it too, instead of bringing it back to everyone.
  return {
    record: { current: null, tombstone: { ...deletion, history: [] }, copies },
    outcome: "already",
  };
}

/** What a peer does with its own copy of one path. */
export type PathAction =
  /** Nothing to do: in sync, or nothing to fetch. */
  | { kind: "none" }
  /** Fetch the current version; the local copy, if any, is superseded and may be replaced. */
  | { kind: "fetch" }
  /** Rename the local copy to `copyName` (it lost a conflict), then fetch the current version. */
  | { kind: "copy-then-fetch"; copyName: string }
  /** Delete the local copy: the swarm deleted this version. */
  | { kind: "delete" }
  /** Keep the local copy and announce it: the tracker has not decided about it yet. */
  | { kind: "announce" };

/** The directory's word on one path, as a peer sees it. */
export type PathState =
  | { kind: "current"; version: Version; copies: readonly ConflictCopy[] }
  | { kind: "deleted"; tombstone: { sha256: string; history: string[] } };

/**
 * A peer's rule for one path: `local` is the SHA-256 of its copy (`null`: it
 * has none), `pendingDeletion` the version it deleted and has not yet seen
 * the tracker take in, if any.
 *
 * @example
 * ```ts
 * import { planPath } from "./versions.ts";
 * const current = { sha256: "bb", size: 1, mtime: 50, by: "PEERTWO", history: ["aa"] };
 * planPath("aa", { kind: "current", version: current, copies: [] }); // { kind: "fetch" }
 * planPath("cc", { kind: "current", version: current, copies: [] }); // { kind: "announce" }
 * ```
 */
export function planPath(
  local: string | null,
  state: PathState | undefined,
  pendingDeletion: string | null = null,
): PathAction {
  if (state === undefined) return local === null ? { kind: "none" } : { kind: "announce" };
  if (state.kind === "deleted") {
    if (local === null) return { kind: "none" };
    return knows(state.tombstone, local) ? { kind: "delete" } : { kind: "announce" };
  }
  const { version, copies } = state;
  if (local === null) {
    // We deleted exactly this version and the tracker has not taken the deletion in yet.
    return pendingDeletion === version.sha256 ? { kind: "none" } : { kind: "fetch" };
  }
  if (local === version.sha256) return { kind: "none" };
  if (version.history.includes(local)) return { kind: "fetch" };
  const copy = copies.find((c) => c.sha256 === local);
  if (copy) return { kind: "copy-then-fetch", copyName: copy.name };
  return { kind: "announce" };
}

/** Two digits. */
function pad(n: number): string {
  return String(n).padStart(2, "0");
}

/**
 * The name a version that lost a conflict is kept under:
 * `NAME.sync-conflict-YYYYMMDD-HHMMSS-PEERID.EXT`, from the losing version's
 * mtime (UTC) and author, so every holder picks the same name. The folder
 * part of a path is kept; a name without an extension gets the suffix at
 * the end.
 *
 * @example
 * ```ts
 * import { conflictCopyName } from "./versions.ts";
 * const loser = { sha256: "bb", size: 1, mtime: 1_764_472_500, by: "PEERTWO", history: [] };
 * conflictCopyName("notes/today.txt", loser);
 * // "notes/today.sync-conflict-20251130-031500-PEERTWO.txt"
 * ```
 */
export function conflictCopyName(path: string, loser: Pick<Version, "mtime" | "by">): string {
  const slash = path.lastIndexOf("/");
  const folder = path.slice(0, slash + 1);
  const base = path.slice(slash + 1);
  const dot = base.lastIndexOf(".");
  const [stem, ext] = dot > 0 ? [base.slice(0, dot), base.slice(dot)] : [base, ""];
  const t = new Date(loser.mtime * 1000);
  const stamp = `${t.getUTCFullYear()}${pad(t.getUTCMonth() + 1)}${pad(t.getUTCDate())}-` +
    `${pad(t.getUTCHours())}${pad(t.getUTCMinutes())}${pad(t.getUTCSeconds())}`;
  const by = loser.by === "" ? UNKNOWN_AUTHOR : loser.by;
  return `${folder}${stem}.sync-conflict-${stamp}-${by}${ext}`;
}

/** Whether a path is a conflict copy (the course's peers are never handed one). */
export function isConflictCopy(path: string): boolean {
  return /\.sync-conflict-\d{8}-\d{6}-[A-Za-z0-9]+(\.[^./]*)?$/.test(path);
}

/**
 * The version a peer announces for its copy of a path: unchanged when the
 * bytes are those it last recorded, otherwise a new version by this peer
 * based on the recorded one.
 *
 * @example
 * ```ts
 * import { localVersion } from "./versions.ts";
 * const recorded = { sha256: "aa", size: 1, mtime: 100, by: "PEERONE", history: [] };
 * localVersion(recorded, { sha256: "bb", size: 2, mtime: 100 }, "PEERTWO").history; // ["aa"]
 * ```
 */
export function localVersion(
  recorded: Version | undefined,
  disk: { sha256: string; size: number; mtime: number },
  self: string,
): Version {
  const { sha256, size, mtime } = disk;
  if (recorded !== undefined && recorded.sha256 === sha256) return { ...recorded, size, mtime };
  const history = recorded === undefined
    ? []
    : [recorded.sha256, ...recorded.history].slice(0, MAX_HISTORY);
  return { sha256, size, mtime, by: self, history };
}
