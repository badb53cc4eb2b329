/**
 * Garbage collection of task sandboxes: the pure core. It decides which sandbox directories to
 * remove and when; the agent shell (`./agent.ts`) reads the disk usage, keeps the one timer the
 * core asks for and removes the directories.
 *
 * The rules follow the Mesos agent's (`--gc_delay`, `--disk_watch_interval`, `--gc_disk_headroom`):
 *
 * - A sandbox becomes garbage at a moment the shell names (its task's final status update was
 *   acknowledged, or, for a sandbox found on disk after a restart that no task claims, its
 *   directory's last modification) and is removed `gcDelayMs` after it.
 * - Each disk check shortens that: with the work dir's file system `usage` full (0..1), a sandbox
 *   older than `gcDelayMs * max(0, 1 - gcDiskHeadroom - usage)` is removed at once. So a disk that
 *   is `1 - gcDiskHeadroom` full or fuller removes every scheduled sandbox.
 * - A sandbox used again (a new task of the same framework and task id) is taken off the schedule;
 *   one whose removal has already begun must be waited for (see {@link SandboxGc.unschedule}).
 *
 * Time comes in as arguments (`nowMs`), never from a clock: the same core runs under the
 * simulator's virtual time and in unit tests.
 *
 * @module
 */

/** Mesos's default delay before a finished sandbox is removed: one week. */
export const DEFAULT_GC_DELAY_MS = 7 * 24 * 60 * 60 * 1000;
/** Mesos's default interval between two disk usage checks: one minute. */
export const DEFAULT_DISK_WATCH_INTERVAL_MS = 60_000;
/** Mesos's default share of the disk the collector tries to keep free. */
export const DEFAULT_GC_DISK_HEADROOM = 0.1;
/** Default bound on the sandboxes waiting for removal (see {@link SandboxGcConfig.maxScheduled}). */
export const DEFAULT_MAX_SCHEDULED_SANDBOXES = 100_000;

/** Configuration of {@link SandboxGc}. */
export interface SandboxGcConfig {
  /** How long after it became garbage a sandbox is removed when the disk has room. @default DEFAULT_GC_DELAY_MS (1 week) */
  gcDelayMs?: number;
  /** Share of the disk (0..1) the collector keeps free by removing sandboxes early. @default 0.1 */
  gcDiskHeadroom?: number;
  /**
   * Most sandboxes waiting for removal at once. Scheduling one more removes the one that became
   * garbage first at once, so an agent that ends tasks faster than `gcDelayMs` lets it forget them
   * cannot grow this table without end.
   * @default DEFAULT_MAX_SCHEDULED_SANDBOXES (100,000)
   */
  maxScheduled?: number;
}

/** One sandbox to remove. */
export interface GcRemoval {
  path: string;
  /** When it became garbage (for the shell's log). */
  sinceMs: number;
}

/** What the shell does after one call into the core. */
export interface GcDecision {
  /** Sandboxes to remove now; each is reported back with {@link SandboxGc.removed}. */
  remove: GcRemoval[];
  /** When the core wants {@link SandboxGc.due} called next; undefined when nothing waits. */
  wakeAtMs: number | undefined;
}

/** What {@link SandboxGc.unschedule} found. */
export type UnscheduleResult =
  /** The sandbox was waiting and no longer is. */
  | "cancelled"
  /** Its removal has begun: wait for it to end before using the directory again. */
  | "removing"
  /** It was not scheduled. */
  | "none";

interface Entry {
  /** When the sandbox became garbage. */
  sinceMs: number;
  /** Handed to the shell for removal; not yet reported {@link SandboxGc.removed}. */
  removing: boolean;
}

/**
 * The longest a sandbox may stay once garbage, given the disk usage: `gcDelayMs * max(0, 1 -
 * gcDiskHeadroom - usage)`.
 * @throws RangeError when `usage` or `gcDiskHeadroom` is outside 0..1, or `gcDelayMs` is negative.
 */
export function maxAllowedAgeMs(gcDelayMs: number, gcDiskHeadroom: number, usage: number): number {
  checkDelay(gcDelayMs);
  checkFraction(gcDiskHeadroom, "gcDiskHeadroom");
  checkFraction(usage, "disk usage");
  return gcDelayMs * Math.max(0, 1 - gcDiskHeadroom - usage);
}

/** The sandboxes waiting for removal, and when each is due. See the module comment. */
export class SandboxGc {
  readonly gcDelayMs: number;
  readonly gcDiskHeadroom: number;
  readonly maxScheduled: number;
  /**
   * By path, kept in the order of `sinceMs` so that the oldest are found without a scan: sandboxes
   * become garbage in time order (acknowledgements arrive as time passes), so a new one is almost
   * always appended; only an older one (a directory's mtime, a clock set back) is sorted in.
   * Those being removed are always the oldest, at the front.
   */
  private entries = new Map<string, Entry>();
  /** No entry became garbage later than this (it may be later than all: entries get deleted). */
  private latestSinceMs = -Infinity;

  /** @throws RangeError naming the option for a bad configuration. */
  constructor(config: SandboxGcConfig = {}) {
    this.gcDelayMs = checkDelay(config.gcDelayMs ?? DEFAULT_GC_DELAY_MS);
    this.gcDiskHeadroom = checkFraction(config.gcDiskHeadroom ?? DEFAULT_GC_DISK_HEADROOM, "gcDiskHeadroom");
    const max = config.maxScheduled ?? DEFAULT_MAX_SCHEDULED_SANDBOXES;
    if (!(Number.isSafeInteger(max) && max > 0)) throw new RangeError(`maxScheduled must be a whole number > 0, got ${max}`);
    this.maxScheduled = max;
  }

  /**
   * `path` became garbage at `sinceMs` (clamped to `nowMs`: a directory modified "in the future",
   * by a clock that jumped back, waits the full delay rather than longer). Scheduling a path again
   * moves it to the new time; one being removed is left to its removal.
   */
  schedule(path: string, sinceMs: number, nowMs: number): GcDecision {
    if (!Number.isFinite(sinceMs)) throw new RangeError(`sinceMs must be a finite number, got ${sinceMs}`);
    const existing = this.entries.get(path);
    if (existing?.removing) return this.decide([], nowMs);
    this.entries.delete(path);
    this.insert(path, { sinceMs: Math.min(sinceMs, nowMs), removing: false });
    const remove: GcRemoval[] = [];
    if (this.entries.size > this.maxScheduled) {
      const oldest = this.firstWaiting();
      if (oldest !== undefined) remove.push(this.take(oldest[0], oldest[1]));
    }
    return this.decide(remove, nowMs);
  }

  /** Takes `path` off the schedule because it is used again. */
  unschedule(path: string): UnscheduleResult {
    const entry = this.entries.get(path);
    if (entry === undefined) return "none";
    if (entry.removing) return "removing";
    this.entries.delete(path);
    return "cancelled";
  }

  /** The timer the core asked for fired (or any time): the sandboxes whose delay has passed. */
  due(nowMs: number): GcDecision {
    return this.decide(this.collect(nowMs - this.gcDelayMs), nowMs);
  }

  /**
   * A disk check read `usage` (0..1, the used share of the work dir's file system): removes every
   * sandbox at least {@link maxAllowedAgeMs} old, and those due anyway.
   * @returns the decision and the age limit it applied (for the shell's log).
   * @throws RangeError when `usage` is not a number from 0 to 1.
   */
  diskUsage(usage: number, nowMs: number): GcDecision & { maxAgeMs: number } {
    const maxAgeMs = maxAllowedAgeMs(this.gcDelayMs, this.gcDiskHeadroom, usage);
    return { ...this.decide(this.collect(nowMs - maxAgeMs), nowMs), maxAgeMs };
  }

  /** The shell's removal of `path` ended (done or failed: a failed one is not tried again). */
  removed(path: string, nowMs: number): GcDecision {
    if (this.entries.get(path)?.removing) this.entries.delete(path);
    return this.decide([], nowMs);
  }

  /** Whether `path` waits for removal or is being removed. */
  has(path: string): boolean {
    return this.entries.has(path);
  }

  /** How many sandboxes wait or are being removed. */
  size(): number {
    return this.entries.size;
  }

  private insert(path: string, entry: Entry): void {
    if (entry.sinceMs >= this.latestSinceMs) {
      this.entries.set(path, entry);
      this.latestSinceMs = entry.sinceMs;
      return;
    }
    // Older than some waiting sandbox: sort it in (rare, see `entries`).
    const all = [...this.entries, [path, entry] as [string, Entry]];
    all.sort((a, b) => Number(b[1].removing) - Number(a[1].removing) || a[1].sinceMs - b[1].sinceMs);
    this.entries = new Map(all);
  }

  /** Marks every waiting sandbox that became garbage at or before `cutoffMs` as removing. */
  private collect(cutoffMs: number): GcRemoval[] {
    const remove: GcRemoval[] = [];
    for (const [path, entry] of this.entries) {
      if (entry.removing) continue;
      if (entry.sinceMs > cutoffMs) break;
      remove.push(this.take(path, entry));
    }
    return remove;
  }

  private take(path: string, entry: Entry): GcRemoval {
    entry.removing = true;
    return { path, sinceMs: entry.sinceMs };
  }

  private firstWaiting(): [string, Entry] | undefined {
    for (const item of this.entries) if (!item[1].removing) return item;
    return undefined;
  }

  private decide(remove: GcRemoval[], nowMs: number): GcDecision {
    const first = this.firstWaiting();
    return { remove, wakeAtMs: first === undefined ? undefined : Math.max(nowMs, first[1].sinceMs + this.gcDelayMs) };
  }
}

function checkDelay(value: number): number {
  if (!(Number.isFinite(value) && value >= 0)) throw new RangeError(`gcDelayMs must be a finite number >= 0, got ${value}`);
  return value;
}

function checkFraction(value: number, name: string): number {
  if (!(Number.isFinite(value) && value >= 0 && value <= 1)) throw new RangeError(`${name} must be a number from 0 to 1, got ${value}`);
  return value;
}
