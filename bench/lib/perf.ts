// On-CPU samples of Node processes from Linux perf, each put in one kind by the library it ran
// in and, inside the node binary, by its symbol's name. V8's own profiler samples wall-clock time
// and sees only JavaScript frames; perf sees what the CPU ran, in every thread, native code too.
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export const KINDS = [
  "V8 garbage collection",
  "V8 builtins (property access, calls, promises)",
  "JavaScript compiled by V8 (JIT)",
  "other V8 and node C++ (runtime calls, object shapes, the compiler)",
  "HTTP/2 (nghttp2, node's http2)",
  "TLS (OpenSSL)",
  "SQLite",
  "libc and libstdc++ (malloc, memcpy)",
  "kernel (syscalls, scheduling, network, files)",
  "other libraries",
] as const;
export type Kind = (typeof KINDS)[number];

/** One sample: the process and thread it was taken in, and the function it was in. */
export interface PerfSample {
  pid: number;
  tid: number;
  symbol: string;
  dso: string;
}

// Symbols V8's collector runs in: the scavenger, marking, sweeping, evacuation and their visitors.
const GC =
  /Scaveng|Marking|MarkCompact|MinorM[Ss]|Sweep|Evacuat|PointersUpdating|RememberedSet|SlotSet|GCTracer|FreeList|BodyDescriptorBase|SizeFromMap|NeedsResetDueToFlushedBytecode|StringTableCleaner|ClearWeak|v8::internal::Heap::|heap::base::|cppgc::/;
// OpenSSL, linked into node, and node's TLS and crypto bindings.
const TLS =
  /^(ossl_|EVP_|SSL_|ssl3?_|tls1?3?_|aesni_|aes_|gcm_|CRYPTO_|OPENSSL_|BN_|bn_|ecp_|sha\d+_|x25519|X25519|chacha|ChaCha|poly1305|Poly1305|EC_|RSA_|ASN1_|asn1_|X509|x509|BIO_|HMAC|PEM_|d2i_|i2d_)|node::crypto::|TLSWrap/;
// nghttp2, linked into node (its static functions keep their own prefixes), and node's binding.
const HTTP2 = /^(nghttp2_|session_|add_hd_|hd_|inflate_|deflate_)|node::http2::/;

/** The kind of a sample's function, from its library (`dso`) and its symbol. */
export function kindOf(symbol: string, dso: string): Kind {
  const file = path.basename(dso);
  if (dso === "[kernel.kallsyms]" || dso === "[vdso]") return KINDS[8];
  // V8's generated code lives in anonymous memory, which perf names after a map file that only
  // --perf-basic-prof would write.
  if (/^perf-\d+\.map$/.test(file) || dso.startsWith("[JIT]") || dso === "//anon") return KINDS[2];
  if (/sqlite3?\.node$/.test(file)) return KINDS[6];
  if (/^(libc|libm|ld-linux|libstdc\+\+|libgcc_s)[-.]/.test(file)) return KINDS[7];
  if (/^(libssl|libcrypto)\./.test(file)) return KINDS[5];
  if (!/^node(js)?$/.test(file)) return dso === "[unknown]" ? KINDS[2] : KINDS[9];
  if (symbol.startsWith("Builtins_")) return KINDS[1];
  if (GC.test(symbol)) return KINDS[0];
  if (TLS.test(symbol)) return KINDS[5];
  if (HTTP2.test(symbol)) return KINDS[4];
  return KINDS[3];
}

/** The lines of `perf script -F pid,tid,ip,sym,dso`, e.g. `17385/17394  7fa… Foo::bar (/x/node)`. */
export function parsePerfScript(text: string): PerfSample[] {
  const samples: PerfSample[] = [];
  for (const line of text.split("\n")) {
    // The library is the last parenthesised part: C++ symbols have parentheses of their own.
    const match = /^\s*(\d+)\/(\d+)\s+[0-9a-f]+\s+(.*)\s+\(([^()]*)\)\s*$/.exec(line);
    if (!match) continue;
    samples.push({
      pid: Number(match[1]),
      tid: Number(match[2]),
      symbol: match[3] as string,
      dso: match[4] as string,
    });
  }
  return samples;
}

/** A process's samples by kind: over all its threads, and on its main thread alone. */
export interface KindShares {
  samples: number;
  mainThreadSamples: number;
  /** Share of the process's samples, by kind, largest first. */
  kinds: { kind: Kind; all: number; mainThread: number }[];
}

export function sharesOf(samples: readonly PerfSample[], pid: number): KindShares {
  const all = new Map<Kind, number>();
  const main = new Map<Kind, number>();
  let total = 0;
  let onMain = 0;
  for (const sample of samples) {
    if (sample.pid !== pid) continue;
    const kind = kindOf(sample.symbol, sample.dso);
    total++;
    all.set(kind, (all.get(kind) ?? 0) + 1);
    if (sample.tid === pid) {
      onMain++;
      main.set(kind, (main.get(kind) ?? 0) + 1);
    }
  }
  const kinds = KINDS.map((kind) => ({
    kind,
    all: (all.get(kind) ?? 0) / Math.max(1, total),
    mainThread: (main.get(kind) ?? 0) / Math.max(1, total),
  }))
    .filter((row) => row.all > 0)
    .sort((a, b) => b.all - a.all);
  return { samples: total, mainThreadSamples: onMain, kinds };
}

/** Samples `pids` (every thread) for `seconds` at `hz` into `file`; rejects when perf cannot. */
export async function recordPerf(
  pids: readonly number[],
  seconds: number,
  file: string,
  hz = 499,
): Promise<void> {
  await run(
    "perf",
    [
      "record",
      "-q",
      "-F",
      String(hz),
      "-p",
      pids.join(","),
      "-o",
      file,
      "--",
      "sleep",
      String(seconds),
    ],
    { timeout: (seconds + 30) * 1000 },
  );
}

/** The samples perf recorded into `file`. */
export async function readPerf(file: string): Promise<PerfSample[]> {
  const { stdout } = await run("perf", ["script", "-G", "-i", file, "-F", "pid,tid,ip,sym,dso"], {
    maxBuffer: 512 * 2 ** 20,
  });
  return parsePerfScript(stdout);
}
