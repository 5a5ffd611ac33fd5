// Commits on disk before any answer tells of them, without holding up the event loop.
//
// SQLite runs with `synchronous = NORMAL` (db/sqlite.ts): its WAL reaches the disk at checkpoints,
// so a host that crashes may lose the last commits. `FULL` would fsync inside each commit, on the
// event loop (docs/performance.md: 40% of CreateOrder's throughput). Instead a write rpc waits
// for an fsync of the WAL on libuv's thread pool that began after its commits, and the calls
// waiting share one (group commit). A read waits for one only while some commit is not yet
// covered, which the counts of the database's writes tell. SQLite's recovery replays every
// committed frame of the WAL.
import { type FileHandle, open } from "node:fs/promises";
import type { Knex } from "knex";
import { type DatabaseObserver, observeDatabase } from "./observe.js";

export class WalSync {
  /** fsyncs started so far. */
  syncs = 0;
  private handle: FileHandle | undefined;
  private running: Promise<void> | undefined;
  private queued: Promise<void> | undefined;

  /**
   * Statements and transactions done on the file that may have changed it, counted as they end;
   * 1 for whatever was written before this object watched.
   */
  private changes = 1;
  /** How many of those the running sync covers, and the last finished one covered. */
  private covering = 0;
  private covered = 0;

  /** `file`: the database file `db` opened; its WAL is `<file>-wal`. */
  constructor(
    private readonly file: string,
    db: Knex,
  ) {
    const counted: DatabaseObserver = {
      statement: (done) => {
        if (done.operation !== "select") this.changes++;
      },
      transaction: (run) =>
        run().finally(() => {
          this.changes++;
        }),
    };
    observeDatabase(db, counted);
  }

  /** Whether something committed may not be on disk yet. */
  get behind(): boolean {
    return this.changes > this.covered;
  }

  /** Resolves once every commit made on this file before the call is on disk. */
  flush(): Promise<void> {
    // A sync that has not started yet covers this caller's commits too.
    if (this.queued) return this.queued;
    if (!this.running) {
      this.running = this.sync();
      return this.running;
    }
    // Nothing changed since the running one began: it covers them.
    if (this.covering === this.changes) return this.running;
    // The running one may have started before this caller's commit: the next one covers it.
    const next = () => {
      this.queued = undefined;
      this.running = this.sync();
      return this.running;
    };
    this.queued = this.running.then(next, next);
    return this.queued;
  }

  /** Closes the WAL file (the database's connection keeps its own). */
  async close(): Promise<void> {
    await Promise.allSettled([this.running, this.queued]);
    await this.handle?.close();
    this.handle = undefined;
  }

  private async sync(): Promise<void> {
    this.syncs++;
    const covering = this.changes;
    this.covering = covering;
    try {
      // The WAL exists once anything was written, and stays while a connection is open: the
      // handle is opened once. A file with no WAL yet has nothing to sync.
      this.handle ??= await open(`${this.file}-wal`, "r").catch((error: NodeJS.ErrnoException) => {
        if (error.code === "ENOENT") return undefined;
        throw error;
      });
      await this.handle?.sync();
      this.covered = covering;
    } finally {
      this.running = undefined;
    }
  }
}
