/** Leader election over a compare-and-set lease: pure logic with a manual clock and timers. */
import { describe, expect, it } from "vitest";
import { ManualClock, type TimerHandle, type Timers } from "../../../sdk/clock.ts";
import { silentLogger } from "../../../sdk/transport.ts";
import { LeaderElection } from "../../../frameworks/marathon/leader.ts";
import { MemoryMarathonStore } from "../../../frameworks/marathon/store.ts";

class ManualTimers implements Timers {
  private queue: Array<{ at: number; callback: () => void; cancelled: boolean }> = [];
  constructor(private readonly clock: ManualClock) {}
  set(delayMs: number, callback: () => void): TimerHandle {
    const entry = { at: this.clock.now() + delayMs, callback, cancelled: false };
    this.queue.push(entry);
    return { cancel: () => (entry.cancelled = true) };
  }
  /** Advances time step by step, firing due timers and letting their promises settle. */
  async advance(ms: number, stepMs = 50): Promise<void> {
    for (let t = 0; t < ms; t += stepMs) {
      this.clock.advance(stepMs);
      const due = this.queue.filter((e) => e.at <= this.clock.now() && !e.cancelled);
      this.queue = this.queue.filter((e) => !due.includes(e));
      for (const e of due) e.callback();
      for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
    }
  }
}

function candidate(id: string, store: MemoryMarathonStore, clock: ManualClock, timers: Timers) {
  const log = { elected: 0, deposed: 0 };
  const election = new LeaderElection({
    store,
    self: { id, url: `http://${id}` },
    clock,
    timers,
    log: silentLogger,
    leaseMs: 1000,
    onElected: () => log.elected++,
    onDeposed: () => log.deposed++,
  });
  return { election, log };
}

describe("LeaderElection", () => {
  it("elects exactly one, keeps it while it renews, and replaces a silent one after the lease", async () => {
    const clock = new ManualClock(0);
    const timers = new ManualTimers(clock);
    const store = new MemoryMarathonStore();
    const a = candidate("a", store, clock, timers);
    const b = candidate("b", store, clock, timers);
    const c = candidate("c", store, clock, timers);
    await a.election.start();
    await b.election.start();
    await c.election.start();
    expect([a, b, c].map((x) => x.election.isLeader())).toEqual([true, false, false]);
    await timers.advance(5000);
    expect([a, b, c].map((x) => x.election.isLeader())).toEqual([true, false, false]);
    expect(b.election.leader()?.id).toBe("a");

    // a freezes (stops renewing without releasing): after the lease one standby, and only one, takes over.
    const frozen = (a.election as unknown as { stopped: boolean });
    frozen.stopped = true;
    await timers.advance(2000);
    const leaders = [b, c].filter((x) => x.election.isLeader());
    expect(leaders).toHaveLength(1);
    expect(leaders[0]!.log.elected).toBe(1);

    // a wakes up and tries to renew: it is deposed.
    frozen.stopped = false;
    await (a.election as unknown as { attempt(): Promise<void> }).attempt();
    expect(a.election.isLeader()).toBe(false);
    expect(a.log.deposed).toBe(1);
  });

  it("hands over at once when the leader stops", async () => {
    const clock = new ManualClock(0);
    const timers = new ManualTimers(clock);
    const store = new MemoryMarathonStore();
    const a = candidate("a", store, clock, timers);
    const b = candidate("b", store, clock, timers);
    await a.election.start();
    await b.election.start();
    await a.election.stop();
    await timers.advance(400);
    expect(b.election.isLeader()).toBe(true);
  });
});
