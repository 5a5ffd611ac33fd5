// Commits on disk before the call that made them answers, without holding up the event loop.
//
// SQLite runs with `synchronous = NORMAL` (db/sqlite.ts): its WAL reaches the disk at checkpoints,
// so a host that crashes may lose the last commits. `FULL` would fsync inside each commit, on the
// event loop (docs/performance.md: 40% of CreateOrder's throughput). Instead a write rpc waits
// for an fsync of the WAL on libuv's thread pool that began after its commits, and the calls
// waiting share one (group commit). SQLite's recovery replays every committed frame of the WAL.
import { type FileHandle, open } from "node:fs/promises";

export class WalSync {
  /** fsyncs started so far. */
  syncs = 0;
  private handle: FileHandle | undefined;
  private running: Promise<void> | undefined;
  private queued: Promise<void> | undefined;

  /** `file`: the database file; its WAL is `<file>-wal`. */
  constructor(private readonly file: string) {}

  /** Resolves once every commit made on this file before the call is on disk. */
  flush(): Promise<void> {
    // A sync that has not started yet covers this caller's commits too.
    if (this.queued) return this.queued;
    if (!this.running) {
      this.running = this.sync();
      return this.running;
    }
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
    try {
      // The WAL exists once anything was written, and stays while a connection is open: the
      // handle is opened once. A file with no WAL yet has nothing to sync.
      this.handle ??= await open(`${this.file}-wal`, "r").catch((error: NodeJS.ErrnoException) => {
        if (error.code === "ENOENT") return undefined;
        throw error;
      });
      await this.handle?.sync();
    } finally {
      this.running = undefined;
    }
  }
}
