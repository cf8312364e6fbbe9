/**
 * What a peer remembers between runs, in a hidden folder inside its share
 * (`.p2p-sync/state.json`): its id, the version of every file it last
 * announced or fetched, and the deletions it made. This is what lets it tell
 * "I edited this file" from "I am behind" without looking at clocks.
 *
 * Losing it is safe: a peer without state announces each file as a new
 * version; the tracker recognises the ones it already knows and keeps both
 * sides of any other difference as a conflict. Nothing is deleted or
 * overwritten because state is missing.
 *
 * @module
 */

import { writeAll } from "../lib/net.ts";
import { localVersion, MAX_HISTORY, type Version } from "./versions.ts";

/** The hidden folder inside the share (hidden names are never shared). */
export const STATE_DIR = ".p2p-sync";

/** The state file inside {@linkcode STATE_DIR}. */
export const STATE_FILE = "state.json";

/** How long deletions are remembered and announced, by peers and by the tracker: 30 days. */
export const TOMBSTONE_TTL_MS = 30 * 24 * 3600 * 1000;

/** A deletion this peer made. */
export interface Deletion {
  /** The version it deleted. */
  sha256: string;
  /** When, ms since 1970. */
  deletedAt: number;
}

/** A peer's memory of its share. */
export interface SyncState {
  /** This peer's id: 7 characters from A-Z and 2-7, random, kept for as long as the state is. */
  id: string;
  /** The version of each file as this peer last announced or fetched it, by path. */
  files: Map<string, Version>;
  /** Deletions made here, by path, kept for {@linkcode TOMBSTONE_TTL_MS}. */
  deleted: Map<string, Deletion>;
}

const ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/** What a peer id looks like (ours are 7 characters; other ids are accepted up to 16). */
export const PEER_ID = /^[A-Za-z0-9]{1,16}$/;

/**
 * A fresh random peer id.
 *
 * @example
 * ```ts
 * import { newPeerId } from "./sync_state.ts";
 * newPeerId().length; // 7
 * ```
 */
export function newPeerId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(7));
  return Array.from(bytes, (b) => ID_ALPHABET[b % 32]).join("");
}

/** A state for a share seen for the first time (or whose state was lost). */
export function freshState(): SyncState {
  return { id: newPeerId(), files: new Map(), deleted: new Map() };
}

const SHA256 = /^[0-9a-f]{64}$/;

function isVersion(value: unknown): value is Version {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return typeof v.sha256 === "string" && SHA256.test(v.sha256) &&
    Number.isSafeInteger(v.size) && (v.size as number) >= 0 &&
    Number.isSafeInteger(v.mtime) && (v.mtime as number) >= 0 &&
    typeof v.by === "string" && (v.by === "" || PEER_ID.test(v.by)) &&
    Array.isArray(v.history) && v.history.length <= MAX_HISTORY &&
    v.history.every((h) => typeof h === "string" && SHA256.test(h));
}

/**
 * Reads a state file's text. Anything it cannot use is a reason, returned
 * instead of a state; a single bad entry is dropped, not the whole file.
 */
export function parseState(text: string): SyncState | string {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return "not valid JSON";
  }
  if (typeof raw !== "object" || raw === null) return "not a JSON object";
  const r = raw as Record<string, unknown>;
  if (typeof r.id !== "string" || !PEER_ID.test(r.id)) return "no valid peer id";
  const state = freshState();
  state.id = r.id;
  const files = typeof r.files === "object" && r.files !== null ? r.files : {};
  for (const [path, version] of Object.entries(files)) {
    if (isVersion(version)) {
      const { sha256, size, mtime, by, history } = version;
      state.files.set(path, { sha256, size, mtime, by, history: [...history] });
    }
  }
  const deleted = typeof r.deleted === "object" && r.deleted !== null ? r.deleted : {};
  for (const [path, d] of Object.entries(deleted)) {
    const { sha256, deletedAt } = (d ?? {}) as Record<string, unknown>;
    if (typeof sha256 === "string" && SHA256.test(sha256) && Number.isSafeInteger(deletedAt)) {
      state.deleted.set(path, { sha256, deletedAt: deletedAt as number });
    }
  }
  return state;
}

/** The state as the text of its file. */
export function formatState(state: SyncState): string {
  return JSON.stringify({
    id: state.id,
    files: Object.fromEntries(state.files),
    deleted: Object.fromEntries(state.deleted),
  });
}

/**
 * Loads the state of the share at `dir`; a missing or unreadable state is
 * replaced by a fresh one, with `note` told why (a missing one silently).
 */
export async function loadState(
  dir: string,
  note: (line: string) => void = () => {},
): Promise<SyncState> {
  const path = `${dir}/${STATE_DIR}/${STATE_FILE}`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) {
      note(`cannot read ${path} (${(err as Error).message}); starting with a fresh state`);
    }
    return freshState();
  }
  const parsed = parseState(text);
  if (typeof parsed === "string") {
    note(`${path} is unusable (${parsed}); starting with a fresh state`);
    return freshState();
  }
  return parsed;
}

/**
 * Writes the state of the share at `dir` so that the file is always whole:
 * into a temp file first, then renamed over the old one.
 */
export async function saveState(dir: string, state: SyncState): Promise<void> {
  const folder = `${dir}/${STATE_DIR}`;
  await Deno.mkdir(folder, { recursive: true });
  const temp = `${folder}/${STATE_FILE}.tmp`;
  // On disk before it gets its name, as downloads are: after a crash the state is the old one
  // or the new one, never an empty or torn file.
  using file = await Deno.open(temp, { write: true, create: true, truncate: true });
  await writeAll(file, new TextEncoder().encode(formatState(state)));
  await file.syncData();
  await Deno.rename(temp, `${folder}/${STATE_FILE}`);
}

/** Forgets deletions older than the tombstone time. */
export function forgetOldDeletions(state: SyncState, now: number): void {
  for (const [path, d] of state.deleted) {
    if (now - d.deletedAt > TOMBSTONE_TTL_MS) state.deleted.delete(path);
  }
}

/** What {@linkcode scanFolder} noticed. */
export interface ScanResult {
  /** Paths whose bytes changed here since they were recorded, or that are new here. */
  changed: string[];
  /** Recorded paths that are gone from the folder: deleted here. */
  deleted: string[];
}

/**
 * Brings the state up to date with a listing of the folder: a listed file
 * whose bytes differ from its record is a new version by this peer (based on
 * the recorded one); a recorded file that is not listed and that `gone` says
 * is really gone (not merely unreadable for a moment) was deleted here.
 * Paths in `skip` (downloads that finished after the listing began) keep
 * the version the download recorded.
 *
 * @example
 * ```ts
 * import { freshState, scanFolder } from "./sync_state.ts";
 * const state = freshState();
 * const sha256 = "a".repeat(64);
 * scanFolder(state, [{ name: "a.txt", mtime: 1, size: 1, sha256 }], () => true, 0).changed; // ["a.txt"]
 * ```
 */
export function scanFolder(
  state: SyncState,
  files: readonly { name: string; mtime: number; size: number; sha256: string }[],
  gone: (path: string) => boolean,
  now: number,
  skip: { has(path: string): boolean } = new Set(),
): ScanResult {
  const result: ScanResult = { changed: [], deleted: [] };
  const listed = new Set<string>();
  for (const file of files) {
    listed.add(file.name);
    // Fetched since the listing began: the listing shows the bytes the download replaced.
    if (skip.has(file.name)) continue;
    const recorded = state.files.get(file.name);
    const version = localVersion(recorded, file, state.id);
    if (recorded === undefined || recorded.sha256 !== version.sha256) {
      result.changed.push(file.name);
    }
    state.files.set(file.name, version);
    state.deleted.delete(file.name);
  }
  for (const [path, recorded] of state.files) {
    if (listed.has(path) || skip.has(path) || !gone(path)) continue;
    state.files.delete(path);
    state.deleted.set(path, { sha256: recorded.sha256, deletedAt: now });
    result.deleted.push(path);
  }
  return result;
}
