// Texts clipped to fit a status: at most the bound, ellipsis included, never half an emoji.
import test from "ava";
import { clipText } from "./errors.js";

test("a text over the bound is cut to the bound, its last unit the ellipsis", (t) => {
  t.is(clipText("abcdef", 6), "abcdef");
  t.is(clipText("abcdefg", 6), "abcde…");
  t.is(clipText("x".repeat(5000), 1024).length, 1024);
});

test("a cut never splits a surrogate pair, and a lone half is made well-formed", (t) => {
  // "ab" and a 😀 (two units), cut to 4: the emoji goes whole.
  t.is(clipText("ab\u{1F600}cd", 4), "ab…");
  t.is(clipText("abc\u{1F600}d", 5), "abc…");
  t.is(clipText("a\ud800b", 10), "a\ufffdb");
});
