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
import { errorMessage } from "../lib/cli.ts";
import { formatBytes } from "../lib/log.ts";
import { fits, freeBytes } from "./disk_space.ts";
import { LineReader, LineTooLongError } from "../lib/lines.ts";
import {
  closeQuietly,
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
/** How a temp file ends; with the leading dot the listing never shares it. */
const TEMP_SUFFIX = ".part";
/** Our temp files' names: `.<name>.<12 hex digits>.part` (or a hash instead of a long name). */
const TEMP_NAME = /^\..+\.[0-9a-f]{12}\.part$/;
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
 * A fresh temp path for a download of `path`, in the same folder (so the
 * final rename is atomic); hidden, so never shared.
 *
 * @example
 * ```ts
 * import { tempNameFor } from "./files.ts";
 * tempNameFor("docs/a.txt"); // "docs/.a.txt.1f2e3d4c5b6a.part"
 * ```
 */
export function tempNameFor(path: string): string {
  const slash = path.lastIndexOf("/");
  const name = path.slice(slash + 1);
  const random = crypto.getRandomValues(new Uint8Array(6));
  const tag = Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("");
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
  #entries = new Map<string, { key: string; sha256: string }>();

  /** Whether a hash of `name` is cached at all (it may be stale: see {@linkcode HashCache.get}). */
  has(name: string): boolean {
    return this.#entries.has(name);
  }

  /** The cached hash of `name` if its size, mtime, ctime and inode are unchanged. */
  get(name: string, info: Deno.FileInfo): string | undefined {
    const hit = this.#entries.get(name);
    return hit && hit.key === cacheKey(info) ? hit.sha256 : undefined;
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

/** A file opened by {@linkcode openSharedFile}. */
export interface OpenedFile {
  /** Open for reading, at position 0. */
  file: Deno.FsFile;
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
    before = await Deno.lstat(target);
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
  let file: Deno.FsFile;
  try {
    file = await Deno.open(target, { read: true });
  } catch (err) {
    throw new RefusedError(`cannot open it: ${errorMessage(err)}`);
  }
  const info = await file.stat();
  if (!info.isFile || info.ino !== before.ino || info.dev !== before.dev) {
    file.close();
    throw new RefusedError("the file changed while it was being opened");
  }
  return { file, info };
}

/**
 * Removes the temp files a killed peer left behind, in the folder and every
 * subfolder a download may write to (hidden and symlinked folders are not
 * entered); returns their relative paths.
 */
export async function removeStaleTempFiles(dir: string): Promise<string[]> {
  const root = dir.replace(/\/+$/, "");
  const removed: string[] = [];
  const folders = [""];
  while (folders.length > 0) {
    const folder = folders.pop()!;
    try {
      for await (const entry of Deno.readDir(folder === "" ? root : `${root}/${folder}`)) {
        const path = folder === "" ? entry.name : `${folder}/${entry.name}`;
        if (entry.isFile && isTempName(entry.name)) {
          await Deno.remove(`${root}/${path}`).catch(() => {});
          removed.push(path);
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
  return removed;
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
  /** Aborting closes the connection and removes the temp file. */
  signal?: AbortSignal;
  /**
   * Refuse a file bigger than the free space (less a margin) before
   * fetching it; needs `--allow-sys=statfs`, else skipped. @default {true}
   */
  checkSpace?: boolean;
}

/** What a finished download was. */
export interface DownloadResult {
  /** Bytes received. */
  bytes: number;
  /** Seconds from connecting to the rename. */
  seconds: number;
  /** SHA-256 of what was received. */
  sha256: string;
  /** Whether the hash was checked against the directory's. */
  verified: boolean;
  /** The file's metadata once in place. */
  info: Deno.FileInfo;
}

/**
 * Fetches one file from a holder: sends the name and `\n`, reads
 * `Content-Length: N`, streams exactly N bytes into a temp file while
 * hashing them, checks length and hash, sets the mtime, and renames the temp
 * file over `name`, unless the file there changed meanwhile or is at least
 * as new. On any failure the temp file is removed and the final name is
 * left as it was. A file known to be bigger than the free space is refused
 * before connecting (see {@linkcode DownloadOptions.checkSpace}).
 *
 * @throws {LocalChangeError} when the file here changed or is as new: it is kept.
 * @throws {LocalDiskError} when this machine cannot store it (full, read-only, no permission).
 * @throws {DownloadError} saying what else went wrong (the holder's side or the network).
 */
export async function downloadFile(options: DownloadOptions): Promise<DownloadResult> {
  const { dir, name } = options;
  const reason = refusalReason(name);
  // Never write a name that could leave the folder, whatever a directory says.
  if (reason !== null) throw new DownloadError(`refused to write "${name}": ${reason}`);
  // Checked before a byte moves: a file system could not store it, and the file would come again.
  if (!(options.mtime >= 0 && options.mtime <= MAX_MTIME_SECONDS)) {
    throw new DownloadError(`refused to fetch "${name}": mtime ${options.mtime} is out of range`);
  }
  const checkingSpace = options.checkSpace ?? true;
  if (checkingSpace && options.size !== undefined) await checkSpace(dir, options.size);
  const started = performance.now();
  const where = formatAddr({ hostname: options.hostname, port: options.port });
  let conn: Deno.TcpConn;
  try {
    conn = await connectTo(options.hostname, options.port, options.connectTimeoutSeconds ?? 5);
  } catch (err) {
    throw new DownloadError(errorMessage(err));
  }
  const onAbort = () => closeQuietly(conn);
  options.signal?.addEventListener("abort", onAbort);
  const reader = new IdleReader(conn, (options.idleTimeoutSeconds ?? 30) * 1000);
  const tempPath = pathIn(dir, tempNameFor(name));
  const target = pathIn(dir, name);
  let file: Deno.FsFile | null = null;
  try {
    await prepareFolders(dir, name);
    // The file here as the download starts, to notice an edit made while the bytes travel.
    const before = await onDisk(statOrNull(target));
    await writeAll(conn, new TextEncoder().encode(name + "\n"));
    const total = await readContentLength(reader, options, where);
    // A course peer's entry has no size: the header gives it, still before a byte is stored.
    if (checkingSpace && options.size === undefined) await checkSpace(dir, total);
    // Every file operation from here on is this machine's business, never the holder's fault.
    file = await onDisk(
      Deno.open(tempPath, { write: true, createNew: true, mode: 0o644 }),
      total,
    );
    const hash = createHash("sha256");
    let received = 0;
    const take = async (chunk: Uint8Array) => {
      hash.update(chunk);
      await onDisk(writeAll(file!, chunk), total);
      received += chunk.length;
      options.onProgress?.(received, total);
    };
    // Bytes of the body that arrived together with the header line.
    const early = reader.lines.takeBuffered();
    if (early.length > 0) await take(early.subarray(0, total));
    const buffer = new Uint8Array(Math.max(1, Math.min(TRANSFER_BUFFER_BYTES, total)));
    while (received < total) {
      const n = await reader.read(buffer.subarray(0, Math.min(buffer.length, total - received)));
      if (n === null) {
        throw new DownloadError(`short transfer from ${where}: got ${received} of ${total} bytes`);
      }
      await take(buffer.subarray(0, n));
    }
    const sha256 = hash.digest("hex");
    if (options.sha256 !== undefined && options.sha256.toLowerCase() !== sha256) {
      throw new DownloadError(
        `wrong bytes from ${where}: SHA-256 ${sha256.slice(0, 12)}… instead of ${
          options.sha256.slice(0, 12)
        }…`,
      );
    }
    // On disk before it gets its name, so a crash cannot leave a torn file under that name.
    await onDisk(file.syncData(), total);
    file.close();
    file = null;
    const mtime = new Date(options.mtime * 1000);
    await onDisk(Deno.utime(tempPath, mtime, mtime));
    // Looked at again just before the rename: a newer local edit must not be overwritten.
    const changed = localChange(await onDisk(statOrNull(target)), before, options);
    if (changed !== null) throw new LocalChangeError(changed);
    await onDisk(Deno.rename(tempPath, target));
    const info = await onDisk(Deno.stat(target));
    return {
      bytes: received,
      seconds: (performance.now() - started) / 1000,
      sha256,
      verified: options.sha256 !== undefined,
      info,
    };
  } catch (err) {
    file?.close();
    await Deno.remove(tempPath).catch(() => {});
    if (err instanceof LocalDiskError && err.scope === "folder" && err.free === undefined) {
      // Measured once the temp file is gone: the room the user has to work with.
      throw err.withFree(await freeBytes(dir));
    }
    if (err instanceof DownloadError) throw err;
    if (options.signal?.aborted) throw new DownloadError("stopped");
    if (reader.timedOut) {
      throw new DownloadError(
        `${where} sent nothing for ${options.idleTimeoutSeconds ?? 30} s: gave up`,
      );
    }
    throw new DownloadError(`transfer from ${where} failed: ${errorMessage(err)}`);
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
    reader.stop();
    closeQuietly(conn);
  }
}

/**
 * Makes the folders a download of `path` goes into, inside `dir` only: each
 * one that exists must be a real folder (a symlink is not followed: it could
 * lead out of the shared folder), each missing one is made. A folder where
 * the file should go is in the way too. Folders made for a download that
 * then fails stay, empty.
 *
 * @throws {LocalDiskError} saying what is in the way (for this file only), or why a folder cannot be made.
 */
async function prepareFolders(dir: string, path: string): Promise<void> {
  const names = path.split("/");
  let at = dir.replace(/\/+$/, "");
  for (let i = 0; i < names.length - 1; i++) {
    at += `/${names[i]}`;
    const shown = names.slice(0, i + 1).join("/");
    let info = await onDisk(lstatOrNull(at));
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
  if ((await onDisk(lstatOrNull(`${at}/${names[names.length - 1]}`)))?.isDirectory) {
    throw new LocalDiskError(`${path} is a folder here`, "EISDIR", "file");
  }
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

/** Reads and checks the header line; returns N. */
async function readContentLength(
  reader: IdleReader,
  options: DownloadOptions,
  where: string,
): Promise<number> {
  let line: string | null;
  try {
    line = await reader.lines.readLine();
  } catch (err) {
    if (err instanceof LineTooLongError) {
      throw new DownloadError(`${where} sent a header longer than ${MAX_HEADER_BYTES} bytes`);
    }
    throw err;
  }
  if (line === null) {
    throw new DownloadError(`${where} closed the connection without a Content-Length`);
  }
  const match = /^Content-Length:[ \t]*(\d{1,16})[ \t]*$/i.exec(line);
  if (!match) {
    throw new DownloadError(`${where} sent a bad header: ${JSON.stringify(line.slice(0, 80))}`);
  }
  const total = Number(match[1]);
  const max = options.maxBytes ?? MAX_FILE_BYTES;
  if (total > max) {
    throw new DownloadError(`${where} offers ${total} bytes, more than the ${max} we accept`);
  }
  if (options.size !== undefined && total !== options.size) {
    throw new DownloadError(
      `${where} offers ${total} bytes but the directory says ${options.size}`,
    );
  }
  return total;
}

/**
 * A connection's reader that gives up when nothing arrives for a while: a
 * stalled holder must not hold a download slot forever.
 */
class IdleReader implements Reader {
  readonly lines: LineReader;
  timedOut = false;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(readonly conn: Deno.Conn, readonly idleMs: number) {
    this.lines = new LineReader(this, MAX_HEADER_BYTES);
  }

  async read(p: Uint8Array): Promise<number | null> {
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
