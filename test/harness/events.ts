/**
 * An append-only log of things that happened (offers, updates, messages) that tests await with
 * a predicate and a deadline — the synchronisation tests use instead of sleeps.
 */
export class EventLog<T> {
  readonly items: T[] = [];
  private waiters: Array<{ predicate: (item: T) => boolean; resolve: (item: T) => void }> = [];

  push(item: T): void {
    this.items.push(item);
    this.waiters = this.waiters.filter((w) => {
      if (!w.predicate(item)) return true;
      w.resolve(item);
      return false;
    });
  }

  /** The first item (already seen or still to come) matching `predicate`. */
  waitFor(predicate: (item: T) => boolean, timeoutMs = 10_000, what = "event"): Promise<T> {
    const seen = this.items.find(predicate);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise<T>((resolve, reject) => {
      const waiter = { predicate, resolve: (item: T) => (clearTimeout(timer), resolve(item)) };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; saw ${this.items.length} items`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  filter(predicate: (item: T) => boolean): T[] {
    return this.items.filter(predicate);
  }
}

/** Polls `check` until it returns a value other than undefined/false, or fails after `timeoutMs`. */
export async function eventually<R>(check: () => R | undefined | false | Promise<R | undefined | false>, timeoutMs = 10_000, what = "condition"): Promise<R> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value as R;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    // Polling an observable state (HTTP, /proc): the check is the synchronisation.
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/**
 * `promise`, or a failure naming `what` once `timeoutMs` has passed: for steps that would otherwise
 * wait without end (a driver that keeps retrying), so a stalled test says where it stalled.
 */
export async function within<R>(promise: Promise<R>, timeoutMs: number, what: string): Promise<R> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
