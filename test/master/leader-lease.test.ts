/**
 * The election decisions of `sdk/leader-lease.ts` (the masters' and Marathon's), driven by hand on
 * virtual time: a pure state machine needs no store, no timers and no sleeps.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { LeaseDecider, leaseTimingsProblems, resolveLeaseTimings, type HeldLease, type LeaseEvent, type LeaseIo, type LeaseOutcome } from "../../sdk/leader-lease.ts";

const TIMINGS = { leaseMs: 1000, renewIntervalMs: 200, stepDownMarginMs: 100, pollIntervalMs: 50 };

/** A compare-and-set register, applied at one instant (as a JetStream stream applies a write). */
class Register {
  held: HeldLease | undefined;
  private revision = 0;

  apply(io: LeaseIo): LeaseOutcome {
    switch (io.op) {
      case "read":
        return { op: "read", held: this.held ? { ...this.held } : undefined };
      case "create":
        if (this.held) return { op: "write", revision: undefined };
        this.held = { value: io.value, revision: ++this.revision };
        return { op: "write", revision: this.held.revision };
      case "update":
        if (this.held?.revision !== io.revision) return { op: "write", revision: undefined };
        this.held = { value: io.value, revision: ++this.revision };
        return { op: "write", revision: this.held.revision };
    }
  }
}

/** Runs one decider against a register with instant answers, at time `nowMs`, until it has nothing to do. */
function settle(decider: LeaseDecider, register: Register, nowMs: number): { events: LeaseEvent[]; wakeAtMs: number } {
  const events: LeaseEvent[] = [];
  for (let i = 0; i < 20; i++) {
    const step = decider.step(nowMs);
    events.push(...step.events);
    if (!step.io) return { events, wakeAtMs: step.wakeAtMs };
    events.push(...decider.complete(step.io, nowMs, register.apply(step.io), nowMs));
  }
  throw new Error("the decider did not settle");
}

/** Reads a free key and returns the create the decider asks for next. */
function firstCreate(decider: LeaseDecider, register: Register): LeaseIo {
  const read = decider.step(0).io!;
  expect(read).toEqual({ op: "read" });
  decider.complete(read, 0, register.apply(read), 0);
  const create = decider.step(0).io!;
  expect(create.op).toBe("create");
  return create;
}

describe("lease timings", () => {
  it("has defaults that leave the leader several renewals before it steps down", () => {
    const t = resolveLeaseTimings();
    expect(t).toEqual({ leaseMs: 1500, renewIntervalMs: 250, stepDownMarginMs: 250, pollIntervalMs: 100 });
    expect((t.leaseMs - t.stepDownMarginMs) / t.renewIntervalMs).toBeGreaterThanOrEqual(4);
  });

  it("names the field and the rule of a bad value", () => {
    expect(leaseTimingsProblems({ ...TIMINGS, renewIntervalMs: 0 })).toEqual(["renewIntervalMs: must be a finite number > 0, got 0"]);
    expect(leaseTimingsProblems({ ...TIMINGS, leaseMs: 300 })[0]).toMatch(/^leaseMs: must exceed renewIntervalMs \+ stepDownMarginMs/);
    expect(() => resolveLeaseTimings({ leaseMs: Number.NaN })).toThrow(RangeError);
  });
});

describe("LeaseDecider", () => {
  it("elects the first candidate on a free key with the revision as its term, and renews it", () => {
    const register = new Register();
    const a = new LeaseDecider({ id: "a", url: "http://a" }, TIMINGS);
    const { events } = settle(a, register, 0);
    expect(events).toEqual([{ type: "elected", term: 1 }]);
    expect(a.term()).toBe(1);
    expect(a.stepDownAtMs()).toBe(900);
    // Renewals keep the term, move the deadline, and write the term into the record.
    for (let t = 200; t <= 2000; t += 200) expect(settle(a, register, t).events).toEqual([]);
    expect(a.term()).toBe(1);
    expect(a.holds(2000)).toBe(true);
    expect(JSON.parse(register.held!.value)).toEqual({ id: "a", url: "http://a", term: 1 });
  });

  it("lets a standby take over only a lease left unchanged for leaseMs, with a higher term", () => {
    const register = new Register();
    const a = new LeaseDecider({ id: "a", url: "http://a" }, TIMINGS);
    const b = new LeaseDecider({ id: "b", url: "http://b" }, TIMINGS);
    settle(a, register, 0);
    let t = 0;
    for (; t <= 3000; t += 50) {
      if (t % 200 === 0) settle(a, register, t);
      expect(settle(b, register, t).events).toEqual([]);
    }
    expect(b.leader()).toEqual({ id: "a", url: "http://a", term: 1 });
    // a dies after its renewal at 3000; b has seen that revision since 3000.
    let elected: LeaseEvent[] = [];
    for (t = 3050; elected.length === 0; t += 50) elected = settle(b, register, t).events;
    expect(t - 50).toBe(4000);
    expect(elected[0]).toMatchObject({ type: "elected", takeover: { from: { id: "a" }, unchangedForMs: 1000 } });
    expect((elected[0] as { term: number }).term).toBeGreaterThan(1);
  });

  it("steps down before any standby could take over when its renewals stop getting through", () => {
    const register = new Register();
    const a = new LeaseDecider({ id: "a", url: "http://a" }, TIMINGS);
    const b = new LeaseDecider({ id: "b", url: "http://b" }, TIMINGS);
    settle(a, register, 0);
    settle(b, register, 10); // b saw revision 1 at 10
    // From 200 on, a's renewals hang: the store never answers.
    const hung = a.step(200);
    expect(hung.io).toMatchObject({ op: "update" });
    expect(a.step(500)).toEqual({ events: [], io: undefined, wakeAtMs: 900 });
    expect(a.holds(899)).toBe(true);
    expect(a.step(900).events).toEqual([{ type: "deposed", reason: "lapsed" }]);
    expect(a.holds(900)).toBe(false);
    let bElectedAt = -1;
    for (let t = 20; t <= 2000 && bElectedAt < 0; t += 10) if (settle(b, register, t).events.some((e) => e.type === "elected")) bElectedAt = t;
    expect(bElectedAt).toBe(1010);
    // The hung renewal now fails: a stays a standby and finds b.
    expect(a.complete(hung.io!, 200, { op: "failed" }, 1100)).toEqual([]);
    settle(a, register, 1200);
    expect(a.isLeader()).toBe(false);
    expect(a.leader()?.id).toBe("b");
  });

  it("is deposed at once by a lost compare-and-set, and reads before trying again", () => {
    const register = new Register();
    const a = new LeaseDecider({ id: "a", url: "http://a" }, TIMINGS);
    settle(a, register, 0);
    register.held = { value: JSON.stringify({ id: "intruder", url: "http://i" }), revision: 99 };
    const { events } = settle(a, register, 200);
    expect(events).toEqual([{ type: "deposed", reason: "superseded" }]);
    expect(a.leader()?.id).toBe("intruder");
  });

  it("takes its own record back at once (a write whose answer was lost), as a new term", () => {
    const register = new Register();
    const a = new LeaseDecider({ id: "a", url: "http://a" }, TIMINGS);
    const create = firstCreate(a, register);
    register.apply(create); // applied, but the answer is lost
    expect(a.complete(create, 0, { op: "failed" }, 5)).toEqual([]);
    const { events } = settle(a, register, 60);
    expect(events).toEqual([{ type: "elected", term: 2 }]);
  });

  it("resigns: releases its revision, ignores a renewal answered later, and stays out for a lease", () => {
    const register = new Register();
    const a = new LeaseDecider({ id: "a", url: "http://a" }, TIMINGS);
    settle(a, register, 0);
    const renewal = a.step(200).io!;
    const { events, release } = a.resign(210);
    expect(events).toEqual([{ type: "deposed", reason: "resigned" }]);
    expect(release).toBe(1);
    expect(a.complete(renewal, 200, register.apply(renewal), 220)).toEqual([]);
    expect(a.isLeader()).toBe(false);
    expect(a.step(500)).toEqual({ events: [], io: undefined, wakeAtMs: 1210 });
  });

  it("does not lead on a write that was answered after its own deadline", () => {
    const register = new Register();
    const a = new LeaseDecider({ id: "a", url: "http://a" }, TIMINGS);
    const create = firstCreate(a, register);
    const outcome = register.apply(create);
    expect(a.complete(create, 0, outcome, 950)).toEqual([]);
    expect(a.isLeader()).toBe(false);
    // The record is its own: the next step takes it again, with a fresh deadline.
    expect(settle(a, register, 950).events).toEqual([{ type: "elected", term: 2 }]);
    expect(a.stepDownAtMs()).toBe(950 + 900);
  });
});

/**
 * The safety property under random latencies, lost answers, failed writes, stalls and crashes:
 * at no instant do two candidates hold the lease, and terms only grow. Operations take effect at
 * one instant between being sent and being answered, as on a real store. Stalls and crashes hit
 * whoever leads at that moment (the interesting case); a stalled candidate's holds() still counts.
 */
describe("LeaseDecider safety (property)", () => {
  type Sim = { decider: LeaseDecider; crashed: boolean; stalledUntilMs: number };
  type Ev = { at: number; seq: number; run: () => void };

  function simulate(seed: { candidates: number; latencies: number[]; faults: number[]; crashes: number[]; stalls: Array<[number, number]> }): {
    maxHolders: number;
    terms: number[];
    leaderAtEnd: boolean;
  } {
    const register = new Register();
    const queue: Ev[] = [];
    let seq = 0;
    let draw = 0;
    const latency = () => seed.latencies[draw++ % seed.latencies.length]!;
    const fault = () => seed.faults[draw++ % seed.faults.length]!;
    const at = (time: number, run: () => void) => queue.push({ at: time, seq: seq++, run });
    const endMs = 20_000;
    const calmFromMs = 14_000;
    const sims: Sim[] = Array.from({ length: seed.candidates }, (_, i) => ({
      decider: new LeaseDecider({ id: `c${i}`, url: `http://c${i}` }, TIMINGS),
      crashed: false,
      stalledUntilMs: 0,
    }));
    const terms: number[] = [];
    let maxHolders = 0;
    const holderAt = (time: number) => sims.find((s) => !s.crashed && s.decider.holds(time));

    const wake = (s: Sim, time: number) => {
      if (s.crashed) return;
      if (time < s.stalledUntilMs) return at(s.stalledUntilMs, () => wake(s, s.stalledUntilMs));
      const step = s.decider.step(time);
      record(step.events);
      if (step.io) send(s, step.io, time);
      else if (Number.isFinite(step.wakeAtMs)) at(Math.max(time, step.wakeAtMs), () => wake(s, Math.max(time, step.wakeAtMs)));
    };
    const send = (s: Sim, io: LeaseIo, sentAt: number) => {
      const calm = sentAt >= calmFromMs;
      // fault 1: never applied, answered "failed"; fault 2: applied, answer lost ("failed").
      const f = calm ? 0 : fault();
      const applyAt = sentAt + (calm ? 1 : latency());
      const answerAt = applyAt + (calm ? 1 : latency());
      at(applyAt, () => {
        const outcome: LeaseOutcome = f === 1 ? { op: "failed" } : register.apply(io);
        at(answerAt, () => deliver(s, io, sentAt, f === 2 ? { op: "failed" } : outcome, answerAt));
      });
    };
    const deliver = (s: Sim, io: LeaseIo, sentAt: number, outcome: LeaseOutcome, time: number) => {
      if (s.crashed) return;
      if (time < s.stalledUntilMs) return at(s.stalledUntilMs, () => deliver(s, io, sentAt, outcome, s.stalledUntilMs));
      record(s.decider.complete(io, sentAt, outcome, time));
      wake(s, time);
    };
    const record = (events: LeaseEvent[]) => {
      for (const e of events) if (e.type === "elected") terms.push(e.term);
    };

    sims.forEach((s, i) => at(i * 7, () => wake(s, i * 7)));
    for (const time of seed.crashes) {
      at(Math.min(time, calmFromMs - 1), () => {
        const victim = holderAt(Math.min(time, calmFromMs - 1));
        if (victim && sims.filter((s) => !s.crashed).length > 1) victim.crashed = true;
      });
    }
    for (const [from, length] of seed.stalls) {
      at(from, () => {
        const victim = holderAt(from) ?? sims[0]!;
        victim.stalledUntilMs = Math.max(victim.stalledUntilMs, Math.min(from + length, calmFromMs));
      });
    }
    while (queue.length > 0) {
      queue.sort((x, y) => x.at - y.at || x.seq - y.seq);
      const ev = queue.shift()!;
      if (ev.at > endMs) break;
      ev.run();
      // Crashed candidates count too: a process that died while holding must not overlap either.
      maxHolders = Math.max(maxHolders, sims.filter((s) => s.decider.holds(ev.at)).length);
    }
    return { maxHolders, terms, leaderAtEnd: holderAt(endMs) !== undefined };
  }

  it("never has two holders, terms grow, and a leader is back once the faults stop", () => {
    fc.assert(
      fc.property(
        fc.record({
          candidates: fc.integer({ min: 2, max: 4 }),
          latencies: fc.array(fc.integer({ min: 0, max: 700 }), { minLength: 1, maxLength: 40 }),
          faults: fc.array(fc.integer({ min: 0, max: 7 }), { minLength: 1, maxLength: 40 }),
          crashes: fc.array(fc.integer({ min: 0, max: 14_000 }), { maxLength: 3 }),
          stalls: fc.array(fc.tuple(fc.integer({ min: 0, max: 14_000 }), fc.integer({ min: 0, max: 3000 })), { maxLength: 6 }),
        }),
        (seed) => {
          const { maxHolders, terms, leaderAtEnd } = simulate(seed);
          expect(maxHolders).toBeLessThanOrEqual(1);
          for (let i = 1; i < terms.length; i++) expect(terms[i]!).toBeGreaterThan(terms[i - 1]!);
          expect(leaderAtEnd).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });
});
