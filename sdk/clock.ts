/**
 * Time as the cores see it. Decision logic never reads the system clock directly: production
 * passes {@link systemClock}, the simulator passes its virtual clock, so both run the same code.
 */
export interface Clock {
  /** Milliseconds since the Unix epoch (virtual in the simulator). */
  now(): number;
}

/** A timer that can be cancelled before it fires. Cancelling twice is harmless. */
export interface TimerHandle {
  cancel(): void;
}

/**
 * Deferred callbacks for shells. Production uses {@link systemTimers}; the simulator schedules
 * them on its event heap.
 */
export interface Timers {
  /** Calls `callback` once, `delayMs` from now (never before). */
  set(delayMs: number, callback: () => void): TimerHandle;
}

/** The wall clock. */
export const systemClock: Clock = { now: () => Date.now() };

/**
 * Node's timers, held to the {@link Timers} contract against {@link systemClock}: `setTimeout`
 * counts from the event loop's cached time, so it may fire a millisecond or more before
 * `Date.now()` has reached the due time, and a core woken "at" a deadline would find it not yet
 * due and wait for a wake-up that never comes. An early firing re-arms for what is left. Timers
 * are unref'd so a pending one never keeps a process alive on its own.
 */
export const systemTimers: Timers = {
  set(delayMs, callback) {
    const dueMs = systemClock.now() + Math.max(0, delayMs);
    let handle: ReturnType<typeof setTimeout>;
    const arm = (ms: number): void => {
      handle = setTimeout(fire, ms);
      handle.unref?.();
    };
    const fire = (): void => {
      const left = dueMs - systemClock.now();
      if (left > 0) arm(left);
      else callback();
    };
    arm(Math.max(0, delayMs));
    return { cancel: () => clearTimeout(handle) };
  },
};

/** A clock whose time only moves when told to: for unit tests of cores and for the simulator. */
export class ManualClock implements Clock {
  private current: number;

  /** @param startMs the initial time. @default 0 */
  constructor(startMs = 0) {
    this.current = startMs;
  }

  now(): number {
    return this.current;
  }

  /** Moves time forward by `deltaMs` (never backwards). */
  advance(deltaMs: number): void {
    if (!(deltaMs >= 0)) throw new RangeError(`ManualClock.advance: delta must be >= 0, got ${deltaMs}`);
    this.current += deltaMs;
  }

  /** Jumps to `timeMs`, which must not be in the past. */
  set(timeMs: number): void {
    if (!(timeMs >= this.current)) throw new RangeError(`ManualClock.set: time cannot go backwards (${timeMs} < ${this.current})`);
    this.current = timeMs;
  }
}
