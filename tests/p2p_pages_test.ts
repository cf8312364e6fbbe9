/** Big folders in small messages: parts of a file list, and pages of directory changes. */

import assert from "node:assert/strict";
import { ChangeLog, PAGE_ENTRIES, splitIntoParts } from "../p2p/pages.ts";

Deno.test("splitIntoParts(): parts within the budget, in order, none lost; an empty list is one part", () => {
  const items = Array.from({ length: 1000 }, (_, i) => `file_${i}`.padEnd(100, "x"));
  const parts = splitIntoParts(items, (s) => s.length + 60, 10_000);
  assert.deepEqual(parts.flat(), items);
  for (const part of parts) {
    assert.ok(part.reduce((n, s) => n + s.length + 62, 0) <= 10_000 || part.length === 1);
  }
  assert.ok(parts.length > 1);
  assert.deepEqual(splitIntoParts([], () => 1), [[]]);
  assert.deepEqual(splitIntoParts([5], () => 1e9, 10), [[5]]);
});

Deno.test("ChangeLog: pages of changes since a revision, each name once, latest change last", () => {
  const log = new ChangeLog();
  for (const name of ["a", "b", "c"]) log.touch(name);
  log.touch("a"); // changed again: moves to the end
  assert.deepEqual(log.page(0, () => 1), {
    names: ["b", "c", "a"],
    rev: 4,
    more: false,
    reset: false,
  });
  assert.deepEqual(log.page(2, () => 1), { names: ["c", "a"], rev: 4, more: false, reset: false });
  assert.deepEqual(log.page(4, () => 1), { names: [], rev: 4, more: false, reset: false });
});

Deno.test("ChangeLog: a big change is paged, and paging from each page's rev sees every name once", () => {
  const log = new ChangeLog();
  const total = PAGE_ENTRIES * 2 + 17;
  for (let i = 0; i < total; i++) log.touch(`f${i}`);
  const seen: string[] = [];
  let since = 0;
  for (let pages = 0; pages < 10; pages++) {
    const page = log.page(since, () => 100);
    seen.push(...page.names);
    since = page.rev;
    if (!page.more) break;
  }
  assert.equal(seen.length, total);
  assert.equal(new Set(seen).size, total);
  // Changes made between pages come in a later page.
  log.touch("f0");
  assert.deepEqual(log.page(since, () => 1).names, ["f0"]);
});

Deno.test("ChangeLog: names that went away are told to peers that knew them, not to a fresh start", () => {
  const log = new ChangeLog();
  log.touch("a");
  log.touch("b");
  log.touch("a", true);
  assert.ok(log.isGone("a"));
  assert.deepEqual(log.page(2, () => 1).names, ["a"]);
  assert.deepEqual(log.page(0, () => 1).names, ["b"]);
  log.touch("a"); // back again
  assert.ok(!log.isGone("a"));
});

Deno.test("ChangeLog: past its memory of gone names, an old revision starts afresh", () => {
  const log = new ChangeLog(2);
  for (const name of ["a", "b", "c", "d"]) log.touch(name);
  for (const name of ["a", "b", "c"]) log.touch(name, true); // revs 5-7: "a" is forgotten
  // A peer at revision 4 never heard that "a" went away, and the log can no longer say it.
  const page = log.page(4, () => 1);
  assert.equal(page.reset, true);
  assert.deepEqual(page.names, ["d"]);
  // One that saw revision 5 (a's removal) can go on from there.
  assert.deepEqual(log.page(5, () => 1), { names: ["b", "c"], rev: 7, more: false, reset: false });
  // A revision this log never reached (a restarted tracker) is a fresh start too.
  assert.equal(log.page(1_000, () => 1).reset, true);
});
