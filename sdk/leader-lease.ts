/**
 * Leader election over one compare-and-set key with a lease (DESIGN.md §4), shared by the masters
 * and by Marathon.
 *
 * The record under the key names the leader (`{id, url, term}`) and carries a revision that every
 * write raises (a JetStream KV revision, the stream sequence). The rules:
 *
 * - **Winning.** A candidate that finds no record creates it; one that sees the same revision for
 *   `leaseMs` (by its own clock, counted from the moment its read came back) overwrites it with a
 *   compare-and-set on that revision. Of several candidates at most one write succeeds. The term
 *   of the winner is the revision its winning write produced: every later write has a higher
 *   revision, so terms only grow — masters use the term as their epoch.
 * - **Renewing.** The leader rewrites the record every `renewIntervalMs`, again with a
 *   compare-and-set on its own last revision; a failed compare-and-set means someone took over,
 *   and the leader steps down at once.
 * - **Stepping down in time.** The leader counts its lease from the moment it *sent* its last
 *   successful write (`s`), which is no later than the moment the store applied it, which is no
 *   later than the moment any standby can have read it. A standby therefore cannot take over
 *   before `s + leaseMs`; the leader stops acting at `s + leaseMs - stepDownMarginMs`, whether or
 *   not its renewals get through. The margin covers the work in hand when the deadline comes and
 *   the difference in clock rates (only rates: no two clocks are ever compared).
 *
 * The arithmetic: a leader gets `(leaseMs - stepDownMarginMs) / renewIntervalMs` renewal attempts
 * before it must step down (at the defaults 1500, 250 and 250 ms: five), so one slow or lost
 * write costs nothing; a standby takes over `leaseMs` after the last renewal it saw, at most
 * `pollIntervalMs` later — so a dead leader is replaced between `leaseMs - renewIntervalMs` and
 * `leaseMs + pollIntervalMs` after its death.
 *
 * The decisions live in {@link LeaseDecider}, a pure state machine over (time, store answers); the
 * I/O and timers in {@link LeaseElection}. Stores: {@link KvLeaseStore} (a JetStream KV key) and
 * {@link MemoryLeaseStore} (tests, the simulator).
 *
 * @module
 */

import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { Clock, TimerHandle, Timers } from "./clock.ts";
import type { Logger } from "./transport.ts";

// ------------------------------------------------------------------------------------------------
// Store
// ------------------------------------------------------------------------------------------------

/** A value and the revision of the write that produced it. */
export interface HeldLease {
  value: string;
  revision: number;
}

/** The compare-and-set primitives of one key. A lost compare-and-set is an answer (`undefined`), an I/O failure throws. */
export interface LeaseStore {
  /** The current value and its revision, or undefined when there is none. */
  leaseRead(): Promise<HeldLease | undefined>;
  /** Writes the value if there is none; the new revision, or undefined when someone holds it. */
  leaseCreate(value: string): Promise<number | undefined>;
  /** Writes the value if the revision is still `revision`; the new revision, or undefined. */
  leaseUpdate(value: string, revision: number): Promise<number | undefined>;
  /** Removes the value if the revision is still `revision` (a leader stepping down). */
  leaseRelease(revision: number): Promise<void>;
}

/** One key in memory: for tests and the simulator. Revisions only grow, as in JetStream. */
export class MemoryLeaseStore implements LeaseStore {
  private held: HeldLease | undefined;
  private revision = 0;

  async leaseRead(): Promise<HeldLease | undefined> {
    return this.held ? { ...this.held } : undefined;
  }

  async leaseCreate(value: string): Promise<number | undefined> {
    if (this.held) return undefined;
    this.held = { value, revision: ++this.revision };
    return this.held.revision;
  }

  async leaseUpdate(value: string, revision: number): Promise<number | undefined> {
    if (this.held?.revision !== revision) return undefined;
    this.held = { value, revision: ++this.revision };
    return this.held.revision;
  }

  async leaseRelease(revision: number): Promise<void> {
    if (this.held?.revision === revision) {
      this.held = undefined;
      this.revision++;
    }
  }
}

/** Options of {@link KvLeaseStore}. */
export interface KvLeaseStoreOptions {
  /** The key holding the record. @default "leader" */
  key?: string;
  /** How long one compare-and-set may take before it counts as failed. @default 1000 */
  timeoutMs?: number;
}

function lostCompareAndSet(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

/** The lease as one key of a JetStream KV bucket; the revision is the KV revision. */
export class KvLeaseStore implements LeaseStore {
  readonly key: string;
  private readonly timeoutMs: number;

  constructor(
    private readonly kv: KV,
    options: KvLeaseStoreOptions = {},
  ) {
    this.key = options.key ?? "leader";
    this.timeoutMs = options.timeoutMs ?? 1000;
  }

  async leaseRead(): Promise<HeldLease | undefined> {
    const entry = await this.kv.get(this.key);
    return entry && entry.operation === "PUT" ? { value: entry.string(), revision: entry.revision } : undefined;
  }

  async leaseCreate(value: string): Promise<number | undefined> {
    try {
      return await this.kv.create(this.key, value);
    } catch (err) {
      if (lostCompareAndSet(err)) return undefined;
      throw err;
    }
  }

  async leaseUpdate(value: string, revision: number): Promise<number | undefined> {
    try {
      return await this.kv.update(this.key, value, revision, this.timeoutMs);
    } catch (err) {
      if (lostCompareAndSet(err)) return undefined;
      throw err;
    }
  }

  async leaseRelease(revision: number): Promise<void> {
    await this.kv.delete(this.key, { previousSeq: revision }).catch((err: unknown) => {
      if (!lostCompareAndSet(err)) throw err;
    });
  }
}

// ------------------------------------------------------------------------------------------------
// The record
// ------------------------------------------------------------------------------------------------

/** Who leads, as written in the record. */
export interface LeaderInfo {
  /** The leader's instance id (unique per process incarnation). */
  id: string;
  /** Its HTTP base URL (where standbys redirect or proxy to). */
  url: string;
  /** Its term, once known (the first write of a term cannot know its own revision). */
  term?: number;
}

/** Parses a record; `undefined` when it is not one. */
export function parseLeaderInfo(text: string): LeaderInfo | undefined {
  try {
    const value = JSON.parse(text) as Partial<LeaderInfo>;
    if (typeof value?.id !== "string" || typeof value.url !== "string") return undefined;
    return { id: value.id, url: value.url, ...(Number.isSafeInteger(value.term) ? { term: value.term! } : {}) };
  } catch {
    return undefined;
  }
}

// ------------------------------------------------------------------------------------------------
// Timings
// ------------------------------------------------------------------------------------------------

/** The clock of an election; see the module comment for how they relate. Every value in ms. */
export interface LeaseTimings {
  /** A record left unchanged this long (by a standby's clock) may be taken over. @default 1500 */
  leaseMs: number;
  /** The leader rewrites the record this often. @default 250 */
  renewIntervalMs: number;
  /** The leader stops acting this long before a standby could take over. @default 250 */
  stepDownMarginMs: number;
  /** How often a standby reads the record. @default 100 */
  pollIntervalMs: number;
}

/** Defaults of {@link LeaseTimings}. */
export const DEFAULT_LEASE_TIMINGS: Readonly<LeaseTimings> = { leaseMs: 1500, renewIntervalMs: 250, stepDownMarginMs: 250, pollIntervalMs: 100 };

/** What is wrong with `timings` (field and rule), or an empty list. */
export function leaseTimingsProblems(timings: LeaseTimings): string[] {
  const problems: string[] = [];
  for (const field of ["leaseMs", "renewIntervalMs", "stepDownMarginMs", "pollIntervalMs"] as const) {
    const value = timings[field];
    if (!(Number.isFinite(value) && value > 0)) problems.push(`${field}: must be a finite number > 0, got ${value}`);
  }
  if (problems.length === 0 && timings.renewIntervalMs + timings.stepDownMarginMs >= timings.leaseMs) {
    problems.push(
      `leaseMs: must exceed renewIntervalMs + stepDownMarginMs (${timings.renewIntervalMs} + ${timings.stepDownMarginMs}), got ${timings.leaseMs}: ` +
        "a leader must have time to renew before it steps down",
    );
  }
  return problems;
}

/** Fills in defaults and validates; throws a RangeError naming the field and the rule. */
export function resolveLeaseTimings(partial: Partial<LeaseTimings> = {}): LeaseTimings {
  const timings: LeaseTimings = { ...DEFAULT_LEASE_TIMINGS };
  for (const [key, value] of Object.entries(partial)) if (value !== undefined) timings[key as keyof LeaseTimings] = value;
  const problems = leaseTimingsProblems(timings);
  if (problems.length > 0) throw new RangeError(problems.join("; "));
  return timings;
}

// ------------------------------------------------------------------------------------------------
// The decisions (pure)
// ------------------------------------------------------------------------------------------------

/** One store operation the decider asks for. */
export type LeaseIo = { op: "read" } | { op: "create"; value: string } | { op: "update"; revision: number; value: string };

/** The answer to a {@link LeaseIo}. */
export type LeaseOutcome =
  | { op: "read"; held: HeldLease | undefined }
  /** `revision` undefined: the compare-and-set was lost. */
  | { op: "write"; revision: number | undefined }
  /** The store did not answer (error, timeout): nothing is known about the write. */
  | { op: "failed" };

/** What happened to this candidate. */
export type LeaseEvent =
  /** `takeover`: the record replaced, and how long it had been unchanged (absent when the key was free). */
  | { type: "elected"; term: number; takeover?: { from: LeaderInfo | undefined; unchangedForMs: number } }
  | { type: "deposed"; reason: "lapsed" | "superseded" | "resigned" };

/** What to do now: events to act on, at most one store operation, and when to step again. */
export interface LeaseStep {
  events: LeaseEvent[];
  io: LeaseIo | undefined;
  /** Step again at this time (Infinity: only when the operation in flight completes). */
  wakeAtMs: number;
}

/**
 * The election decisions of one candidate, as a state machine over time and store answers. It
 * never reads a clock and does no I/O: a runner ({@link LeaseElection}, or a simulator) calls
 * {@link step}, carries out the operation it returns, and reports the answer with
 * {@link complete}. At most one operation is in flight at a time.
 */
export class LeaseDecider {
  readonly timings: LeaseTimings;
  private leading: { revision: number; term: number; renewedAtMs: number } | undefined;
  private nextRenewAtMs = 0;
  /** Standby: the record last read and when it was first seen with this revision. */
  private seen: { revision: number; sinceMs: number; leader: LeaderInfo | undefined } | undefined;
  /** Standby: the last read found no record. */
  private vacant = false;
  private nextReadAtMs = 0;
  private inFlight: LeaseIo | undefined;

  constructor(
    private readonly self: LeaderInfo,
    timings: Partial<LeaseTimings> = {},
  ) {
    this.timings = resolveLeaseTimings(timings);
  }

  isLeader(): boolean {
    return this.leading !== undefined;
  }

  /** The current term while leading. */
  term(): number | undefined {
    return this.leading?.term;
  }

  /** The revision of the leader's last successful write while leading (what a release must name). */
  revision(): number | undefined {
    return this.leading?.revision;
  }

  /** The leader as last seen: this candidate while it leads, else the record last read. */
  leader(): LeaderInfo | undefined {
    if (this.leading) return { ...this.self, term: this.leading.term };
    return this.seen?.leader;
  }

  /** When the leader must have stopped acting (Infinity when not leading). */
  stepDownAtMs(): number {
    return this.leading ? this.leading.renewedAtMs + this.timings.leaseMs - this.timings.stepDownMarginMs : Infinity;
  }

  /** Whether this candidate may act as the leader at `nowMs` (the fence every leader action checks). */
  holds(nowMs: number): boolean {
    return this.leading !== undefined && nowMs < this.stepDownAtMs();
  }

  /** Steps down when the lease ran out at `nowMs`. */
  checkLapse(nowMs: number): LeaseEvent[] {
    if (!this.leading || nowMs < this.stepDownAtMs()) return [];
    return [this.stepDown("lapsed", nowMs)];
  }

  /**
   * Gives up leading at `nowMs` (the owner could not take the term up): answers the revision to
   * release, so others need not wait for the lease to lapse, and stays out of the race for
   * `leaseMs` so that another candidate wins first.
   */
  resign(nowMs: number): { events: LeaseEvent[]; release: number | undefined } {
    if (!this.leading) return { events: [], release: undefined };
    const revision = this.leading.revision;
    this.leading = undefined;
    this.inFlight = undefined; // a renewal answered later must not make it lead again
    this.seen = undefined;
    this.vacant = false;
    this.nextReadAtMs = nowMs + this.timings.leaseMs;
    return { events: [{ type: "deposed", reason: "resigned" }], release: revision };
  }

  /** Decides what to do at `nowMs`. */
  step(nowMs: number): LeaseStep {
    const events = this.checkLapse(nowMs);
    if (this.inFlight) return { events, io: undefined, wakeAtMs: this.stepDownAtMs() };
    const io = this.leading ? this.leaderIo(nowMs) : this.standbyIo(nowMs);
    if (io) this.inFlight = io;
    return { events, io, wakeAtMs: io ? this.stepDownAtMs() : this.nextWakeMs() };
  }

  private leaderIo(nowMs: number): LeaseIo | undefined {
    const leading = this.leading!;
    if (nowMs < this.nextRenewAtMs) return undefined;
    return { op: "update", revision: leading.revision, value: this.record(leading.term) };
  }

  private standbyIo(nowMs: number): LeaseIo | undefined {
    if (this.vacant) return { op: "create", value: this.record(undefined) };
    const seen = this.seen;
    // Our own record (a write whose answer was lost, or a lease that lapsed): no one else has
    // written since, so a compare-and-set on it is safe at once.
    if (seen && (seen.leader?.id === this.self.id || nowMs >= seen.sinceMs + this.timings.leaseMs)) {
      return { op: "update", revision: seen.revision, value: this.record(undefined) };
    }
    return nowMs >= this.nextReadAtMs ? { op: "read" } : undefined;
  }

  private nextWakeMs(): number {
    if (this.leading) return Math.min(this.nextRenewAtMs, this.stepDownAtMs());
    return Math.min(this.nextReadAtMs, this.seen ? this.seen.sinceMs + this.timings.leaseMs : Infinity);
  }

  /** Takes the answer to the operation `io`, started at `startedAtMs`, received at `nowMs`. */
  complete(io: LeaseIo, startedAtMs: number, outcome: LeaseOutcome, nowMs: number): LeaseEvent[] {
    if (this.inFlight !== io) return [];
    this.inFlight = undefined;
    const events = this.checkLapse(nowMs);
    switch (outcome.op) {
      case "failed":
        if (this.leading) this.nextRenewAtMs = nowMs + this.timings.renewIntervalMs;
        else this.afterLostWrite(nowMs + this.timings.pollIntervalMs);
        return events;
      case "read":
        if (!this.leading) this.observe(outcome.held, nowMs);
        return events;
      case "write":
        if (outcome.revision === undefined) {
          if (this.leading) events.push(this.stepDown("superseded", nowMs));
          else this.afterLostWrite(nowMs);
          return events;
        }
        return [...events, ...this.wrote(outcome.revision, startedAtMs, nowMs)];
    }
  }

  private wrote(revision: number, startedAtMs: number, nowMs: number): LeaseEvent[] {
    const deadline = startedAtMs + this.timings.leaseMs - this.timings.stepDownMarginMs;
    if (nowMs >= deadline) {
      // The write landed, but too late to lead on: the record is ours, so take it again (a new term).
      const events = this.leading ? [this.stepDown("lapsed", nowMs)] : [];
      this.seen = { revision, sinceMs: nowMs, leader: { ...this.self } };
      this.vacant = false;
      return events;
    }
    if (this.leading) {
      this.leading.revision = revision;
      this.leading.renewedAtMs = startedAtMs;
      this.nextRenewAtMs = startedAtMs + this.timings.renewIntervalMs;
      return [];
    }
    const replaced = this.seen;
    this.leading = { revision, term: revision, renewedAtMs: startedAtMs };
    this.nextRenewAtMs = startedAtMs + this.timings.renewIntervalMs;
    this.seen = undefined;
    this.vacant = false;
    if (!replaced || replaced.leader?.id === this.self.id) return [{ type: "elected", term: revision }];
    return [{ type: "elected", term: revision, takeover: { from: replaced.leader, unchangedForMs: nowMs - replaced.sinceMs } }];
  }

  private observe(held: HeldLease | undefined, nowMs: number): void {
    this.nextReadAtMs = nowMs + this.timings.pollIntervalMs;
    if (!held) {
      this.vacant = true;
      this.seen = undefined;
      return;
    }
    this.vacant = false;
    // The lease is counted from when the read came back: the write it shows happened before.
    if (this.seen?.revision !== held.revision) this.seen = { revision: held.revision, sinceMs: nowMs, leader: parseLeaderInfo(held.value) };
  }

  /** A lost (or unanswered) create or takeover: read again before deciding anything. */
  private afterLostWrite(readAtMs: number): void {
    this.vacant = false;
    this.seen = undefined;
    this.nextReadAtMs = readAtMs;
  }

  private stepDown(reason: "lapsed" | "superseded", nowMs: number): LeaseEvent {
    const revision = this.leading!.revision;
    this.leading = undefined;
    if (reason === "lapsed") {
      this.seen = { revision, sinceMs: nowMs, leader: { ...this.self } };
    } else {
      this.seen = undefined;
      this.nextReadAtMs = nowMs;
    }
    return { type: "deposed", reason };
  }

  private record(term: number | undefined): string {
    return JSON.stringify({ id: this.self.id, url: this.self.url, ...(term !== undefined ? { term } : {}) });
  }
}

// ------------------------------------------------------------------------------------------------
// The runner (I/O and timers)
// ------------------------------------------------------------------------------------------------

/** Options of {@link LeaseElection}. */
export interface LeaseElectionOptions {
  store: LeaseStore;
  /** This candidate; `id` must be unique per process incarnation. */
  self: LeaderInfo;
  clock: Clock;
  timers: Timers;
  log: Logger;
  /** @default {@link DEFAULT_LEASE_TIMINGS} */
  timings?: Partial<LeaseTimings>;
  /** Prefix of log messages, e.g. `"master"`. @default "election" */
  label?: string;
  /**
   * This candidate won a term; it may act until it is deposed or {@link LeaseElection.holds} turns
   * false. `takeover` says whom it replaced and how long their record had been unchanged.
   */
  onElected(term: number, takeover?: { from: LeaderInfo | undefined; unchangedForMs: number }): void;
  /** This candidate must stop acting now. */
  onDeposed(reason: "lapsed" | "superseded" | "resigned"): void;
}

/** Runs a {@link LeaseDecider} against a {@link LeaseStore}. */
export class LeaseElection {
  protected readonly decider: LeaseDecider;
  private stopped = false;
  private looping = false;
  private wakeTimer: TimerHandle | undefined;
  private lapseTimer: TimerHandle | undefined;
  private lapseAtMs = Infinity;
  private readonly label: string;

  constructor(private readonly o: LeaseElectionOptions) {
    this.decider = new LeaseDecider(o.self, o.timings);
    this.label = o.label ?? "election";
  }

  get timings(): LeaseTimings {
    return this.decider.timings;
  }

  isLeader(): boolean {
    return this.decider.isLeader();
  }

  /** The current term while leading. */
  term(): number | undefined {
    return this.decider.term();
  }

  /** The leader as last seen (this candidate when it leads). */
  leader(): LeaderInfo | undefined {
    return this.decider.leader();
  }

  /** Whether this candidate may act as the leader now. */
  holds(nowMs = this.o.clock.now()): boolean {
    return !this.stopped && this.decider.holds(nowMs);
  }

  /** Makes the first attempt (a free lease is won before this resolves), then keeps going. */
  async start(): Promise<void> {
    await this.attempt();
  }

  /** Stops campaigning; a leader releases the lease so a standby takes over at once. */
  async stop(options: { release?: boolean } = {}): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.wakeTimer?.cancel();
    this.lapseTimer?.cancel();
    const revision = this.decider.revision();
    if (revision !== undefined && (options.release ?? true)) {
      await this.o.store.leaseRelease(revision).catch((err: unknown) => this.o.log.warn({ err }, `${this.label}: releasing the lease failed`));
    }
  }

  /**
   * Gives the lease back (the owner cannot serve the term it won) and campaigns again after
   * `leaseMs`, so another candidate takes over at once.
   */
  async resign(): Promise<void> {
    if (this.stopped) return;
    const { events, release } = this.decider.resign(this.o.clock.now());
    this.emit(events);
    if (release !== undefined) await this.o.store.leaseRelease(release).catch((err: unknown) => this.o.log.warn({ err }, `${this.label}: releasing the lease failed`));
    this.schedule(this.o.clock.now() + this.timings.leaseMs);
  }

  /** Re-evaluates now (e.g. the owner found the lease lapsed). */
  poke(): void {
    if (this.stopped) return;
    this.emit(this.decider.checkLapse(this.o.clock.now()));
    void this.attempt();
  }

  /** Runs steps until the decider has nothing to do now; one loop at a time. */
  private async attempt(): Promise<void> {
    if (this.stopped || this.looping) return;
    this.looping = true;
    try {
      for (;;) {
        if (this.stopped) return;
        const step = this.decider.step(this.o.clock.now());
        this.emit(step.events);
        if (!step.io) {
          this.schedule(step.wakeAtMs);
          return;
        }
        const io = step.io;
        const startedAtMs = this.o.clock.now();
        const outcome = await this.perform(io);
        if (this.stopped) return;
        const tookMs = this.o.clock.now() - startedAtMs;
        if (tookMs > this.timings.renewIntervalMs) this.o.log.warn({ op: io.op, tookMs, outcome: outcome.op }, `${this.label}: slow lease store operation`);
        this.emit(this.decider.complete(io, startedAtMs, outcome, this.o.clock.now()));
      }
    } finally {
      this.looping = false;
    }
  }

  private async perform(io: LeaseIo): Promise<LeaseOutcome> {
    try {
      switch (io.op) {
        case "read":
          return { op: "read", held: await this.o.store.leaseRead() };
        case "create":
          return { op: "write", revision: await this.o.store.leaseCreate(io.value) };
        case "update":
          return { op: "write", revision: await this.o.store.leaseUpdate(io.value, io.revision) };
      }
    } catch (err) {
      this.o.log.warn({ err, op: io.op }, `${this.label}: lease store operation failed`);
      return { op: "failed" };
    }
  }

  private schedule(wakeAtMs: number): void {
    if (this.stopped) return;
    this.wakeTimer?.cancel();
    this.wakeTimer = undefined;
    if (Number.isFinite(wakeAtMs)) {
      this.wakeTimer = this.o.timers.set(Math.max(0, wakeAtMs - this.o.clock.now()), () => {
        this.wakeTimer = undefined;
        void this.attempt();
      });
    }
    this.armLapse();
  }

  /** A timer at the step-down deadline, so a leader steps down even while a renewal hangs. */
  private armLapse(): void {
    const at = this.decider.stepDownAtMs();
    if (at === this.lapseAtMs) return;
    this.lapseTimer?.cancel();
    this.lapseTimer = undefined;
    this.lapseAtMs = at;
    if (!Number.isFinite(at)) return;
    this.lapseTimer = this.o.timers.set(Math.max(0, at - this.o.clock.now()), () => {
      this.lapseTimer = undefined;
      this.lapseAtMs = Infinity;
      if (this.stopped) return;
      this.emit(this.decider.checkLapse(this.o.clock.now()));
      void this.attempt();
      this.armLapse();
    });
  }

  private emit(events: LeaseEvent[]): void {
    for (const event of events) {
      if (event.type === "elected") {
        const from = event.takeover ? { previousLeader: event.takeover.from?.id, unchangedForMs: event.takeover.unchangedForMs } : {};
        this.o.log.info({ self: this.o.self.id, term: event.term, ...from }, `${this.label}: elected leader`);
        this.armLapse();
        this.o.onElected(event.term, event.takeover);
      } else {
        this.o.log.warn({ self: this.o.self.id, reason: event.reason }, `${this.label}: lost leadership`);
        this.armLapse();
        this.o.onDeposed(event.reason);
      }
    }
  }
}
