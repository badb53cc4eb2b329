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

/** The longest delay `setTimeout` takes as given (2^31 - 1 ms, about 24.8 days). */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** The wall clock. */
export const systemClock: Clock = { now: () => Date.now() };

/**
 * Node's timers, held to the {@link Timers} contract against {@link systemClock}: `setTimeout`
 * counts from the event loop's cached time, so it may fire a millisecond or more before
 * `Date.now()` has reached the due time, and a core woken "at" a deadline would find it not yet
 * due and wait for a wake-up that never comes. An early firing re-arms for what is left. Timers
 * are unref'd so a pending one never keeps a process alive on its own. A delay longer than
 * `setTimeout` takes ({@link MAX_TIMEOUT_MS}; Node would fire a longer one after 1 ms) is waited out
 * in turns of at most that.
 */
export const systemTimers: Timers = {
  set(delayMs, callback) {
    const dueMs = systemClock.now() + Math.max(0, delayMs);
    let handle: ReturnType<typeof setTimeout>;
    const arm = (ms: number): void => {
      handle = setTimeout(fire, Math.min(ms, MAX_TIMEOUT_MS));
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

/**
 * Notices silence: while watching, `onSilent(timeoutMs)` is called once nothing has been
 * {@link SilenceWatch.heard} for `timeoutMs`. For liveness checks that are fed on every message
 * (an agent hearing the master's pings, a framework hearing its events): hearing only records the
 * time, and the one timer armed fires at the earliest possible deadline, finds anything heard
 * since and waits out the rest. A timer cancelled and set again per message cost a timer per
 * message, which in the simulator is an event on the heap for every ping of every agent.
 */
export class SilenceWatch {
  private timer: TimerHandle | undefined;
  private lastHeardMs: number;
  /** Set while watching. */
  private timeoutMs: number | undefined;

  /** Nothing is watched until {@link start}; the last time heard starts as now. */
  constructor(
    private readonly clock: Clock,
    private readonly timers: Timers,
    private readonly onSilent: (timeoutMs: number) => void,
  ) {
    this.lastHeardMs = clock.now();
  }

  /** Something was heard now (also while not watching: {@link start} counts from the last time). */
  heard(): void {
    this.lastHeardMs = this.clock.now();
  }

  /**
   * Watches for `timeoutMs` of silence counted from the last time heard, replacing any earlier
   * watch. Already that silent: `onSilent` is called before this returns.
   */
  start(timeoutMs: number): void {
    this.stop();
    this.timeoutMs = timeoutMs;
    this.check();
  }

  /** Stops watching; `onSilent` is not called until the next {@link start}. */
  stop(): void {
    this.timer?.cancel();
    this.timer = undefined;
    this.timeoutMs = undefined;
  }

  private check(): void {
    const timeoutMs = this.timeoutMs!;
    const leftMs = this.lastHeardMs + timeoutMs - this.clock.now();
    if (leftMs <= 0) {
      this.timeoutMs = undefined;
      this.onSilent(timeoutMs);
      return;
    }
    const handle = this.timers.set(leftMs, () => {
      if (this.timer !== handle) return;
      this.timer = undefined;
      this.check();
    });
    this.timer = handle;
  }
}
