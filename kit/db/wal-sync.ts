// Commits on disk before any answer tells of them, without holding up the event loop.
//
// SQLite runs with `synchronous = NORMAL` (db/sqlite.ts): its WAL reaches the disk at checkpoints,
// so a host that crashes may lose the last commits. `FULL` would fsync inside each commit, on the
// event loop (docs/performance.md: 40% of CreateOrder's throughput). Instead a write rpc waits
// for an fsync of the WAL on libuv's thread pool that began after its commits, and the calls
// waiting share one (group commit). A read waits for one only while some commit is not yet
// covered. Every commit on the file, by this process or by another replica sharing it, rewrites
// the header of the WAL index (`<file>-shm`), so a header unlike the one the last sync began with
// means a commit that may not be on disk. SQLite's recovery replays every committed frame of the
// WAL.
import { closeSync, openSync, readSync } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";

/**
 * The WAL index's header, as SQLite's file format lays it out at the start of `<file>-shm`: the
 * last committed frame, the WAL's salts and checksums, and a counter of commits.
 */
const HEADER_BYTES = 48;
/** The header of a file with no WAL index (no WAL yet). */
const NO_HEADER = Buffer.alloc(0);

export class WalSync {
  /** fsyncs started so far. */
  syncs = 0;
  private wal: FileHandle | undefined;
  private shm: number | undefined;
  private readonly scratch = Buffer.alloc(HEADER_BYTES);
  private running: { header: Buffer; done: Promise<void> } | undefined;
  private queued: Promise<void> | undefined;
  /** The header as the last finished sync began: every commit it showed is on disk. */
  private covered: Buffer | undefined;

  /** `file`: an SQLite database file in WAL mode; its WAL is `<file>-wal`. */
  constructor(private readonly file: string) {}

  /** Whether something committed, by any connection to the file, may not be on disk yet. */
  get behind(): boolean {
    return this.covered === undefined || !this.header().equals(this.covered);
  }

  /** Resolves once every commit made on this file before the call is on disk. */
  flush(): Promise<void> {
    // A sync that has not started yet covers this caller's commits too.
    if (this.queued) return this.queued;
    if (!this.running) return this.start();
    // Nothing committed since the running one began: it covers them.
    if (this.header().equals(this.running.header)) return this.running.done;
    // The running one may have started before this caller's commit: the next one covers it.
    const next = () => {
      this.queued = undefined;
      return this.start();
    };
    this.queued = this.running.done.then(next, next);
    return this.queued;
  }

  /** Closes the WAL and index files (the database's connection keeps its own). */
  async close(): Promise<void> {
    await Promise.allSettled([this.running?.done, this.queued]);
    await this.wal?.close();
    this.wal = undefined;
    if (this.shm !== undefined) closeSync(this.shm);
    this.shm = undefined;
  }

  private start(): Promise<void> {
    this.syncs++;
    // Read before the fsync begins, so that everything it shows is written to the WAL already.
    const header = Buffer.from(this.header());
    const done = this.sync()
      .then(() => {
        this.covered = header;
      })
      .finally(() => {
        this.running = undefined;
      });
    this.running = { header, done };
    return done;
  }

  private async sync(): Promise<void> {
    // The WAL exists once anything was written, and stays while a connection is open: the
    // handle is opened once. A file with no WAL yet has nothing to sync.
    this.wal ??= await open(`${this.file}-wal`, "r").catch((error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT") return undefined;
      throw error;
    });
    await this.wal?.sync();
  }

  /** The WAL index's header now; one read of 48 bytes, made where an answer is decided. */
  private header(): Buffer {
    if (this.shm === undefined) {
      try {
        this.shm = openSync(`${this.file}-shm`, "r");
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return NO_HEADER;
        throw error;
      }
    }
    const read = readSync(this.shm, this.scratch, 0, HEADER_BYTES, 0);
    return read === HEADER_BYTES ? this.scratch : this.scratch.subarray(0, read);
  }
}
