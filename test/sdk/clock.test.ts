import { describe, expect, it } from "vitest";
import { SilenceWatch, systemClock, systemTimers } from "../../sdk/clock.ts";
import { ManualTimers } from "./scripted-master.ts";

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

  it("waits out a delay longer than setTimeout can take (about 24.8 days) without firing early", async () => {
    // Node turns a longer setTimeout into 1 ms (with a TimeoutOverflowWarning): a kill grace of
    // 30 days would have spun on 1-ms wake-ups, each finding the deadline not yet reached.
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.name);
    process.on("warning", onWarning);
    try {
      let called = false;
      const timer = systemTimers.set(30 * 86_400_000, () => (called = true));
      let done!: () => void;
      const later = new Promise<void>((resolve) => (done = resolve));
      systemTimers.set(30, done);
      await later;
      timer.cancel();
      expect(called).toBe(false);
      expect(warnings).not.toContain("TimeoutOverflowWarning");
    } finally {
      process.off("warning", onWarning);
    }
  });
});

describe("SilenceWatch", () => {
  const watch = () => {
    const timers = new ManualTimers(0);
    const silences: Array<{ atMs: number; timeoutMs: number }> = [];
    const w = new SilenceWatch(timers, timers, (timeoutMs) => silences.push({ atMs: timers.now(), timeoutMs }));
    return { timers, silences, w };
  };

  it("calls once after the timeout of silence, counted from the last time heard, with one timer armed throughout", () => {
    const { timers, silences, w } = watch();
    w.start(1000);
    for (let t = 0; t < 10; t++) {
      timers.advance(400);
      w.heard();
      expect(timers.armed()).toBe(1);
    }
    expect(silences).toEqual([]);
    timers.advance(999);
    expect(silences).toEqual([]);
    timers.advance(1);
    expect(silences).toEqual([{ atMs: 5000, timeoutMs: 1000 }]);
    expect(timers.armed()).toBe(0);
    timers.advance(10_000);
    expect(silences).toHaveLength(1);
  });

  it("starts from the last time heard (at once when that is already too long ago), and a new start replaces the timeout", () => {
    const { timers, silences, w } = watch();
    timers.advance(500);
    w.heard();
    timers.advance(300);
    w.start(200);
    expect(silences).toEqual([{ atMs: 800, timeoutMs: 200 }]);
    w.heard();
    w.start(5000);
    w.start(100); // shorter: counts from the same last time heard
    timers.advance(100);
    expect(silences).toEqual([{ atMs: 800, timeoutMs: 200 }, { atMs: 900, timeoutMs: 100 }]);
  });

  it("says nothing once stopped, until started again", () => {
    const { timers, silences, w } = watch();
    w.start(100);
    w.stop();
    timers.advance(1000);
    expect(silences).toEqual([]);
    expect(timers.armed()).toBe(0);
    w.heard();
    w.start(100);
    timers.advance(100);
    expect(silences).toEqual([{ atMs: 1100, timeoutMs: 100 }]);
  });
});
