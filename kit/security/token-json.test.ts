// The token JSON check the services share with the edge: a repeated key, compared unescaped.
import test from "ava";
import { repeatsAKey } from "./token-json.js";

test("a key repeated in one object is found; equal keys in different objects are not", (t) => {
  for (const json of [
    '{"a":1,"a":2}',
    '{"sub":"x","roles":[],"roles":["admin"]}',
    '{"ro\\u006ces":1,"roles":2}',
    '{"x":{"a":1,"b":{},"a":[]}}',
    '{"x":[{"a":1},{"b":1,"b":2}]}',
  ]) {
    t.true(repeatsAKey(json), json);
  }
  for (const json of [
    "{}",
    '{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}',
    '{"a":"\\"a\\":1,","b":"{\\"a\\":2}","c":"[:]"}',
    '[{"a":1},{"a":1}]',
    '{"a":1,"A":2}',
  ]) {
    t.false(repeatsAKey(json), json);
  }
});
