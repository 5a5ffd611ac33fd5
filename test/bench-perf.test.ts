// How bench --profile sorts perf's on-CPU samples into kinds (bench/lib/perf.ts).
import test from "ava";
import { type KINDS, kindOf, parsePerfScript, sharesOf } from "../bench/lib/perf.js";

const NODE = "/repo/.tools/node/bin/node";

test("a sample's kind comes from its library, and inside node from its symbol", (t) => {
  const cases: [string, string, (typeof KINDS)[number]][] = [
    ["v8::internal::Scavenger::ScavengeObject", NODE, "V8 garbage collection"],
    ["v8::internal::ConcurrentMarking::RunMajor", NODE, "V8 garbage collection"],
    ["Builtins_CallFunction_ReceiverIsAny", NODE, "V8 builtins (property access, calls, promises)"],
    ["[unknown]", "/tmp/perf-4242.map", "JavaScript compiled by V8 (JIT)"],
    ["nghttp2_hd_huff_decode", NODE, "HTTP/2 (nghttp2, node's http2)"],
    ["node::http2::Http2Session::FindStream", NODE, "HTTP/2 (nghttp2, node's http2)"],
    ["ossl_aes_gcm_decrypt_avx512", NODE, "TLS (OpenSSL)"],
    [
      "walIndexAppend",
      "/repo/node_modules/better-sqlite3/build/Release/better_sqlite3.node",
      "SQLite",
    ],
    [
      "__memmove_avx512_unaligned_erms",
      "/usr/lib/x86_64-linux-gnu/libc.so.6",
      "libc and libstdc++ (malloc, memcpy)",
    ],
    ["do_syscall_64", "[kernel.kallsyms]", "kernel (syscalls, scheduling, network, files)"],
    [
      "v8::internal::LookupIterator::LookupInRegularHolder",
      NODE,
      "other V8 and node C++ (runtime calls, object shapes, the compiler)",
    ],
    ["inflate", "/usr/lib/x86_64-linux-gnu/libz.so.1.3", "other libraries"],
  ];
  for (const [symbol, dso, kind] of cases) t.is(kindOf(symbol, dso), kind, symbol);
});

test("a process's shares count every thread, and its main thread apart", (t) => {
  const samples = parsePerfScript(
    [
      `10/10      7f00000001 [unknown] (/tmp/perf-10.map)`,
      `10/10         1a54f8c Builtins_CallFunction_ReceiverIsAny (${NODE})`,
      `10/11          edbef4 v8::internal::Scavenger::ScavengeObject (${NODE})`,
      `  10/12  ffffffff8225a106 do_syscall_64 ([kernel.kallsyms])`,
      `20/20      7f00000002 [unknown] (/tmp/perf-20.map)`,
      `20/21          edbef5 std::_Function_handler<void* (unsigned long), v8::internal::Foo>::_M_manager (${NODE})`,
      "not a sample",
    ].join("\n"),
  );
  t.is(samples.length, 6);
  t.deepEqual(samples[5], {
    pid: 20,
    tid: 21,
    symbol: "std::_Function_handler<void* (unsigned long), v8::internal::Foo>::_M_manager",
    dso: NODE,
  });
  const shares = sharesOf(samples, 10);
  t.is(shares.samples, 4);
  t.is(shares.mainThreadSamples, 2);
  t.deepEqual(
    shares.kinds.map((row) => [row.kind, row.all, row.mainThread]),
    [
      ["V8 garbage collection", 0.25, 0],
      ["V8 builtins (property access, calls, promises)", 0.25, 0.25],
      ["JavaScript compiled by V8 (JIT)", 0.25, 0.25],
      ["kernel (syscalls, scheduling, network, files)", 0.25, 0],
    ],
  );
  t.is(sharesOf(samples, 30).samples, 0);
});
