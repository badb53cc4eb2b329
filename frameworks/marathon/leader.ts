/**
 * Leader election among several Marathons of one cluster (DESIGN.md §4): one key in the store
 * holds the leader, written with compare-and-set. The leader rewrites it every `leaseMs / 3`;
 * a standby that sees the key unchanged for `leaseMs` (by its own clock: no clocks are compared)
 * takes it over with a compare-and-set on the revision it saw, so two standbys cannot both win.
 * A leader whose renewal fails (someone else took over) is deposed and must stop acting.
 *
 * @module
 */

import type { Clock, TimerHandle, Timers } from "../../sdk/clock.ts";
import type { Logger } from "../../sdk/transport.ts";

/** The compare-and-set primitives of one key. */
export interface LeaseStore {
  /** The current value and its revision, or undefined when there is none. */
  leaseRead(): Promise<{ value: string; revision: number } | undefined>;
  /** Writes the value if there is none; the new revision, or undefined when someone holds it. */
  leaseCreate(value: string): Promise<number | undefined>;
  /** Writes the value if the revision is still `revision`; the new revision, or undefined. */
  leaseUpdate(value: string, revision: number): Promise<number | undefined>;
  /** Removes the value if the revision is still `revision` (a leader stepping down). */
  leaseRelease(revision: number): Promise<void>;
}

/** Who leads. */
export interface LeaderInfo {
  id: string;
  /** Its HTTP base URL, for proxying and `/v2/leader`. */
  url: string;
}

export interface LeaderElectionOptions {
  store: LeaseStore;
  self: LeaderInfo;
  clock: Clock;
  timers: Timers;
  log: Logger;
  /** A leader silent for this long is replaced. @default 5000 */
  leaseMs?: number;
  onElected(): void;
  onDeposed(): void;
}

export class LeaderElection {
  private revision: number | undefined;
  private leading = false;
  private current: LeaderInfo | undefined;
  private seenRevision: number | undefined;
  private seenAtMs = 0;
  private timer: TimerHandle | undefined;
  private stopped = false;
  private readonly leaseMs: number;

  constructor(private readonly o: LeaderElectionOptions) {
    this.leaseMs = o.leaseMs ?? 5000;
  }

  isLeader(): boolean {
    return this.leading;
  }

  /** The leader as last seen (ourselves when leading). */
  leader(): LeaderInfo | undefined {
    return this.leading ? this.o.self : this.current;
  }

  /** Makes the first attempt (so a free lease is won before this resolves), then keeps going. */
  async start(): Promise<void> {
    await this.attempt();
    this.schedule();
  }

  /** Stops campaigning; a leader releases the lease so a standby takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    if (this.leading && this.revision !== undefined) await this.o.store.leaseRelease(this.revision).catch(() => undefined);
    this.leading = false;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = this.o.timers.set(Math.max(10, Math.floor(this.leaseMs / 3)), () => {
      void this.attempt()
        .catch((err: unknown) => this.o.log.warn({ err }, "leader election attempt failed"))
        .finally(() => this.schedule());
    });
  }

  private async attempt(): Promise<void> {
    if (this.stopped) return;
    const value = JSON.stringify(this.o.self);
    if (this.leading) {
      const next = await this.o.store.leaseUpdate(value, this.revision!);
      if (next !== undefined) {
        this.revision = next;
        return;
      }
      this.leading = false;
      this.revision = undefined;
      this.o.log.error({ self: this.o.self.id }, "marathon: lost leadership");
      this.o.onDeposed();
      return;
    }
    const held = await this.o.store.leaseRead();
    if (held === undefined) {
      const won = await this.o.store.leaseCreate(value);
      if (won !== undefined) this.elect(won);
      return;
    }
    this.current = parseLeader(held.value);
    const now = this.o.clock.now();
    if (held.revision !== this.seenRevision) {
      this.seenRevision = held.revision;
      this.seenAtMs = now;
      return;
    }
    if (now - this.seenAtMs < this.leaseMs) return;
    const won = await this.o.store.leaseUpdate(value, held.revision);
    if (won !== undefined) this.elect(won);
  }

  private elect(revision: number): void {
    if (this.stopped) return;
    this.revision = revision;
    this.leading = true;
    this.current = this.o.self;
    this.o.log.info({ self: this.o.self.id }, "marathon: elected leader");
    this.o.onElected();
  }
}

function parseLeader(text: string): LeaderInfo | undefined {
  try {
    const value = JSON.parse(text) as Partial<LeaderInfo>;
    return typeof value.id === "string" && typeof value.url === "string" ? { id: value.id, url: value.url } : undefined;
  } catch {
    return undefined;
  }
}
