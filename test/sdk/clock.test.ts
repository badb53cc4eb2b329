import { describe, expect, it } from "vitest";
import { systemClock, systemTimers } from "../../sdk/clock.ts";

describe("systemTimers", () => {
  it("never calls back before the system clock reaches the due time, even while the event loop is busy", async () => {
    // setTimeout alone was seen to fire 1 ms before Date.now() reached the due time (about 1
    // timer in 2,000 on an idle machine), which lost the batch core's only wake-up.
    const busy = (ms: number) => {
      const end = Date.now() + ms;
      while (Date.now() < end);
    };
    const early: number[] = [];
    let fired = 0;
    await new Promise<void>((done) => {
      for (let i = 0; i < 2000; i++) {
        systemTimers.set(i % 50, () => {
          const dueMs = systemClock.now() + 1 + (i % 17);
          systemTimers.set(1 + (i % 17), () => {
            const left = dueMs - systemClock.now();
            if (left > 0) early.push(left);
            if (++fired === 2000) done();
          });
          busy(i % 5); // stale loop time: the next timers are armed from an old "now"
        });
      }
    });
    expect(early).toEqual([]);
  }, 60_000);

  it("does not call back a cancelled timer", async () => {
    let called = false;
    systemTimers.set(5, () => (called = true)).cancel();
    let done!: () => void;
    const later = new Promise<void>((resolve) => (done = resolve));
    systemTimers.set(20, done);
    await later;
    expect(called).toBe(false);
  });
});
