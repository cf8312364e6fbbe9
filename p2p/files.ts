/**
 * The P2P peer's folder: which files it shares, opening one safely to serve
 * it, and downloading one into it without ever leaving a torn or wrong file
 * under its final name.
 *
 * - {@linkcode listSharedFiles} lists the plain files in the folder and its
 *   subfolders (relative paths, `/` between names), skipping hidden names
 *   (which covers our temp files and state folder), symlinked folders, and
 *   what the ignore rules say (`ignore.ts`: `.p2pignore`, and by default
 *   `*.py`, `*.so`, `*.dll` as the course's peers), with each file's size
 *   and SHA-256 for the tracker's extension fields.
 * - {@linkcode openSharedFile} opens a requested path only if it is a plain
 *   file inside the folder, reached through no symlinked folder; a symlink
 *   must lead to such a file too.
 * - {@linkcode downloadFile} streams a file from another peer into a hidden
 *   temp file, checks its length and SHA-256, sets its mtime, and only then
 *   renames it into place: a reader (or a killed peer) sees the old file or
 *   the whole new one, never half of it.
 *
 * @example
 * ```ts
 * import { listSharedFiles } from "./files.ts";
 * for (const file of await listSharedFiles("/tmp/share")) console.log(file.name, file.size);
 * ```
 * @module
 */

import { createHash } from "node:crypto";
import { closeSync, constants as fsConstants, fstatSync, openSync, readSync } from "node:fs";
import { errorMessage } from "../lib/cli.ts";
import { formatBytes } from "../lib/log.ts";
import { fits, freeBytes } from "./disk_space.ts";
import { LineReader, LineTooLongError } from "../lib/lines.ts";
import {
  closeQuietly,
  concatBytes,
  connectTo,
  formatAddr,
  type Reader,
  writeAll,
  type Writer,
} from "../lib/net.ts";
import {
  type FileInfo,
  MAX_MTIME_SECONDS,
  MAX_PATH_BYTES,
  MAX_PATH_DEPTH,
  pathProblem,
  windowsNameProblem,
} from "./protocol.ts";
import { type Ignored, IgnoreRules } from "./ignore.ts";

/**
 * Bytes per read and write while a file travels, on both sides: 256 KiB
 * moved a large file about 1.5 times as fast as 64 KiB here, and is still
 * little memory per transfer. Small files get a buffer of their own size.
 */
export const TRANSFER_BUFFER_BYTES = 256 * 1024; // bytes
/** Bytes per read while hashing a file of our own. */
const HASH_BUFFER_BYTES = 1024 * 1024; // bytes
/** Longest `Content-Length:` header line we read from another peer. */
export const MAX_HEADER_BYTES = 256; // bytes
/** Longest file request line we read: a path is at most 4096 bytes, plus room for a "\r". */
export const MAX_REQUEST_BYTES = MAX_PATH_BYTES + 1; // bytes
/** Largest file we agree to receive: anything bigger is refused before a byte is stored. */
export const MAX_FILE_BYTES = 2 ** 40; // bytes (1 TiB)
/**
 * Files up to this size are created and written with synchronous calls:
 * the write only fills the page cache (tens of microseconds at most), less
 * than the trip to a worker thread an async call makes.
 */
export const SMALL_FILE_BYTES = 64 * 1024; // bytes
/** How a temp file ends; with the leading dot the listing never shares it. */
const TEMP_SUFFIX = ".part";
/**
 * Our temp files' names: `.<name>.<12 hex digits>.part` (random: a download
 * that cannot resume), or `.<name>.<16 hex digits>.part` (the start of the
 * version's SHA-256: a partial download that may resume); a hash instead of
 * a long name.
 */
const TEMP_NAME = /^\..+\.([0-9a-f]{12}|[0-9a-f]{16})\.part$/;
/** A resumable partial's name: its version's first 16 hex digits. */
const PARTIAL_NAME = /^\..+\.([0-9a-f]{16})\.part$/;
/** A partial download untouched for this long is removed, whatever it was for. */
export const PARTIAL_KEEP_MS = 24 * 3600_000; // milliseconds
/** Partial downloads kept at most; beyond that the oldest go. */
export const MAX_PARTIALS = 64;
/** Names longer than this are replaced by their hash inside a temp name (255-byte limit). */
const TEMP_NAME_KEEP_BYTES = 200; // bytes

/** Whether this peer runs on Windows, which cannot store some names that Linux and macOS can. */
const ON_WINDOWS = Deno.build.os === "windows";

/** What {@linkcode refusalReason} allows beyond a plain name. */
export interface NameRules {
  /**
   * Relative paths with `/` (extension "paths"); when off, any `/` is
   * refused, as with the course's tracker. @default {true}
   */
  paths?: boolean;
  /**
   * Refuse names Windows cannot store (`windowsNameProblem` in
   * `protocol.ts`): such files are synced between Linux and macOS peers and
   * skipped, with one log line, on a Windows peer. @default {true on Windows}
   */
  windows?: boolean;
}

/**
 * Why a path is never served, written or shared, whatever the ignore rules
 * say, or `null` when it may be: a path that is not safe (`pathProblem` in
 * `protocol.ts`: `..`, absolute, control characters, too long or deep), a
 * hidden name anywhere in it (our temp files, the `.p2p-sync/` state folder,
 * `.p2pignore`), and on Windows a name Windows cannot store.
 *
 * @example
 * ```ts
 * import { refusalReason } from "./files.ts";
 * refusalReason("docs/a.txt"); // null
 * refusalReason("docs/a.txt", { paths: false }); // "path separators are not allowed"
 * refusalReason("../a.txt"); // '".." is not allowed in a path'
 * refusalReason("aux.txt", { windows: true }); // '"aux.txt" is a device name on Windows: ...'
 * ```
 */
export function refusalReason(name: string, rules: NameRules = {}): string | null {
  if (name === "") return "empty name";
  if (name === "." || name === "..") return `"${name}" is a folder, not a file`;
  if (!(rules.paths ?? true) && /[/\\]/.test(name)) return "path separators are not allowed";
  const problem = pathProblem(name);
  if (problem !== null) return problem;
  if (name.split("/").some((n) => n.startsWith("."))) {
    return "hidden and temporary files are not shared";
  }
  if (rules.windows ?? ON_WINDOWS) {
    const windows = windowsNameProblem(name);
    if (windows !== null) return `${windows}: not stored on this Windows peer`;
  }
  return null;
}

/**
 * Whether a path is shared: safe and not hidden (see {@linkcode refusalReason}),
 * and not ignored by `rules` (the defaults: `*.py`, `*.so`, `*.dll`).
 *
 * @example
 * ```ts
 * import { isSharedName } from "./files.ts";
 * isSharedName("notes/today.txt"); // true
 * isSharedName("peer.py"); // false
 * ```
 */
export function isSharedName(name: string, rules: IgnoreRules = IgnoreRules.DEFAULT): boolean {
  return refusalReason(name) === null && rules.ignored(name) === null;
}

/** Whether `name` (one name, no folder) is one of our own temp files (left behind by a killed peer). */
export function isTempName(name: string): boolean {
  return TEMP_NAME.test(name);
}

/**
 * A temp path for a download of `path`, in the same folder (so the final
 * rename is atomic); hidden, so never shared. With the version's `sha256`
 * it is the version's partial file, the same every time (a download that
 * stopped resumes from it); without, a fresh random one.
 *
 * @example
 * ```ts
 * import { tempNameFor } from "./files.ts";
 * tempNameFor("docs/a.txt"); // "docs/.a.txt.1f2e3d4c5b6a.part"
 * tempNameFor("a.txt", "5891b5b522d5df086d0ff0b1..."); // ".a.txt.5891b5b522d5df08.part"
 * ```
 */
export function tempNameFor(path: string, sha256?: string): string {
  const slash = path.lastIndexOf("/");
  const name = path.slice(slash + 1);
  const random = crypto.getRandomValues(new Uint8Array(6));
  // Tied to the version: found again after a restart, and never resumed as another version.
  const tag = sha256 !== undefined
    ? sha256.toLowerCase().slice(0, 16)
    : Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("");
  const base = new TextEncoder().encode(name).length <= TEMP_NAME_KEEP_BYTES
    ? name
    : createHash("sha256").update(name).digest("hex").slice(0, 32);
  return `${path.slice(0, slash + 1)}.${base}.${tag}${TEMP_SUFFIX}`;
}

/** Joins the folder and a relative path already checked (see {@linkcode refusalReason}). */
export function pathIn(dir: string, name: string): string {
  return `${dir.replace(/\/+$/, "")}/${name}`;
}

/** One shared file as the listing saw it. */
export interface LocalFile extends FileInfo {
  /** Modification time in whole seconds (rounded down), as on the wire. */
  mtime: number;
  /** Length in bytes. */
  size: number;
  /** SHA-256 of the contents, lowercase hex. */
  sha256: string;
}

/** Remembers hashes so that an unchanged file is not read again every round. */
export class HashCache {
  #entries = new Map<string, { key: string; sha256: string; recheckAt?: number }>();

  /** Whether a hash of `name` is cached at all (it may be stale: see {@linkcode HashCache.get}). */
  has(name: string): boolean {
    return this.#entries.has(name);
  }

  /**
   * The cached hash of `name` if its size, mtime, ctime and inode are
   * unchanged (and, for a file stored by {@linkcode HashCache.setWritten},
   * its time to be read once more has not come).
   */
  get(name: string, info: Deno.FileInfo, now: number = Date.now()): string | undefined {
    const hit = this.#entries.get(name);
    if (hit === undefined || hit.key !== cacheKey(info)) return undefined;
    return hit.recheckAt !== undefined && now >= hit.recheckAt ? undefined : hit.sha256;
  }

  /**
   * Stores the hash of a file this peer has just written and renamed into
   * place (a download: every byte was hashed as it arrived, and `info` is
   * the stat of the file it wrote). Unlike {@linkcode HashCache.set} it is
   * kept while the file is fresh, so a burst of downloads is not read back
   * by every listing; once the file's stat can be trusted
   * ({@linkcode RACY_MS} after its last change) the next listing reads it
   * once more, as `set` would have had it do, so an edit hidden in the
   * same second (same size, mtime put back) is found then at the latest.
   */
  setWritten(name: string, info: Deno.FileInfo, sha256: string): void {
    const changed = Math.max(info.ctime?.getTime() ?? 0, info.mtime?.getTime() ?? 0);
    this.#entries.set(name, { key: cacheKey(info), sha256, recheckAt: changed + RACY_MS });
  }

  /**
   * Stores the hash of `name` as it is now, unless the file changed too
   * recently to trust its stat: `cp -p` or `touch -d` can rewrite a file and
   * put its old mtime back within the second its ctime still shows (Deno
   * gives ctime in whole seconds), which the key could not tell apart. Such
   * a file is simply hashed again next time (git's "racily clean" rule).
   */
  set(name: string, info: Deno.FileInfo, sha256: string, now: number = Date.now()): void {
    const changed = Math.max(info.ctime?.getTime() ?? now, info.mtime?.getTime() ?? now);
    if (now - changed < RACY_MS) {
      this.#entries.delete(name);
      return;
    }
    this.#entries.set(name, { key: cacheKey(info), sha256 });
  }

  /** Forgets names not in `keep`. */
  prune(keep: Set<string>): void {
    for (const name of this.#entries.keys()) if (!keep.has(name)) this.#entries.delete(name);
  }
}

/** A file changed less than this long ago is hashed again next time (see `HashCache.set`). */
const RACY_MS = 2_000;

function cacheKey(info: Deno.FileInfo): string {
  // ctime too: it changes on every write and nobody can set it back, unlike the mtime.
  return `${info.size}:${info.mtime?.getTime()}:${info.ctime?.getTime()}:${info.ino}:${info.dev}`;
}

/** One name {@linkcode listSharedFiles} left out (hidden names are left out without a word). */
export interface ListingSkip {
  /** The relative path; a folder's ends in `/`. */
  path: string;
  /** Why, for a log line. */
  reason: string;
  /** Set when an ignore rule left it out. */
  ignored?: Ignored;
}

/** Options for {@linkcode listSharedFiles}. */
export interface ListOptions {
  /** The ignore rules (`.p2pignore`). @default {IgnoreRules.DEFAULT: `*.py`, `*.so`, `*.dll`} */
  ignore?: IgnoreRules;
  /** Told of every name left out, but hidden ones: unsafe, ignored, a symlinked folder. */
  onSkip?: (skip: ListingSkip) => void;
}

/**
 * Lists the shared files of `dir` and of its subfolders, by relative path
 * (`docs/a.txt`), sorted, with size, whole-second mtime and SHA-256. Hidden
 * names are skipped (and hidden folders not entered), as are symlinked
 * folders (they could lead out of the folder, or round in a loop), unsafe
 * names, and what the ignore rules say (an ignored folder is not entered).
 * Files that vanish while listed are left out.
 */
export async function listSharedFiles(
  dir: string,
  cache: HashCache = new HashCache(),
  options: ListOptions = {},
): Promise<LocalFile[]> {
  const ignore = options.ignore ?? IgnoreRules.DEFAULT;
  const skip = options.onSkip ?? (() => {});
  const root = dir.replace(/\/+$/, "");
  const files: LocalFile[] = [];
  // One buffer for the whole listing: a thousand small files must not cost a thousand.
  const buffer = new Uint8Array(HASH_BUFFER_BYTES);
  // Folders still to list, by relative path ("" is the shared folder itself).
  const folders = [""];
  while (folders.length > 0) {
    const folder = folders.pop()!;
    try {
      for await (const entry of Deno.readDir(folder === "" ? root : `${root}/${folder}`)) {
        // Never shared, never said: our temp files, the state folder, .p2pignore, dotfiles.
        if (entry.name.startsWith(".")) continue;
        const path = folder === "" ? entry.name : `${folder}/${entry.name}`;
        const target = entry.isSymlink
          ? await Deno.stat(`${root}/${path}`).catch(() => null)
          : null;
        if (target?.isDirectory) {
          skip({ path: `${path}/`, reason: "a symlinked folder is not followed" });
          continue;
        }
        const reason = refusalReason(path);
        if (reason !== null) {
          skip({ path, reason });
          continue;
        }
        const ignored = ignore.match(path, entry.isDirectory);
        if (ignored !== null) {
          skip({ path: ignored.path, reason: ignored.reason, ignored });
          continue;
        }
        if (entry.isDirectory) {
          // A folder this deep could hold no file with a path short enough to send.
          if (path.split("/").length >= MAX_PATH_DEPTH) {
            skip({ path: `${path}/`, reason: `deeper than ${MAX_PATH_DEPTH} names in all` });
          } else {
            folders.push(path);
          }
          continue;
        }
        // A plain file whose stat matches the cache was checked and hashed before: one lstat
        // instead of the open, fstat and folder checks (100,000 files: ~5 s a round saved).
        // Sync: a few microseconds each, where the async call costs a thread hop (~13 µs).
        if (entry.isFile && cache.has(path)) {
          const info = lstatSyncOrNull(`${root}/${path}`);
          const sha256 = info?.isFile ? cache.get(path, info) : undefined;
          if (info && sha256 !== undefined) {
            files.push({ name: path, mtime: wholeSeconds(info), size: info.size, sha256 });
            continue;
          }
        }
        const file = await hashShared(dir, path, ignore, cache, buffer).catch((err) => {
          if (!(err instanceof RefusedError)) throw err;
          if (err.message !== NO_SUCH_FILE) skip({ path, reason: err.message });
          return null;
        });
        if (file !== null) files.push(file);
      }
    } catch (err) {
      // A subfolder that went away, or that this user may not list, is left out; the root is not.
      if (folder === "") throw err;
      if (!(err instanceof Deno.errors.NotFound)) {
        skip({ path: `${folder}/`, reason: `cannot list it: ${errorMessage(err)}` });
      }
    }
  }
  cache.prune(new Set(files.map((f) => f.name)));
  return files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** `Deno.lstatSync`, or `null` when the name is gone or cannot be looked at. */
function lstatSyncOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.lstatSync(path);
  } catch {
    return null;
  }
}

/** One listed file: opened as a shared file, hashed (or its hash taken from the cache). */
async function hashShared(
  dir: string,
  path: string,
  ignore: IgnoreRules,
  cache: HashCache,
  buffer: Uint8Array,
): Promise<LocalFile> {
  const opened = await openSharedFile(dir, path, ignore);
  try {
    let sha256 = cache.get(path, opened.info);
    if (sha256 === undefined) {
      sha256 = await hashFile(opened.file, buffer);
      cache.set(path, opened.info, sha256);
    }
    return { name: path, mtime: wholeSeconds(opened.info), size: opened.info.size, sha256 };
  } finally {
    opened.file.close();
  }
}

/** A file's mtime in whole seconds, rounded down, as the protocol carries it. */
export function wholeSeconds(info: Deno.FileInfo): number {
  return Math.floor((info.mtime?.getTime() ?? 0) / 1000);
}

/** SHA-256 of an open file from its current position to the end, read in chunks. */
export async function hashFile(
  file: Reader,
  buffer: Uint8Array = new Uint8Array(HASH_BUFFER_BYTES),
): Promise<string> {
  const hash = createHash("sha256");
  while (true) {
    const n = await file.read(buffer);
    if (n === null) return hash.digest("hex");
    hash.update(buffer.subarray(0, n));
  }
}

/** A path that is not a plain shared file inside the folder. */
export class RefusedError extends Error {
  override name = "RefusedError";
}

/** The reason a {@linkcode RefusedError} gives for a path with nothing there. */
const NO_SUCH_FILE = "no such file";

/** What {@linkcode openSharedFile} gives to read from: a `Deno.FsFile`, or a small file's descriptor. */
export interface SharedFile extends Reader {
  /** Reads into `p` at once; `null` at the end of the file. */
  readSync(p: Uint8Array): number | null;
  /** Moves to `offset` bytes from the start (the only way used here). */
  seek(offset: number, whence: Deno.SeekMode.Start): Promise<number>;
  close(): void;
}

/** A file opened by {@linkcode openSharedFile}. */
export interface OpenedFile {
  /** Open for reading, at position 0. */
  file: SharedFile;
  /** Its metadata, taken from the open file itself. */
  info: Deno.FileInfo;
}

/**
 * Opens `name` (a relative path) for reading if it is a shared plain file
 * inside `dir` (which must be a real path, no symlinks in it), reached
 * through real folders only: a symlinked folder on the way is refused. A
 * symlink to a file is followed only when it leads to a shared file inside
 * `dir`. With `ignore`, an ignored path is refused too. The file is checked
 * after opening as well, so swapping it for a symlink at the wrong moment
 * does not help.
 *
 * @throws {RefusedError} with a reason a log line can show.
 */
export async function openSharedFile(
  dir: string,
  name: string,
  ignore?: IgnoreRules,
): Promise<OpenedFile> {
  const reason = refusalReason(name);
  if (reason !== null) throw new RefusedError(reason);
  const ignored = ignore?.ignored(name) ?? null;
  if (ignored !== null) throw new RefusedError(`ignored here (${ignored.reason})`);
  const root = dir.replace(/\/+$/, "");
  let target = pathIn(dir, name);
  let before: Deno.FileInfo;
  try {
    const slash = name.lastIndexOf("/");
    if (slash >= 0) {
      // Its folder, resolved, must be where the path says: no symlinked folder on the way.
      const folder = `${root}/${name.slice(0, slash)}`;
      if ((await Deno.realPath(folder)) !== folder) {
        throw new RefusedError("a folder on its path is a symlink");
      }
    }
    // Sync, as the listing's lstat: microseconds, where the async call's thread hop costs
    // more than the look itself (every pipelined request of a small file comes here).
    before = Deno.lstatSync(target);
    if (before.isSymlink) {
      target = await Deno.realPath(target);
      if (!target.startsWith(`${root}/`)) {
        throw new RefusedError("symlink leads out of the shared folder");
      }
      const inside = target.slice(root.length + 1);
      if (refusalReason(inside) !== null || (ignore?.ignored(inside) ?? null) !== null) {
        throw new RefusedError("symlink leads to a file that is not shared");
      }
      before = await Deno.lstat(target);
    }
  } catch (err) {
    if (err instanceof RefusedError) throw err;
    if (err instanceof Deno.errors.NotFound) throw new RefusedError(NO_SUCH_FILE);
    if (err instanceof Deno.errors.NotCapable) {
      throw new RefusedError("symlink leads out of the shared folder");
    }
    throw new RefusedError(`cannot read it: ${errorMessage(err)}`);
  }
  if (!before.isFile) throw new RefusedError("not a plain file");
  if (before.size <= SMALL_FILE_BYTES) {
    const small = SmallFile.open(target, before);
    if (small !== null) return { file: small, info: before };
  }
  let file: Deno.FsFile;
  try {
    // Async although the lstat above is sync: a FIFO put there since would block the open.
    file = await Deno.open(target, { read: true });
  } catch (err) {
    throw new RefusedError(`cannot open it: ${errorMessage(err)}`);
  }
  let info: Deno.FileInfo;
  try {
    info = file.statSync();
  } catch (err) {
    file.close();
    throw new RefusedError(`cannot read it: ${errorMessage(err)}`);
  }
  if (!info.isFile || info.ino !== before.ino || info.dev !== before.dev) {
    file.close();
    throw new RefusedError("the file changed while it was being opened");
  }
  return { file, info };
}

/**
 * A small shared file read through its descriptor with synchronous calls:
 * every request a peer serves, and every file a listing hashes, opens one,
 * and the trip to a worker thread an async open makes costs more than the
 * open itself. It is opened with `O_NONBLOCK` (and `O_NOFOLLOW`), which
 * Deno's own open cannot ask for: a FIFO swapped in after the lstat would
 * otherwise block the whole peer in `open()`.
 */
class SmallFile implements SharedFile {
  #fd: number;
  #at = 0;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /**
   * Opens `path` if it is still the plain file `before` describes (same
   * inode, size and mtime); `null` otherwise, or when it cannot be opened
   * this way: the caller then takes the usual way, which says why.
   */
  static open(path: string, before: Deno.FileInfo): SmallFile | null {
    let fd: number;
    try {
      fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOFOLLOW);
    } catch {
      return null;
    }
    try {
      const now = fstatSync(fd);
      if (
        now.isFile() && now.ino === before.ino && now.dev === before.dev &&
        now.size === before.size &&
        Math.floor(now.mtimeMs) === (before.mtime?.getTime() ?? NaN)
      ) return new SmallFile(fd);
    } catch {
      // Taken as "changed": the usual way looks again.
    }
    closeSync(fd);
    return null;
  }

  readSync(p: Uint8Array): number | null {
    if (p.length === 0) return 0;
    const n = readSync(this.#fd, p, 0, p.length, this.#at);
    if (n === 0) return null;
    this.#at += n;
    return n;
  }

  read(p: Uint8Array): Promise<number | null> {
    try {
      return Promise.resolve(this.readSync(p));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  seek(offset: number, _whence: Deno.SeekMode.Start): Promise<number> {
    this.#at = offset;
    return Promise.resolve(offset);
  }

  close(): void {
    closeSync(this.#fd);
  }
}

/** A partial download found in the folder. */
export interface Partial {
  /** Its relative path. */
  path: string;
  /** The first 16 hex digits of the SHA-256 of the version it is part of. */
  version: string;
  /** The relative path of the file it is part of. */
  name: string;
  /** When it last grew (`Date.now()` ms). */
  mtime: number;
}

/**
 * Removes the temp files a killed peer left behind, in the folder and every
 * subfolder a download may write to (hidden and symlinked folders are not
 * entered); returns their relative paths. A resumable partial download
 * (see {@linkcode tempNameFor}) stays while `keep` says so, by default while
 * younger than {@linkcode PARTIAL_KEEP_MS}; of those, only the newest
 * {@linkcode MAX_PARTIALS} stay. With `partialsOnly` the other temp files
 * (downloads in flight that cannot resume) are left alone.
 *
 * @example
 * ```ts
 * import { removeStaleTempFiles } from "./files.ts";
 * const removed = await removeStaleTempFiles("/tmp/share");
 * ```
 */
export async function removeStaleTempFiles(
  dir: string,
  keep: (partial: Partial) => boolean = (p) => Date.now() - p.mtime < PARTIAL_KEEP_MS,
  partialsOnly = false,
): Promise<string[]> {
  const root = dir.replace(/\/+$/, "");
  const removed: string[] = [];
  const kept: Partial[] = [];
  const remove = async (path: string) => {
    await Deno.remove(`${root}/${path}`).catch(() => {});
    removed.push(path);
  };
  const folders = [""];
  while (folders.length > 0) {
    const folder = folders.pop()!;
    try {
      for await (const entry of Deno.readDir(folder === "" ? root : `${root}/${folder}`)) {
        const path = folder === "" ? entry.name : `${folder}/${entry.name}`;
        if (entry.isFile && isTempName(entry.name)) {
          const partial = await partialAt(root, folder, entry.name);
          if (partial !== null && keep(partial)) kept.push(partial);
          else if (partial !== null || !partialsOnly) await remove(path);
        } else if (
          entry.isDirectory && !entry.name.startsWith(".") &&
          path.split("/").length < MAX_PATH_DEPTH
        ) {
          folders.push(path);
        }
      }
    } catch (err) {
      // A subfolder that cannot be listed holds nothing we could have written.
      if (folder === "") throw err;
    }
  }
  // Bounded in number too: the newest are the likeliest to be wanted still.
  kept.sort((a, b) => b.mtime - a.mtime);
  for (const partial of kept.slice(MAX_PARTIALS)) await remove(partial.path);
  return removed;
}

/** The partial download at `folder/name`, or `null` for a temp file that cannot resume. */
async function partialAt(root: string, folder: string, name: string): Promise<Partial | null> {
  const match = PARTIAL_NAME.exec(name);
  if (match === null) return null;
  // ".NAME.<16 hex>.part": the name is what lies between the dot and the version.
  const base = name.slice(1, -(match[1].length + TEMP_SUFFIX.length + 1));
  const info = await Deno.stat(`${root}/${folder === "" ? "" : folder + "/"}${name}`).catch(() =>
    null
  );
  if (info === null) return null;
  return {
    path: folder === "" ? name : `${folder}/${name}`,
    version: match[1],
    name: folder === "" ? base : `${folder}/${base}`,
    mtime: info.mtime?.getTime() ?? 0,
  };
}

/** A download that failed; the temp file is already gone. */
export class DownloadError extends Error {
  override name = "DownloadError";
}

/**
 * A download that arrived whole but was not put in place: the file here
 * changed meanwhile (edited, say) or is at least as new, and a download
 * must never overwrite a newer local edit. The temp file is already gone.
 */
export class LocalChangeError extends DownloadError {
  override name = "LocalChangeError";
}

/**
 * A download that failed through this machine's fault, not the holder's:
 * the folder is full, read-only, over its quota, or not writable by this
 * user or this Deno process. Asking another holder would fail the same
 * way, so the caller waits instead and blames nobody. The temp file is
 * already gone.
 */
export class LocalDiskError extends DownloadError {
  override name = "LocalDiskError";

  /**
   * @param message the reason, for a person: "no space left on the device (...)"
   * @param code what went wrong, for a program: `ENOSPC`, `EDQUOT`, `EROFS`, `EACCES`,
   *   `NotCapable`, `EFBIG`, `ENAMETOOLONG`, `space` (refused before starting: too big
   *   for the free space), or another error code
   * @param scope `"folder"`: nothing can be written there now; `"file"`: only this file fails
   * @param needed the file's size in bytes, when known
   * @param free bytes free on the device just after the failure, when known
   */
  constructor(
    message: string,
    readonly code: string,
    readonly scope: "folder" | "file",
    readonly needed?: number,
    readonly free?: number | null,
  ) {
    super(message);
  }

  /** The same failure with the free space measured after it (shown for a full device). */
  withFree(free: number | null): LocalDiskError {
    if (free === null || !(this.code in SPACE_ERRORS)) return this;
    return new LocalDiskError(
      spaceReason(this.code, this.needed, free),
      this.code,
      this.scope,
      this.needed,
      free,
    );
  }
}

/** The write errors that mean "no room", and how to say them. */
const SPACE_ERRORS: Record<string, string> = {
  ENOSPC: "no space left on the device",
  EDQUOT: "the disk quota is used up",
};

/** "no space left on the device (needs 2.0 MiB, 1.0 MiB free)", with what is known. */
function spaceReason(code: string, needed?: number, free?: number | null): string {
  const amounts = [
    ...(needed === undefined ? [] : [`needs ${formatBytes(needed)}`]),
    ...(free === undefined || free === null ? [] : [`${formatBytes(free)} free`]),
  ];
  return SPACE_ERRORS[code] + (amounts.length > 0 ? ` (${amounts.join(", ")})` : "");
}

/** Local write failures that concern the whole folder, and how to say them. */
const FOLDER_ERRORS: Record<string, string> = {
  ...SPACE_ERRORS,
  EROFS: "the file system is read-only",
  EACCES: "the system does not let this user write there",
  EPERM: "the system does not let this user write there",
};
/** Local write failures that concern one file only, and how to say them. */
const FILE_ERRORS: Record<string, string> = {
  EFBIG: "the file is too large for this file system",
  ENAMETOOLONG: "the name is too long for this file system",
};

/**
 * Turns an error from a file operation in the folder into a
 * {@linkcode LocalDiskError} saying why in plain words. Deno gives most
 * system errors as a plain `Error` with a `code` (`"ENOSPC"`); its own
 * permission check (`--allow-write`) is `Deno.errors.NotCapable`.
 *
 * @example
 * ```ts
 * import { localDiskError } from "./files.ts";
 * const err = Object.assign(new Error("No space left on device (os error 28)"), { code: "ENOSPC" });
 * localDiskError(err, 5).message; // "no space left on the device (needs 5 B)"
 * ```
 */
export function localDiskError(err: unknown, needed?: number): LocalDiskError {
  if (err instanceof LocalDiskError) return err;
  if (err instanceof Deno.errors.NotCapable) {
    return new LocalDiskError(
      "Deno's permissions do not allow writing there (start the peer with --allow-write for it)",
      "NotCapable",
      "folder",
    );
  }
  const code = (err as { code?: unknown })?.code;
  const key = typeof code === "string"
    ? code
    : err instanceof Deno.errors.PermissionDenied
    ? "EACCES"
    : "";
  if (key in SPACE_ERRORS) {
    return new LocalDiskError(spaceReason(key, needed), key, "folder", needed);
  }
  if (key in FOLDER_ERRORS) return new LocalDiskError(FOLDER_ERRORS[key], key, "folder", needed);
  if (key in FILE_ERRORS) return new LocalDiskError(FILE_ERRORS[key], key, "file", needed);
  // Anything else a file operation here throws is still ours to fix, not the holder's.
  return new LocalDiskError(errorMessage(err), key || "local", "file", needed);
}

/**
 * {@linkcode onDisk} for a synchronous call. Used for the quick metadata calls
 * of a download (lstat, stat, utime, rename): a few microseconds each, where
 * the async call costs a hop to a worker thread and back (~60 µs here, most
 * of a small file's cost), as the listing found too.
 */
function onDiskNow<T>(operation: () => T, needed?: number): T {
  try {
    return operation();
  } catch (err) {
    throw localDiskError(err, needed);
  }
}

/** Runs a file operation in the folder; any failure becomes a {@linkcode LocalDiskError}. */
async function onDisk<T>(operation: Promise<T>, needed?: number): Promise<T> {
  try {
    return await operation;
  } catch (err) {
    throw localDiskError(err, needed);
  }
}

/**
 * Refuses, before a byte moves, a download that cannot fit: `size` plus
 * {@linkcode SPACE_MARGIN_BYTES} must be free on the folder's device.
 * Without the permission to ask (`--allow-sys=statfs`) nothing is checked.
 */
async function checkSpace(dir: string, size: number): Promise<void> {
  const free = await freeBytes(dir);
  if (free === null || fits(size, free)) return;
  throw new LocalDiskError(
    `not enough space on the device (needs ${formatBytes(size)}, ${formatBytes(free)} free)`,
    "space",
    "file",
    size,
    free,
  );
}

/** What to fetch, from whom, and what it must turn out to be. */
export interface DownloadOptions {
  /** The folder to write into (a real path). */
  dir: string;
  /** The relative path; it must pass {@linkcode refusalReason}. Missing folders are made. */
  name: string;
  /** The holder's IP address or host name. */
  hostname: string;
  /** The holder's file-serving port. */
  port: number;
  /** The mtime (seconds) to give the file, as the directory says. */
  mtime: number;
  /** The expected length, when the directory gives one. */
  size?: number;
  /** The expected SHA-256 (hex), when the directory gives one. */
  sha256?: string;
  /**
   * The mtime (whole seconds) of the file here when the download was
   * planned, or `null` when there was none. If the file differs from that
   * just before the rename, the download is dropped. @default {undefined: compared with the
   * file as the download started only}
   */
  localMtime?: number | null;
  /**
   * The plan compared versions by content (the "versions" extension): the
   * download replaces a copy the swarm has seen superseded, however new its
   * mtime looks, so only a change made here meanwhile stops it.
   * @default {false}
   */
  byContent?: boolean;
  /** Seconds to wait for the connection. @default {5} */
  connectTimeoutSeconds?: number;
  /** Seconds without a single byte before giving up. @default {30} */
  idleTimeoutSeconds?: number;
  /** Largest Content-Length accepted. @default {MAX_FILE_BYTES} */
  maxBytes?: number;
  /** Called after each chunk with the bytes so far and the total. */
  onProgress?: (received: number, total: number) => void;
  /** Aborting closes the connection (a resumable partial file stays; see {@linkcode tempNameFor}). */
  signal?: AbortSignal;
  /**
   * Refuse a file bigger than the free space (less a margin) before
   * fetching it; needs `--allow-sys=statfs`, else skipped. @default {true}
   */
  checkSpace?: boolean;
  /**
   * The holder accepted extension "range": a partial download of this
   * version (one with `sha256`) continues from its length. Without it a
   * partial download starts again from 0. @default {false}
   */
  range?: boolean;
}

/** What a finished download was. */
export interface DownloadResult {
  /** Bytes in the file. */
  bytes: number;
  /** Bytes that came over the network this time (less than `bytes` after a resume). */
  received: number;
  /** Where this transfer started: the length of the partial download it continued (0: none). */
  resumedFrom: number;
  /** Seconds from connecting to the rename. */
  seconds: number;
  /** SHA-256 of the file. */
  sha256: string;
  /** Whether the hash was checked against the directory's. */
  verified: boolean;
  /**
   * The file's metadata as written, taken from the open file just before
   * the rename (which keeps its inode, size and mtime).
   */
  info: Deno.FileInfo;
}

/**
 * Fetches one file from a holder: sends the name and `\n`, reads
 * `Content-Length: N`, streams exactly N bytes into a temp file while
 * hashing them, checks length and hash, sets the mtime, and renames the temp
 * file over `name`, unless the file there changed meanwhile or is at least
 * as new. A file known to be bigger than the free space is refused before
 * connecting (see {@linkcode DownloadOptions.checkSpace}).
 *
 * With a SHA-256 the temp file is the version's partial file: when the
 * download stops (the holder fails, the network, this peer is killed) it
 * keeps what arrived, and the next download of that version from a holder
 * with "range" asks only for the rest (`{"name": ..., "offset": N}`),
 * hashing the kept bytes first: the whole file is still checked. On any
 * other failure the temp file is removed. The final name is left as it was.
 *
 * @example
 * ```ts
 * import { downloadFile } from "./files.ts";
 * const result = await downloadFile({ dir: "/tmp/share", name: "a.txt", hostname: "127.0.0.1", port: 8001, mtime: 1700000000 });
 * console.log(`${result.bytes} B, SHA-256 ${result.sha256}`);
 * ```
 * @throws {LocalChangeError} when the file here changed or is as new: it is kept.
 * @throws {LocalDiskError} when this machine cannot store it (full, read-only, no permission).
 * @throws {DownloadError} saying what else went wrong (the holder's side or the network).
 */
export async function downloadFile(options: DownloadOptions): Promise<DownloadResult> {
  const started = performance.now();
  const incoming = await IncomingFile.open(options, options.range ?? false);
  const where = formatAddr({ hostname: options.hostname, port: options.port });
  let conn: Deno.TcpConn;
  try {
    conn = await connectTo(options.hostname, options.port, options.connectTimeoutSeconds ?? 5);
  } catch (err) {
    throw await incoming.abandon(new DownloadError(errorMessage(err)));
  }
  const onAbort = () => closeQuietly(conn);
  options.signal?.addEventListener("abort", onAbort);
  const reader = new ResponseReader(conn, (options.idleTimeoutSeconds ?? 30) * 1000);
  try {
    await incoming.prepare();
    // A resumed download asks for the rest only; otherwise the course's request.
    const request = incoming.offset > 0
      ? JSON.stringify({ name: options.name, offset: incoming.offset })
      : options.name;
    await writeAll(conn, new TextEncoder().encode(request + "\n"));
    const total = await reader.header(where, options.maxBytes ?? MAX_FILE_BYTES);
    await incoming.begin(total, where);
    await reader.body(total, where, (chunk) => incoming.take(chunk));
    return await incoming.finish(where, started);
  } catch (err) {
    if (err instanceof DownloadError) throw await incoming.abandon(err);
    if (options.signal?.aborted) throw await incoming.abandon(new DownloadError("stopped"));
    if (reader.timedOut) {
      throw await incoming.abandon(
        new DownloadError(
          `${where} sent nothing for ${options.idleTimeoutSeconds ?? 30} s: gave up`,
        ),
      );
    }
    throw await incoming.abandon(
      new DownloadError(`transfer from ${where} failed: ${errorMessage(err)}`),
    );
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
    reader.stop();
    closeQuietly(conn);
  }
}

/**
 * One file on its way in: the checks before a byte moves, the temp file (a
 * fresh one, or the version's partial file to continue), the hash, and the
 * checks and rename at the end. Shared by a download on its own connection
 * and one of many on a pipelined connection ({@linkcode HolderConnection}).
 */
class IncomingFile {
  /** Bytes already in the partial file when this transfer started. */
  offset = 0;
  /** Bytes taken in this transfer. */
  received = 0;
  /** Bytes this transfer is to bring (set by `begin()`). */
  total = 0;
  #file: Deno.FsFile | null = null;
  #hash = createHash("sha256");
  #before: Deno.FileInfo | null = null;
  /** Whether the temp file is the version's partial file, kept when the transfer stops. */
  #resumable: boolean;
  /** Whether what is in the temp file must go whatever happens (wrong bytes, a local failure). */
  #discard = false;

  private constructor(
    readonly options: DownloadOptions,
    readonly tempPath: string,
    readonly target: string,
  ) {
    this.#resumable = options.sha256 !== undefined;
  }

  /**
   * Checks the name and mtime, the free space, the folders on the way;
   * opens the temp file, continuing a partial download of the same version
   * when `resume` (its bytes hashed first).
   */
  static async open(options: DownloadOptions, resume: boolean): Promise<IncomingFile> {
    const { dir, name } = options;
    const reason = refusalReason(name);
    // Never write a name that could leave the folder, whatever a directory says.
    if (reason !== null) throw new DownloadError(`refused to write "${name}": ${reason}`);
    // Checked before a byte moves: a file system could not store it, and the file would come again.
    if (!(options.mtime >= 0 && options.mtime <= MAX_MTIME_SECONDS)) {
      throw new DownloadError(`refused to fetch "${name}": mtime ${options.mtime} is out of range`);
    }
    const sha256 = options.sha256 !== undefined && /^[0-9a-f]{64}$/i.test(options.sha256)
      ? options.sha256
      : undefined;
    const incoming = new IncomingFile(
      options,
      pathIn(dir, tempNameFor(name, sha256)),
      pathIn(dir, name),
    );
    if (sha256 === undefined) incoming.#resumable = false;
    // Only looked at here (nothing is written before the holder is asked, as before "range").
    const kept = incoming.#resumable && resume
      ? await onDisk(lstatOrNull(incoming.tempPath))
      : null;
    if (kept !== null && kept.isFile && (options.size === undefined || kept.size <= options.size)) {
      incoming.offset = kept.size;
    }
    if ((options.checkSpace ?? true) && options.size !== undefined) {
      await checkSpace(dir, options.size - incoming.offset);
    }
    return incoming;
  }

  /** Makes the folders on the way, and notes the file here as the download starts. */
  async prepare(): Promise<void> {
    const here = await prepareFolders(this.options.dir, this.options.name);
    // The file here as the download starts, to notice an edit made while the bytes travel.
    // The lstat that checked the name serves, but for a symlink: the listing follows those.
    this.#before = here?.isSymlink ? await onDisk(statOrNull(this.target)) : here;
  }

  /**
   * Checks the length announced (`total`, from `offset`) against the
   * directory's size, and opens the temp file: the partial file to continue
   * (its bytes hashed first), or a fresh one.
   */
  async begin(total: number, where: string): Promise<void> {
    const { size, dir } = this.options;
    if (size !== undefined && this.offset + total !== size) {
      throw new DownloadError(
        this.offset > 0
          ? `${where} offers ${total} bytes from byte ${this.offset}, but the directory says ${size} in all`
          : `${where} offers ${total} bytes but the directory says ${size}`,
      );
    }
    this.total = total;
    // A course peer's entry has no size: the header gives it, still before a byte is stored.
    if ((this.options.checkSpace ?? true) && size === undefined) await checkSpace(dir, total);
    // Every file operation from here on is this machine's business, never the holder's fault.
    if (this.offset > 0) {
      this.#file = await onDisk(Deno.open(this.tempPath, { read: true, write: true }), size);
      // The kept bytes count towards the hash: the whole file is still checked at the end.
      const buffer = new Uint8Array(HASH_BUFFER_BYTES);
      let hashed = 0;
      while (hashed < this.offset) {
        const n = await onDisk(
          this.#file.read(buffer.subarray(0, Math.min(buffer.length, this.offset - hashed))),
        );
        if (n === null) break;
        this.#hash.update(buffer.subarray(0, n));
        hashed += n;
      }
      if (hashed < this.offset) {
        this.#discard = true;
        throw new DownloadError(`the partial file of ${this.options.name} shrank; starting over`);
      }
      // Anything past the offset (a write cut short) is not part of the file.
      await onDisk(this.#file.truncate(this.offset));
      await onDisk(this.#file.seek(this.offset, Deno.SeekMode.Start));
    } else {
      const how: Deno.OpenOptions = {
        write: true,
        // A partial file that cannot be used (a holder without "range") starts again.
        ...(this.#resumable ? { create: true, truncate: true } : { createNew: true }),
        mode: 0o644,
      };
      // A small file's open is a few microseconds: done here, it saves the hop to a worker
      // thread and back that an async open costs (most of a small file's time, see onDiskNow).
      // (Not over something that is no plain file, a FIFO say: opening that could block.)
      const there = this.#resumable ? onDiskNow(() => lstatNowOrNull(this.tempPath)) : null;
      this.#file = this.total <= SMALL_FILE_BYTES && (there === null || there.isFile)
        ? onDiskNow(() => Deno.openSync(this.tempPath, how), this.total)
        : await onDisk(Deno.open(this.tempPath, how), this.total);
    }
  }

  /** Writes and hashes one piece of the body. */
  async take(chunk: Uint8Array): Promise<void> {
    this.#hash.update(chunk);
    if (this.total <= SMALL_FILE_BYTES) {
      // Into the page cache, without a thread hop (see begin()); syncData() waits for the disk.
      const file = this.#file!;
      for (let at = 0; at < chunk.length;) {
        at += onDiskNow(() => file.writeSync(chunk.subarray(at)), this.offset + this.total);
      }
    } else await onDisk(writeAll(this.#file!, chunk), this.offset + this.total);
    this.received += chunk.length;
    this.options.onProgress?.(this.offset + this.received, this.offset + this.total);
  }

  /** Checks the hash, puts the file on disk with its mtime, and renames it into place. */
  async finish(where: string, started: number): Promise<DownloadResult> {
    const options = this.options;
    const length = this.offset + this.received;
    const sha256 = this.#hash.digest("hex");
    if (options.sha256 !== undefined && options.sha256.toLowerCase() !== sha256) {
      // Wrong bytes are never kept to resume from.
      this.#discard = true;
      throw await this.abandon(
        new DownloadError(
          `wrong bytes from ${where}: SHA-256 ${sha256.slice(0, 12)}… instead of ${
            options.sha256.slice(0, 12)
          }…${this.offset > 0 ? ` (continued from byte ${this.offset}; starting over)` : ""}`,
        ),
      );
    }
    try {
      // On disk before it gets its name, so a crash cannot leave a torn file under that name
      // (kept for small files too: without it ext4 may show a new name with no data after a crash).
      await onDisk(this.#file!.syncData(), length);
      // Through the open file, not the path: no second look-up of the name.
      const file = this.#file!;
      const mtime = new Date(options.mtime * 1000);
      onDiskNow(() => file.utimeSync(mtime, mtime));
      // The file as it will be under its name: the rename moves the inode, and may only touch
      // its ctime (then the hash cache misses and the file is read once more; never the reverse).
      const info = onDiskNow(() => file.statSync());
      file.close();
      this.#file = null;
      // Looked at again just before the rename, with nothing awaited in between (the sync calls
      // keep the gap to microseconds): a newer local edit must not be overwritten.
      const changed = localChange(
        onDiskNow(() => statNowOrNull(this.target)),
        this.#before,
        options,
      );
      if (changed !== null) throw new LocalChangeError(changed);
      onDiskNow(() => Deno.renameSync(this.tempPath, this.target));
      return {
        bytes: length,
        received: this.received,
        resumedFrom: this.offset,
        seconds: (performance.now() - started) / 1000,
        sha256,
        verified: options.sha256 !== undefined,
        info,
      };
    } catch (err) {
      throw await this.abandon(err);
    }
  }

  /**
   * Closes the temp file after a failure and returns the error to throw.
   * A resumable partial file stays when the holder or the network failed (or
   * the download was stopped); it goes after wrong bytes, a local change, or
   * a local failure (a full disk needs the room).
   */
  async abandon(err: unknown): Promise<unknown> {
    closeQuietly(this.#file ?? { close() {} });
    this.#file = null;
    const local = err instanceof LocalChangeError || err instanceof LocalDiskError;
    if (!this.#resumable || this.#discard || local || !(err instanceof DownloadError)) {
      await Deno.remove(this.tempPath).catch(() => {});
    }
    if (err instanceof LocalDiskError && err.scope === "folder" && err.free === undefined) {
      // Measured once the temp file is gone: the room the user has to work with.
      return err.withFree(await freeBytes(this.options.dir));
    }
    return err;
  }
}

/** Options for {@linkcode HolderConnection.open}. */
export interface HolderConnectionOptions {
  /** Seconds to wait for the connection. @default {5} */
  connectTimeoutSeconds?: number;
  /** Seconds without a byte while an answer is due before the connection is given up. @default {30} */
  idleTimeoutSeconds?: number;
  /** Aborting closes the connection: every request on it fails. */
  signal?: AbortSignal;
}

/**
 * One connection to a holder that accepted "pipeline": many files asked for
 * at once, one request line each, answered in order. A file's request goes
 * out as soon as it is asked for; its answer is read when its turn comes.
 * An `Error:` answer fails that file only; a broken connection fails every
 * file still on it.
 *
 * @example
 * ```ts
 * import { HolderConnection } from "./files.ts";
 * const holder = await HolderConnection.open("127.0.0.1", 8001);
 * const [a, b] = await Promise.all(["a.txt", "b.txt"].map((name) =>
 *   holder.fetch({ dir: "/tmp/share", name, hostname: "127.0.0.1", port: 8001, mtime: 1700000000 })
 * ));
 * holder.close();
 * ```
 */
export class HolderConnection {
  /** Files asked for whose answer has not been read yet. */
  outstanding = 0;
  /** Their announced sizes, summed. */
  bytesOutstanding = 0;
  /** Why the connection is unusable, once it is. */
  broken: DownloadError | null = null;
  /** When the last answer ended (`performance.now()`), for closing idle connections. */
  lastUsed = performance.now();
  #conn: Deno.TcpConn;
  #reader: ResponseReader;
  #where: string;
  #turn: Promise<void> = Promise.resolve();
  #lines: string[] = [];
  #sending: Promise<void> | null = null;
  #options: HolderConnectionOptions;

  private constructor(conn: Deno.TcpConn, where: string, options: HolderConnectionOptions) {
    this.#conn = conn;
    this.#where = where;
    this.#options = options;
    this.#reader = new ResponseReader(conn, (options.idleTimeoutSeconds ?? 30) * 1000);
    options.signal?.addEventListener("abort", () => this.#break(new DownloadError("stopped")));
  }

  /**
   * Connects to a holder.
   *
   * @throws {DownloadError} when it cannot be reached.
   */
  static async open(
    hostname: string,
    port: number,
    options: HolderConnectionOptions = {},
  ): Promise<HolderConnection> {
    try {
      const conn = await connectTo(hostname, port, options.connectTimeoutSeconds ?? 5);
      return new HolderConnection(conn, formatAddr({ hostname, port }), options);
    } catch (err) {
      throw new DownloadError(errorMessage(err));
    }
  }

  /** Fetches one file over this connection (its `hostname` and `port` are this holder's). */
  async fetch(options: DownloadOptions): Promise<DownloadResult> {
    if (this.broken) throw this.broken;
    const started = performance.now();
    const size = options.size ?? 0;
    this.outstanding++;
    this.bytesOutstanding += size;
    try {
      const incoming = await IncomingFile.open(options, false);
      try {
        await incoming.prepare();
        if (this.broken) throw this.broken;
      } catch (err) {
        throw await incoming.abandon(err);
      }
      // Asked for now, read in turn: the answers come in the order of the requests.
      this.#send(JSON.stringify({ name: options.name }));
      const answer = this.#turn.then(() => this.#receive(incoming));
      this.#turn = answer.then(() => {}, () => {});
      try {
        await answer;
      } catch (err) {
        throw await incoming.abandon(err);
      }
      return await incoming.finish(this.#where, started);
    } finally {
      this.outstanding--;
      this.bytesOutstanding -= size;
      this.lastUsed = performance.now();
    }
  }

  /** Closes the connection; files still on it fail. */
  close(): void {
    this.#break(new DownloadError("connection closed"));
  }

  #break(err: DownloadError): void {
    this.broken ??= err;
    this.#reader.stop();
    closeQuietly(this.#conn);
  }

  /** Queues a request line; lines asked for together go out in one write. */
  #send(line: string): void {
    this.#lines.push(line);
    if (this.#sending !== null) return;
    this.#sending = (async () => {
      try {
        while (this.#lines.length > 0 && !this.broken) {
          const batch = this.#lines.join("\n") + "\n";
          this.#lines = [];
          await writeAll(this.#conn, new TextEncoder().encode(batch));
        }
      } catch (err) {
        this.#break(new DownloadError(`sending to ${this.#where} failed: ${errorMessage(err)}`));
      } finally {
        this.#sending = null;
      }
    })();
  }

  /** Reads one answer into `incoming`; an `Error:` answer fails it alone. */
  async #receive(incoming: IncomingFile): Promise<void> {
    if (this.broken) throw this.broken;
    let total: number;
    try {
      total = await this.#reader.header(this.#where, incoming.options.maxBytes ?? MAX_FILE_BYTES);
    } catch (err) {
      if (err instanceof RefusedAnswer) throw err;
      throw this.#failed(err);
    }
    // A local failure (a full disk) must not desynchronise the stream: the body is read anyway.
    let local: unknown = null;
    try {
      await incoming.begin(total, this.#where).catch((err) => {
        if (!(err instanceof LocalDiskError)) throw err;
        local = err;
      });
      await this.#reader.body(total, this.#where, async (chunk) => {
        if (local !== null) return;
        await incoming.take(chunk).catch((err) => local = err);
      });
    } catch (err) {
      throw this.#failed(err);
    }
    if (local !== null) throw local;
  }

  /** The connection is broken: every file still on it fails with the reason. */
  #failed(err: unknown): DownloadError {
    const reason = err instanceof DownloadError
      ? err
      : this.#options.signal?.aborted
      ? new DownloadError("stopped")
      : this.#reader.timedOut
      ? new DownloadError(
        `${this.#where} sent nothing for ${this.#options.idleTimeoutSeconds ?? 30} s: gave up`,
      )
      : new DownloadError(`transfer from ${this.#where} failed: ${errorMessage(err)}`);
    this.#break(reason);
    return this.broken!;
  }
}

/**
 * Makes the folders a download of `path` goes into, inside `dir` only: each
 * one that exists must be a real folder (a symlink is not followed: it could
 * lead out of the shared folder), each missing one is made. A folder where
 * the file should go is in the way too. Folders made for a download that
 * then fails stay, empty. Returns the lstat of `path` itself, or `null`
 * when nothing is there yet.
 *
 * @throws {LocalDiskError} saying what is in the way (for this file only), or why a folder cannot be made.
 */
async function prepareFolders(dir: string, path: string): Promise<Deno.FileInfo | null> {
  const names = path.split("/");
  let at = dir.replace(/\/+$/, "");
  for (let i = 0; i < names.length - 1; i++) {
    at += `/${names[i]}`;
    const shown = names.slice(0, i + 1).join("/");
    let info = onDiskNow(() => lstatNowOrNull(at));
    if (info === null) {
      // Made one at a time, checking each: mkdir's "recursive" would follow a symlink made meanwhile.
      await Deno.mkdir(at).catch((err) => {
        if (!(err instanceof Deno.errors.AlreadyExists)) throw localDiskError(err);
      });
      info = await onDisk(Deno.lstat(at));
    }
    if (info.isSymlink) {
      const why = `${shown} is a symlink here, and symlinked folders are not followed`;
      throw new LocalDiskError(why, "symlink", "file");
    }
    if (!info.isDirectory) {
      throw new LocalDiskError(`${shown} is a file here, not a folder`, "ENOTDIR", "file");
    }
  }
  const here = onDiskNow(() => lstatNowOrNull(`${at}/${names[names.length - 1]}`));
  if (here?.isDirectory) throw new LocalDiskError(`${path} is a folder here`, "EISDIR", "file");
  return here;
}

/** A path's own metadata (a symlink is not followed), or `null` when there is nothing. */
async function lstatOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.lstat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

/** {@linkcode lstatOrNull}, synchronous (see {@linkcode onDiskNow}). */
function lstatNowOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.lstatSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

/** {@linkcode statOrNull}, synchronous (see {@linkcode onDiskNow}). */
function statNowOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.statSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

/**
 * The file's metadata, or `null` when there is none. Symlinks are followed,
 * as the listing follows them, so the mtimes compare with the planned one.
 */
async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

/**
 * Why the file here must not be replaced by the download, or `null` when it
 * may be: it appeared or changed since the download was planned or started,
 * or it is at least as new as the download. A file that is gone is nothing
 * to lose.
 */
function localChange(
  now: Deno.FileInfo | null,
  before: Deno.FileInfo | null,
  options: DownloadOptions,
): string | null {
  if (now === null) return null;
  const mtime = wholeSeconds(now);
  if (before === null || options.localMtime === null) {
    return `${options.name} appeared here meanwhile (mtime ${mtime})`;
  }
  const same = now.ino === before.ino && now.dev === before.dev && now.size === before.size &&
    now.mtime?.getTime() === before.mtime?.getTime() &&
    now.ctime?.getTime() === before.ctime?.getTime();
  if (!same || (options.localMtime !== undefined && mtime !== options.localMtime)) {
    return `${options.name} changed here meanwhile (mtime now ${mtime})`;
  }
  if (!options.byContent && mtime >= Math.floor(options.mtime)) {
    return `${options.name} here is as new (mtime ${mtime} >= ${Math.floor(options.mtime)})`;
  }
  return null;
}

/** A holder's `Error: REASON` answer to an extended request: that file only failed. */
class RefusedAnswer extends DownloadError {
  override name = "RefusedAnswer";
}

/**
 * Reads a holder's answers from a connection: header lines, and bodies of
 * a known length (bytes read past a body are kept for the next answer, as
 * pipelined answers follow one another). Gives up when nothing arrives for
 * a while: a stalled holder must not hold a download slot forever.
 */
class ResponseReader {
  readonly lines: LineReader;
  timedOut = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Bytes read from the connection but not yet handed out. */
  #leftover: Uint8Array = new Uint8Array(0);
  #buffer: Uint8Array | null = null;

  constructor(readonly conn: Deno.Conn, readonly idleMs: number) {
    this.lines = new LineReader({ read: (p) => this.#read(p) }, MAX_HEADER_BYTES);
  }

  /**
   * Reads the header line: `Content-Length: N` gives N, `Error: REASON`
   * (extended requests) throws {@linkcode RefusedAnswer}.
   */
  async header(where: string, maxBytes: number): Promise<number> {
    let line: string | null;
    try {
      line = await this.lines.readLine();
    } catch (err) {
      if (err instanceof LineTooLongError) {
        throw new DownloadError(`${where} sent a header longer than ${MAX_HEADER_BYTES} bytes`);
      }
      throw err;
    }
    if (line === null) {
      throw new DownloadError(`${where} closed the connection without a Content-Length`);
    }
    const refused = /^Error:[ \t]*(.*)$/i.exec(line);
    if (refused) throw new RefusedAnswer(`${where} refused: ${refused[1].slice(0, 200)}`);
    const match = /^Content-Length:[ \t]*(\d{1,16})[ \t]*$/i.exec(line);
    if (!match) {
      throw new DownloadError(`${where} sent a bad header: ${JSON.stringify(line.slice(0, 80))}`);
    }
    const total = Number(match[1]);
    if (total > maxBytes) {
      throw new DownloadError(
        `${where} offers ${total} bytes, more than the ${maxBytes} we accept`,
      );
    }
    return total;
  }

  /** Hands exactly `total` bytes of body to `take`, piece by piece, in order. */
  async body(
    total: number,
    where: string,
    take: (chunk: Uint8Array) => Promise<void>,
  ): Promise<void> {
    // Bytes of the body that arrived together with the header line come first.
    const early = this.lines.takeBuffered();
    if (early.length > 0) this.#leftover = concatBytes([early, this.#leftover]);
    let got = 0;
    while (got < total) {
      let chunk: Uint8Array;
      if (this.#leftover.length > 0) {
        chunk = this.#leftover.subarray(0, total - got);
        this.#leftover = this.#leftover.subarray(chunk.length);
      } else {
        // One buffer per connection: with pipelining it holds several small answers at once.
        this.#buffer ??= new Uint8Array(TRANSFER_BUFFER_BYTES);
        const n = await this.#read(this.#buffer);
        if (n === null) {
          throw new DownloadError(`short transfer from ${where}: got ${got} of ${total} bytes`);
        }
        chunk = this.#buffer.subarray(0, Math.min(n, total - got));
        // The start of the next answer: kept, as a copy (the buffer is read into again).
        if (n > chunk.length) this.#leftover = this.#buffer.slice(chunk.length, n);
      }
      await take(chunk);
      got += chunk.length;
    }
  }

  /** Hands out kept bytes first, then reads the connection with the idle timer armed. */
  async #read(p: Uint8Array): Promise<number | null> {
    if (this.#leftover.length > 0) {
      const n = Math.min(p.length, this.#leftover.length);
      p.set(this.#leftover.subarray(0, n));
      this.#leftover = this.#leftover.subarray(n);
      return n;
    }
    this.#timer = setTimeout(() => {
      this.timedOut = true;
      closeQuietly(this.conn);
    }, this.idleMs);
    try {
      return await this.conn.read(p);
    } finally {
      clearTimeout(this.#timer);
    }
  }

  stop(): void {
    clearTimeout(this.#timer);
  }
}

/**
 * A connection's writer that gives up when no write completes for a while
 * (the twin of the reader above): a client that asked for a file and then
 * stopped reading must not hold the connection and the open file forever.
 * Each write arms the timer again; when it fires the connection is closed,
 * so the pending write fails and `timedOut` says why.
 *
 * @example
 * ```ts
 * import { writeAll } from "../lib/net.ts";
 * const conn = await Deno.connect({ hostname: "127.0.0.1", port: 8000 });
 * const out = new IdleWriter(conn, 30_000);
 * await writeAll(out, new TextEncoder().encode("a.txt\n"));
 * ```
 */
export class IdleWriter implements Writer {
  /** Whether the connection was closed because a write took too long. */
  timedOut = false;

  constructor(
    readonly conn: Writer & { close(): void },
    readonly idleMs: number,
  ) {}

  async write(p: Uint8Array): Promise<number> {
    const timer = setTimeout(() => {
      this.timedOut = true;
      closeQuietly(this.conn);
    }, this.idleMs);
    try {
      return await this.conn.write(p);
    } finally {
      clearTimeout(timer);
    }
  }
}
