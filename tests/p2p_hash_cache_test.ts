/**
 * The peer's hash cache must never hide a change: `cp -p`, `rsync -t` and
 * `tar x` rewrite a file and put its old mtime (and size) back.
 */

import assert from "node:assert/strict";
import { HashCache } from "../p2p/files.ts";

Deno.test("HashCache: a rewrite that restores size and mtime is not served from the cache", async () => {
  const dir = await Deno.makeTempDir({ prefix: "hash_cache_" });
  try {
    const path = `${dir}/a.txt`;
    await Deno.writeTextFile(path, "first");
    const before = await Deno.stat(path);
    const cache = new HashCache();
    // As if hashed long after the last change, so that the entry is kept.
    cache.set("a.txt", before, "hash-of-first", Date.now() + 60_000);
    assert.equal(cache.get("a.txt", before), "hash-of-first");

    // ctime comes in whole seconds: make sure the rewrite lands in another one.
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    await Deno.writeTextFile(path, "other");
    await Deno.utime(path, before.atime!, before.mtime!);
    const after = await Deno.stat(path);
    assert.equal(after.size, before.size);
    assert.equal(after.mtime?.getTime(), before.mtime?.getTime());
    assert.equal(after.ino, before.ino);
    assert.equal(cache.get("a.txt", after), undefined, "the rewrite must be hashed again");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("HashCache: a file changed within the last two seconds is hashed again next time", async () => {
  const dir = await Deno.makeTempDir({ prefix: "hash_cache_" });
  try {
    await Deno.writeTextFile(`${dir}/b.txt`, "fresh");
    const info = await Deno.stat(`${dir}/b.txt`);
    const cache = new HashCache();
    cache.set("b.txt", info, "hash-of-fresh");
    assert.equal(cache.get("b.txt", info), undefined);
    cache.set("b.txt", info, "hash-of-fresh", Date.now() + 5_000);
    assert.equal(cache.get("b.txt", info), "hash-of-fresh");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("HashCache.setWritten: a download's hash is trusted while fresh, then read once more", async () => {
  const dir = await Deno.makeTempDir({ prefix: "hash_cache_" });
  try {
    await Deno.writeTextFile(`${dir}/c.txt`, "downloaded");
    const info = await Deno.stat(`${dir}/c.txt`);
    const cache = new HashCache();
    cache.setWritten("c.txt", info, "hash-of-download");
    // Fresh: every listing in the next moments takes the hash computed as the bytes arrived.
    assert.equal(cache.get("c.txt", info, Date.now()), "hash-of-download");
    // Once its stat can be trusted, the next listing reads the file once more.
    assert.equal(cache.get("c.txt", info, Date.now() + 5_000), undefined);
    // And any change of size, mtime, ctime or inode is a miss at once.
    await Deno.writeTextFile(`${dir}/c.txt`, "edited!!!!");
    const edited = await Deno.stat(`${dir}/c.txt`);
    await Deno.utime(`${dir}/c.txt`, info.atime!, info.mtime!);
    const restored = await Deno.stat(`${dir}/c.txt`);
    assert.equal(restored.size, info.size);
    if (restored.ctime?.getTime() !== info.ctime?.getTime() || edited.ino !== info.ino) {
      assert.equal(cache.get("c.txt", restored, Date.now()), undefined);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
