/**
 * The simulator's discrete-event engine: a heap of events ordered by (virtual time, sequence
 * number), a virtual {@link Clock} and {@link Timers} backed by that heap, and a run loop.
 *
 * Determinism: ties at one virtual time are broken by the order in which events were scheduled
 * (the sequence number), and after every event the loop lets all promise continuations it caused
 * settle before the next event fires. The real shells are async (`await transport.request(...)`),
 * so without that a continuation would run "later" at a virtual time that had already moved on.
 * Nothing in a simulation may do real I/O, use real timers or `process.nextTick`: the engine's
 * own turns are the only ones between two events.
 *
 * How the settle works: the loop runs inside a microtask (it resumed from an `await`), and Node
 * runs `process.nextTick` callbacks only once the microtask queue is empty — including every
 * continuation queued while it drains. So the loop waits on a next-tick callback: it resumes
 * exactly when the event's promise chains, however deep, are done, without a trip through the
 * event loop (a `setImmediate` turn costs a poll of the OS and was most of an event's cost).
 *
 * @module
 */

import type { Clock, TimerHandle, Timers } from "../sdk/clock.ts";
import { TimedHeap } from "../sdk/time-heap.ts";

/**
 * One scheduled callback; it is also the {@link TimerHandle} handed back, so scheduling one
 * allocates one object (every simulated message is an event).
 */
class SimEvent implements TimerHandle {
  cancelled = false;
  constructor(
    readonly timeMs: number,
    readonly seq: number,
    readonly fn: () => void,
    /** Whether promise continuations must settle after it (false only for known-synchronous callbacks). */
    readonly settle: boolean,
  ) {}

  cancel(): void {
    this.cancelled = true;
  }
}

/** Options of {@link SimEngine}. */
export interface SimEngineOptions {
  /**
   * Virtual time at the start, in ms since the Unix epoch (status timestamps look plausible).
   * @default 1_767_225_600_000 (2026-01-01T00:00:00Z)
   */
  startMs?: number;
}

/** Options of {@link SimEngine.run}. */
export interface RunOptions {
  /** Stop before the first event later than this virtual time (absolute ms); the clock ends here. @default Infinity */
  untilMs?: number;
  /** Stop after this many events. @default Infinity */
  maxEvents?: number;
  /** Called after every event (after continuations settled); throwing stops the run. @default none */
  afterEvent?: () => void;
}

/** What one {@link SimEngine.run} did. */
export interface RunStats {
  events: number;
  wallMs: number;
  /** Events per wall-clock second. */
  eventsPerSecond: number;
  /** Virtual time at the end of the run. */
  endMs: number;
}

/** The default start of virtual time: 2026-01-01T00:00:00Z. */
export const DEFAULT_SIM_START_MS = 1_767_225_600_000;

/** One macrotask turn: everything queued before it (ticks, microtasks) has run when it resolves. */
const macrotaskTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Resolves once the microtask queue has drained (see the module comment). Only valid when called
 * from inside a microtask, which the run loop is after its first `await`.
 */
const settleMicrotasks = (): Promise<void> => new Promise((resolve) => process.nextTick(resolve));

/** See the module comment. One engine per simulation; not reentrant. */
export class SimEngine {
  private readonly heap = new TimedHeap<SimEvent>();
  private seq = 0;
  private current: number;
  private running = false;
  private processed = 0;

  /** The virtual clock; pass it to every shell of the simulated world. */
  readonly clock: Clock;
  /** Virtual timers on the event heap; pass them to every shell of the simulated world. */
  readonly timers: Timers;

  constructor(options: SimEngineOptions = {}) {
    this.current = options.startMs ?? DEFAULT_SIM_START_MS;
    this.clock = { now: () => this.current };
    this.timers = { set: (delayMs, callback) => this.after(delayMs, callback) };
  }

  /** Current virtual time (ms since the epoch). */
  now(): number {
    return this.current;
  }

  /** Events fired so far, over all runs (current during a run too). */
  eventsProcessed(): number {
    return this.processed;
  }

  /** Events still waiting (including cancelled ones not yet popped). */
  pending(): number {
    return this.heap.size;
  }

  /** Schedules `fn` at absolute virtual time `timeMs` (never before now). */
  at(timeMs: number, fn: () => void, opts: { settle?: boolean } = {}): TimerHandle {
    const event = new SimEvent(Math.max(timeMs, this.current), this.seq++, fn, opts.settle ?? true);
    this.heap.push(event);
    return event;
  }

  /** Schedules `fn` `delayMs` from now; a negative or NaN delay counts as 0. */
  after(delayMs: number, fn: () => void, opts: { settle?: boolean } = {}): TimerHandle {
    const delay = delayMs > 0 ? delayMs : 0;
    return this.at(this.current + delay, fn, opts);
  }

  /**
   * Pops and fires events in (time, sequence) order until the heap is empty, the next event is
   * later than `untilMs`, or `maxEvents` fired. A callback that throws is reported as a thrown
   * error of `run` (a shell never throws out of a timer: it guards its own callbacks).
   */
  async run(options: RunOptions = {}): Promise<RunStats> {
    if (this.running) throw new Error("SimEngine.run: already running");
    this.running = true;
    const untilMs = options.untilMs ?? Infinity;
    const maxEvents = options.maxEvents ?? Infinity;
    const afterEvent = options.afterEvent;
    const started = process.hrtime.bigint();
    let events = 0;
    try {
      // Let whatever the caller started (e.g. `shell.start()`) settle before time moves. The caller
      // may be in a macrotask rather than a microtask, so this first wait is a whole turn.
      await macrotaskTurn();
      while (events < maxEvents) {
        const next = this.heap.peek();
        if (next === undefined || next.timeMs > untilMs) break;
        this.heap.pop();
        if (next.cancelled) continue;
        this.current = next.timeMs;
        events++;
        this.processed++;
        next.fn();
        if (next.settle) await settleMicrotasks();
        if (afterEvent) afterEvent();
      }
      if (untilMs !== Infinity && untilMs > this.current && events < maxEvents) this.current = untilMs;
    } finally {
      this.running = false;
    }
    const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
    return { events, wallMs, eventsPerSecond: wallMs > 0 ? (events / wallMs) * 1000 : 0, endMs: this.current };
  }
}
