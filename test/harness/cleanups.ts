/**
 * What a test started and must stop: registered as it is started, undone after each test, newest
 * first, every one even when another fails (a test that failed half-way still leaves nothing).
 *
 * @module
 */
import { afterEach } from "vitest";

/** Registers one cleanup for after the current test. */
export type Defer = (cleanup: () => unknown) => void;

/** Registers an `afterEach` that runs the cleanups given to the returned {@link Defer}. */
export function useCleanups(): Defer {
  const cleanups: Array<() => unknown> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) {
      try {
        await cleanup();
      } catch {
        // Best effort: the next cleanup still runs.
      }
    }
  });
  return (cleanup) => void cleanups.push(cleanup);
}
