import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  applyRolloutStep,
  computeRestartPlan,
  initialRolloutState,
  randomEnvironment,
  rolloutStep,
  simulateRollout,
} from "../../../frameworks/marathon/upgrade.ts";
import { SeededRng } from "../../../sdk/rng.ts";

const strategy = (minimumHealthCapacity: number, maximumOverCapacity: number) => ({ minimumHealthCapacity, maximumOverCapacity });

describe("computeRestartPlan", () => {
  it("computes minHealthy, maxCapacity and the immediate kills", () => {
    expect(computeRestartPlan(10, strategy(1, 1), 10)).toEqual({ target: 10, minHealthy: 10, maxCapacity: 20, killImmediately: 0, overCapacityAllowance: false });
    expect(computeRestartPlan(10, strategy(0.5, 0), 10)).toMatchObject({ minHealthy: 5, maxCapacity: 10, killImmediately: 5 });
    expect(computeRestartPlan(10, strategy(0, 0), 10)).toMatchObject({ minHealthy: 0, maxCapacity: 10, killImmediately: 10 });
    expect(computeRestartPlan(3, strategy(0.5, 0.5), 3)).toMatchObject({ minHealthy: 2, maxCapacity: 4, killImmediately: 1 });
  });

  it("allows one extra instance when minHealthy equals maxCapacity", () => {
    expect(computeRestartPlan(10, strategy(1, 0), 10)).toMatchObject({ minHealthy: 10, maxCapacity: 11, overCapacityAllowance: true });
    // Fewer old instances than capacity: there is room already, no allowance (as in Marathon).
    expect(computeRestartPlan(10, strategy(1, 0), 4)).toMatchObject({ maxCapacity: 10, overCapacityAllowance: false });
  });

  it("kills unhealthy old instances at once too", () => {
    expect(computeRestartPlan(10, strategy(0.5, 0), 10, 7)).toMatchObject({ killImmediately: 3 + 2 });
  });

  it("counts new instances already running (a restart taken over by a forced deployment) among the healthy and the capacity", () => {
    // (4, 1, 0) with 2 old and 2 new ready: nothing may go at once, one extra instance is allowed.
    const plan = computeRestartPlan(4, strategy(1, 0), 2, 2, { started: 2, ready: 2 });
    expect(plan).toMatchObject({ minHealthy: 4, maxCapacity: 5, killImmediately: 0, overCapacityAllowance: true, newReadyAtStart: 2 });
    const state = { ...initialRolloutState(2), newStarted: 2, newHealthy: 2 };
    expect(rolloutStep(plan, state)).toMatchObject({ killOld: 0, startNew: 1 });
    // Only a new instance beyond those ready at the start lets an old one go.
    expect(rolloutStep(plan, { ...state, newStarted: 3, newHealthy: 3 })).toMatchObject({ killOld: 1 });
    // Healthy instances above minHealthy still go at once: (4, 0.5, 0) keeps 2 of the 4.
    expect(computeRestartPlan(4, strategy(0.5, 0), 2, 2, { started: 2, ready: 2 })).toMatchObject({ killImmediately: 2 });
    expect(() => computeRestartPlan(4, strategy(1, 0), 2, 2, { started: 1, ready: 2 })).toThrow(RangeError);
  });

  it("computes with the JVM's double arithmetic, as Marathon does", () => {
    // 100 * 0.55 is 55.00000000000001 in IEEE doubles: Marathon keeps 56 healthy, and so do we.
    expect(computeRestartPlan(100, strategy(0.55, 0), 100).minHealthy).toBe(56);
  });

  it("rejects impossible inputs", () => {
    expect(() => computeRestartPlan(-1, strategy(1, 1), 0)).toThrow(RangeError);
    expect(() => computeRestartPlan(1, strategy(1.5, 1), 0)).toThrow(RangeError);
    expect(() => computeRestartPlan(1, strategy(1, 1), 1, 2)).toThrow(RangeError);
  });
});

describe("rolloutStep: the worked cases", () => {
  it("(10, 1, 1) starts 10 at once and peaks at 20", () => {
    const plan = computeRestartPlan(10, strategy(1, 1), 10);
    expect(rolloutStep(plan, initialRolloutState(10))).toEqual({ killOld: 0, killOldUnhealthy: 0, startNew: 10, done: false });
    const sim = simulateRollout({ target: 10, strategy: strategy(1, 1), oldRunning: 10 });
    expect(sim.completed).toBe(true);
    expect(sim.peakTotal).toBe(20);
    expect(sim.lowestHealthy).toBe(10);
  });

  it("(10, 1, 0) replaces one at a time and peaks at 11", () => {
    const sim = simulateRollout({ target: 10, strategy: strategy(1, 0), oldRunning: 10 });
    expect(sim.completed).toBe(true);
    expect(sim.peakTotal).toBe(11);
    expect(sim.lowestHealthy).toBe(10);
    expect(sim.trace.every((t) => t.startNew <= 1 && t.killOld <= 1)).toBe(true);
    expect(sim.trace[0]).toMatchObject({ killOld: 0, startNew: 1, total: 11 });
  });

  it("(10, 0.5, 0) kills 5 first and never exceeds 10", () => {
    const sim = simulateRollout({ target: 10, strategy: strategy(0.5, 0), oldRunning: 10 });
    expect(sim.trace[0]).toMatchObject({ killOld: 5, startNew: 0, healthy: 5 });
    expect(sim.trace[1]).toMatchObject({ startNew: 5 });
    expect(sim.peakTotal).toBe(10);
    expect(sim.lowestHealthy).toBe(5);
    expect(sim.completed).toBe(true);
  });

  it("(10, 0, 0) kills all, then starts", () => {
    const sim = simulateRollout({ target: 10, strategy: strategy(0, 0), oldRunning: 10 });
    expect(sim.trace[0]).toMatchObject({ killOld: 10, startNew: 0, healthy: 0 });
    expect(sim.trace[1]).toMatchObject({ killOld: 0, startNew: 10 });
    expect(sim.peakTotal).toBe(10);
    expect(sim.completed).toBe(true);
  });

  it("lets each new healthy instance release one old one", () => {
    const plan = computeRestartPlan(4, strategy(1, 0.5), 4);
    let state = applyRolloutStep(initialRolloutState(4), rolloutStep(plan, initialRolloutState(4)));
    expect(state).toMatchObject({ oldRunning: 4, newStarted: 2 });
    expect(rolloutStep(plan, state)).toMatchObject({ killOld: 0, startNew: 0 });
    state = { ...state, newHealthy: 1 };
    expect(rolloutStep(plan, state)).toMatchObject({ killOld: 1, startNew: 0 });
    state = applyRolloutStep(state, rolloutStep(plan, state));
    // The kill is not confirmed yet: its instance still holds a place.
    expect(rolloutStep(plan, state)).toMatchObject({ killOld: 0, startNew: 0 });
    state = { ...state, oldStopping: 0 };
    expect(rolloutStep(plan, state)).toMatchObject({ killOld: 0, startNew: 1 });
  });

  it("handles scaling to zero and starting from nothing", () => {
    expect(simulateRollout({ target: 0, strategy: strategy(1, 1), oldRunning: 3 })).toMatchObject({ completed: true, peakTotal: 3 });
    expect(simulateRollout({ target: 5, strategy: strategy(1, 0), oldRunning: 0 })).toMatchObject({ completed: true, peakTotal: 5 });
  });
});

describe("rolloutStep: properties", () => {
  const scenario = fc.record({
    target: fc.integer({ min: 0, max: 30 }),
    oldFactor: fc.double({ min: 0, max: 2, noNaN: true }),
    minimumHealthCapacity: fc.oneof(fc.constantFrom(0, 0.5, 1), fc.double({ min: 0, max: 1, noNaN: true })),
    maximumOverCapacity: fc.oneof(fc.constantFrom(0, 0.5, 1), fc.double({ min: 0, max: 1, noNaN: true })),
    seed: fc.integer(),
  });

  it("never drops below minHealthy, never exceeds maxCapacity (+1 in the equal case), and always completes", () => {
    fc.assert(
      fc.property(scenario, ({ target, oldFactor, minimumHealthCapacity, maximumOverCapacity, seed }) => {
        const oldRunning = Math.round(target * oldFactor);
        const s = strategy(minimumHealthCapacity, maximumOverCapacity);
        const sim = simulateRollout({ target, strategy: s, oldRunning, environment: randomEnvironment(new SeededRng(seed)) });
        const minHealthy = Math.ceil(target * minimumHealthCapacity);
        const maxCapacity = Math.floor(target * (1 + maximumOverCapacity));
        const allowance = minHealthy === maxCapacity && maxCapacity <= oldRunning ? 1 : 0;
        expect(sim.completed).toBe(true);
        // Starting from all healthy: health never goes below what was demanded (or what there was).
        expect(sim.lowestHealthy).toBeGreaterThanOrEqual(Math.min(minHealthy, oldRunning));
        // New instances are only started within capacity; more old ones than that only shrink.
        expect(sim.peakTotal).toBeLessThanOrEqual(Math.max(maxCapacity + allowance, oldRunning));
        for (const entry of sim.trace) if (entry.startNew > 0) expect(entry.total).toBeLessThanOrEqual(maxCapacity + allowance);
        expect(sim.finalState).toMatchObject({ oldRunning: 0, oldStopping: 0, newHealthy: target });
      }),
      { numRuns: 400 },
    );
  });

  it("is idempotent: after carrying out a step, the same observation asks for nothing more", () => {
    fc.assert(
      fc.property(scenario, ({ target, oldFactor, minimumHealthCapacity, maximumOverCapacity }) => {
        const oldRunning = Math.round(target * oldFactor);
        const plan = computeRestartPlan(target, strategy(minimumHealthCapacity, maximumOverCapacity), oldRunning);
        const state = applyRolloutStep(initialRolloutState(oldRunning), rolloutStep(plan, initialRolloutState(oldRunning)));
        const again = rolloutStep(plan, state);
        expect(again.killOld).toBe(0);
        expect(again.startNew).toBe(0);
      }),
    );
  });
});
