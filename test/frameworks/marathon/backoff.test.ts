import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  activeDelay,
  canLaunch,
  DEFAULT_BACKOFF,
  delayAfterFailuresSeconds,
  launchAllowedAtMs,
  queueDelayInfo,
  recordActivity,
  recordFailure,
  resetDelay,
  type LaunchDelay,
} from "../../../frameworks/marathon/backoff.ts";

const policy = { backoffSeconds: 1, backoffFactor: 2, maxLaunchDelaySeconds: 10 };

function failures(n: number, startMs: number, everyMs: number, version = "v1", p = policy): LaunchDelay | undefined {
  let delay: LaunchDelay | undefined;
  for (let i = 0; i < n; i++) delay = recordFailure(delay, p, version, startMs + i * everyMs);
  return delay;
}

describe("launch backoff", () => {
  it("starts at backoffSeconds and multiplies by backoffFactor per failure, capped", () => {
    expect([0, 1, 2, 3, 4, 5, 6].map((n) => delayAfterFailuresSeconds(policy, n))).toEqual([0, 1, 2, 4, 8, 10, 10]);
    expect(delayAfterFailuresSeconds(DEFAULT_BACKOFF, 2)).toBeCloseTo(1.15);
    expect(delayAfterFailuresSeconds(DEFAULT_BACKOFF, 1000)).toBe(300);
    expect(delayAfterFailuresSeconds({ backoffSeconds: 600, backoffFactor: 1.15, maxLaunchDelaySeconds: 300 }, 1)).toBe(300);
  });

  it("records failures as Marathon's rate limiter does, counting from the latest failure", () => {
    const delay = failures(3, 0, 500)!;
    expect(delay).toEqual({ configVersion: "v1", sinceMs: 1000, delayMs: 4000, maxDelayMs: 10_000, failures: 3 });
    expect(launchAllowedAtMs(delay, "v1", 1500)).toBe(5000);
    expect(canLaunch(delay, "v1", 4999)).toBe(false);
    expect(canLaunch(delay, "v1", 5000)).toBe(true);
  });

  it("agrees with the closed form for any number of failures", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 60 }), fc.double({ min: 1, max: 3, noNaN: true }), fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 400 }), (n, factor, backoffSeconds, maxLaunchDelaySeconds) => {
        const p = { backoffSeconds, backoffFactor: factor, maxLaunchDelaySeconds };
        const delay = failures(n, 0, 1, "v", p)!;
        expect(delay.delayMs).toBeCloseTo(delayAfterFailuresSeconds(p, n) * 1000, 6);
        expect(delay.delayMs).toBeLessThanOrEqual(maxLaunchDelaySeconds * 1000);
      }),
    );
  });

  it("starts afresh for a new config version, after a reset, and when left alone past the ceiling", () => {
    const delay = failures(4, 0, 100)!;
    expect(delay.delayMs).toBe(8000);
    expect(activeDelay(delay, "v2", 400)).toBeUndefined();
    expect(canLaunch(delay, "v2", 400)).toBe(true);
    expect(recordFailure(delay, policy, "v2", 400).delayMs).toBe(1000);
    expect(resetDelay()).toBeUndefined();
    // Set at 300 with a 10 s ceiling: remembered until 10 300, forgotten after.
    expect(activeDelay(delay, "v1", 10_300)).toBe(delay);
    expect(activeDelay(delay, "v1", 10_301)).toBeUndefined();
    expect(recordFailure(delay, policy, "v1", 20_000)).toMatchObject({ delayMs: 1000, failures: 1 });
  });

  it("remembers a delay for its ceiling after the latest launch or start, without moving when launching may resume", () => {
    const delay = failures(4, 0, 100)!; // set at 300, 8 s, 10 s ceiling
    const launched = recordActivity(delay, "v1", 8_300)!;
    expect(launched).toMatchObject({ sinceMs: 300, delayMs: 8000, activeAtMs: 8_300 });
    expect(launchAllowedAtMs(launched, "v1", 8_300)).toBe(8_300);
    // Forgotten 10 s after the launch, not 10 s after the failure.
    expect(activeDelay(launched, "v1", 18_300)).toBe(launched);
    expect(activeDelay(launched, "v1", 18_301)).toBeUndefined();
    // A crash soon after the launch raises the delay to the ceiling.
    expect(recordFailure(launched, policy, "v1", 12_000)).toMatchObject({ delayMs: 10_000, failures: 5 });
    // Nothing to keep: no delay, another config, or one already forgotten.
    expect(recordActivity(undefined, "v1", 0)).toBeUndefined();
    expect(recordActivity(delay, "v2", 400)).toBeUndefined();
    expect(recordActivity(delay, "v1", 10_301)).toBeUndefined();
  });

  it("reports /v2/queue delay info", () => {
    const delay = failures(3, 0, 500)!;
    expect(queueDelayInfo(delay, "v1", 1500)).toEqual({ timeLeftSeconds: 3, overdue: false });
    expect(queueDelayInfo(delay, "v1", 4200)).toEqual({ timeLeftSeconds: 0, overdue: false });
    expect(queueDelayInfo(delay, "v1", 5000)).toEqual({ timeLeftSeconds: 0, overdue: true });
    expect(queueDelayInfo(undefined, "v1", 5000)).toEqual({ timeLeftSeconds: 0, overdue: true });
  });
});
