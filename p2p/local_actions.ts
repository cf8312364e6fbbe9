/**
 * The peer's changes to its own folder that are not downloads: keeping a
 * copy that lost a conflict under its conflict name, deleting a file the
 * swarm deleted, and telling a deleted file from one that is only
 * unreadable for a moment. Each checks the file once more just before it
 * acts, so a user's edit made in between is never the thing removed.
 *
 * @module
 */

import { hashFile, openSharedFile, pathIn } from "./files.ts";

/** Whether nothing at all is at `path` (not merely unreadable: that is not a deletion). */
async function absent(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return false;
  } catch (err) {
    return err instanceof Deno.errors.NotFound;
  }
}

/**
 * The paths among `paths` that are really gone from the folder `dir`: a
 * file the listing skipped because it could not be read, or a name that is
 * now a folder, is not a deletion.
 */
export async function goneFrom(dir: string, paths: Iterable<string>): Promise<Set<string>> {
  const gone = new Set<string>();
  for (const path of paths) if (await absent(pathIn(dir, path))) gone.add(path);
  return gone;
}

/** The SHA-256 of a shared file now, or `null` when it cannot be read as one. */
async function currentHash(dir: string, path: string): Promise<string | null> {
  try {
    const opened = await openSharedFile(dir, path);
    try {
      return await hashFile(opened.file);
    } finally {
      opened.file.close();
    }
  } catch {
    return null;
  }
}

/**
 * Renames the local copy of `from`, which lost a conflict, to `to`. When
 * `to` already holds the same bytes (a second try, say), `from` is simply
 * let go of, since its bytes are safe; when `to` holds other bytes, or
 * `from` changed since it was planned (no longer `sha256`), nothing is done.
 * Returns why it did nothing, or `null` when the copy is in place.
 */
export async function keepConflictCopy(
  dir: string,
  from: string,
  to: string,
  sha256: string,
): Promise<string | null> {
  if ((await currentHash(dir, from)) !== sha256) return `${from} changed here meanwhile`;
  if (!(await absent(pathIn(dir, to)))) {
    if ((await currentHash(dir, to)) !== sha256) return `${to} exists with other contents`;
    await Deno.remove(pathIn(dir, from));
    return null;
  }
  await Deno.rename(pathIn(dir, from), pathIn(dir, to));
  return null;
}

/**
 * Deletes `path` if it still holds `sha256` (the version the swarm deleted).
 * Returns why it did not, or `null` when the file is gone.
 */
export async function deleteIfUnchanged(
  dir: string,
  path: string,
  sha256: string,
): Promise<string | null> {
  if ((await currentHash(dir, path)) !== sha256) return `${path} changed here meanwhile`;
  await Deno.remove(pathIn(dir, path));
  return null;
}
