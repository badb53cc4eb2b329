import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../../sdk/clock.ts";
import { Resources } from "../../../sdk/resources.ts";
import { BatchCore, BatchError, carve, type BatchEffect, type BatchEvent, type BatchJobSpec, type BatchOffer } from "../../../frameworks/batch/core.ts";
import { JobFileError, parseJobFile } from "../../../frameworks/batch/job-file.ts";
import { damaged, withValueAt } from "../../harness/damage.ts";

function offer(id: string, agentId: string, text: string): BatchOffer {
  return { id, agentId, hostname: `${agentId}.example`, resources: Resources.parse(text) };
}

function job(id: string, count: number, extra: Partial<BatchJobSpec> = {}, resources = "cpus:1;mem:128"): BatchJobSpec {
  return { id, tasks: new Array(count).fill({ resources, command: "true" }), ...extra };
}

const kinds = (fx: BatchEffect[]) => fx.filter((e) => e.type !== "event").map((e) => e.type);
const events = (fx: BatchEffect[]) => fx.flatMap((e) => (e.type === "event" ? [e.event] : []));
const launches = (fx: BatchEffect[]) => fx.flatMap((e) => (e.type === "launch" ? e.tasks.map((t) => t.taskId) : []));
function eventOf<T extends BatchEvent["type"]>(fx: BatchEffect[], type: T): Extract<BatchEvent, { type: T }> | undefined {
  return events(fx).find((e) => e.type === type) as Extract<BatchEvent, { type: T }> | undefined;
}

function setup(config = {}) {
  const clock = new ManualClock(1_000_000);
  const core = new BatchCore({ clock, config });
  core.subscribed(false);
  /** Launches the tasks of `fx` successfully and reports them RUNNING. */
  const run = (fx: BatchEffect[]) => {
    const ids = launches(fx);
    const out = core.launchResult(ids, true);
    for (const id of ids) out.push(...core.update({ taskId: id, state: "TASK_RUNNING", agentId: "a1" }));
    return out;
  };
  const end = (taskId: string, state: string, extra: { exitCode?: number; message?: string } = {}) => core.update({ taskId, state, agentId: "a1", ...extra });
  return { clock, core, run, end };
}

describe("BatchCore", () => {
  it("packs as many queued tasks as fit into each offer and declines the rest with the refuse filter", () => {
    const { core } = setup({ refuseSeconds: 7 });
    core.submit(job("j", 5));
    const fx = core.offers([offer("o1", "a1", "cpus:2.5;mem:1024"), offer("o2", "a2", "cpus:0.5;mem:1024"), offer("o3", "a3", "cpus:4;mem:200")]);
    const accepts = fx.filter((e) => e.type === "launch");
    expect(accepts).toEqual([
      expect.objectContaining({ type: "launch", offerId: "o1", agentId: "a1", refuseSeconds: 7, tasks: [expect.objectContaining({ taskId: "j.0.0" }), expect.objectContaining({ taskId: "j.1.0" })] }),
      expect.objectContaining({ offerId: "o3", tasks: [expect.objectContaining({ taskId: "j.2.0", hostname: "a3.example" })] }),
    ]);
    expect(fx).toContainEqual({ type: "decline", offerIds: ["o2"], refuseSeconds: 7 });
    expect(core.pendingTasks()).toBe(2);
    expect(core.pendingQueuedBefore(1_000_001)).toBe(2);
    expect(core.pendingQueuedBefore(1_000_000)).toBe(0);
    expect(kinds(fx)).not.toContain("suppress");
  });

  it("takes smaller tasks past one that does not fit (first fit), keeping queue order otherwise", () => {
    const { core } = setup();
    core.submit({ id: "big", tasks: [{ resources: "cpus:8;mem:128", command: "x" }] });
    core.submit(job("small", 2));
    const fx = core.offers([offer("o1", "a1", "cpus:2;mem:1024")]);
    expect(launches(fx)).toEqual(["small.0.0", "small.1.0"]);
    expect(launches(core.offers([offer("o2", "a2", "cpus:8;mem:1024")]))).toEqual(["big.0.0"]);
  });

  it("runs tasks on the resources reserved for its role in an offer, reserved first, then unreserved", () => {
    const { core } = setup();
    core.submit(job("j", 3, {}, "cpus:1;mem:128;ports:[31000-31000]"));
    // All of the agent is reserved for the framework's role: the tasks must still run there.
    const reserved = offer("o1", "a1", "cpus(analytics):1;mem(analytics):256;ports(analytics):[31000-31000]");
    const first = core.offers([reserved]).find((e) => e.type === "launch");
    expect(first).toMatchObject({ offerId: "o1", tasks: [{ taskId: "j.0.0" }] });
    const used = (first as Extract<BatchEffect, { type: "launch" }>).tasks[0]!.resources;
    // What the ACCEPT names is in the offer, with its reservation (the master checks exactly that).
    expect(reserved.resources.contains(used)).toBe(true);
    expect(used.equals(Resources.parse("cpus(analytics):1;mem(analytics):128;ports(analytics):[31000-31000]"))).toBe(true);
    // A mixed offer: the reserved part first, the rest from unreserved resources (one task may use both).
    const mixed = offer("o2", "a2", "cpus(analytics):0.5;cpus:4;mem:1024;ports:[31000-31001]");
    const second = core.offers([mixed]).find((e) => e.type === "launch") as Extract<BatchEffect, { type: "launch" }>;
    expect(second.tasks.map((t) => t.taskId)).toEqual(["j.1.0"]);
    expect(second.tasks[0]!.resources.equals(Resources.parse("cpus(analytics):0.5;cpus:0.5;mem:128;ports:[31000-31000]"))).toBe(true);
    expect(mixed.resources.contains(second.tasks[0]!.resources)).toBe(true);
    // A task naming a reservation gets it, and the rest of what it asks for around it.
    const named = carve(Resources.parse("cpus(analytics):1.5;cpus:1;mem:64"), Resources.parse("cpus(analytics):1;cpus:1;mem:32"));
    expect(named?.equals(Resources.parse("cpus(analytics):1.5;cpus:0.5;mem:32"))).toBe(true);
    expect(carve(Resources.parse("cpus:4;mem:64"), Resources.parse("cpus(analytics):1;mem:32"))).toBeNull();
    // Ports are the ones the task names, reserved or not.
    expect(core.offers([offer("o3", "a3", "cpus(analytics):4;mem(analytics):1024;ports(analytics):[32000-32001]")]).filter((e) => e.type === "launch")).toEqual([]);
  });

  it("suppresses when nothing is queued and revives at once when work arrives", () => {
    const clock = new ManualClock(0);
    const core = new BatchCore({ clock });
    expect(kinds(core.subscribed(false))).toEqual(["suppress"]);
    expect(core.isSuppressed()).toBe(true);
    // An offer already on its way is declined; no second SUPPRESS.
    expect(kinds(core.offers([offer("o1", "a1", "cpus:4;mem:1024")]))).toEqual(["decline"]);
    expect(kinds(core.submit(job("j", 2)))).toEqual(["revive"]);
    const fx = core.offers([offer("o2", "a1", "cpus:4;mem:1024")]);
    expect(kinds(fx)).toEqual(["launch", "suppress"]);
    core.launchResult(launches(fx), true);
    // A failure queues work again: REVIVE, although the last one was just now (we were suppressed).
    expect(kinds(core.update({ taskId: "j.0.0", state: "TASK_FAILED", agentId: "a1" }))).toEqual(["revive"]);
  });

  it("revives for new work while offers are filtered at most once per reviveIntervalMs, waking up for the postponed one", () => {
    const { clock, core } = setup({ reviveIntervalMs: 1000 });
    expect(kinds(core.submit(job("a", 3, {}, "cpus:2;mem:128")))).toEqual(["revive"]); // was suppressed: at once
    core.offers([offer("o1", "a1", "cpus:2;mem:1024")]); // launches one; the remainder is filtered
    clock.advance(200);
    const soon = core.submit(job("b", 1));
    expect(kinds(soon)).toEqual(["wake"]);
    expect(soon).toContainEqual({ type: "wake", atMs: 1_001_000 });
    clock.set(1_001_000);
    expect(kinds(core.tick())).toEqual(["revive"]);
    // Work arriving later than the interval revives at once.
    core.offers([offer("o2", "a2", "cpus:0.5;mem:64")]);
    clock.advance(1000);
    expect(kinds(core.submit(job("c", 1)))).toEqual(["revive"]);
  });

  it("keeps offers nothing fits (offerHoldSeconds, up to maxHeldOffers), launches arriving work on them without a REVIVE, and declines them when the hold ends", () => {
    const clock = new ManualClock(0);
    const core = new BatchCore({ clock, config: { offerHoldSeconds: 60, maxHeldOffers: 2, refuseSeconds: 30 } });
    expect(kinds(core.subscribed(false))).toEqual(["suppress"]);
    // Nothing queued: two offers are kept, the third declined; a wake-up for the first hold's end.
    const fx = core.offers([offer("o1", "a1", "cpus:4;mem:1024"), offer("o2", "a2", "cpus:1;mem:1024"), offer("o3", "a3", "cpus:4;mem:1024")]);
    expect(fx).toContainEqual({ type: "decline", offerIds: ["o3"], refuseSeconds: 30 });
    expect(fx).toContainEqual({ type: "wake", atMs: 60_000 });
    expect(core.heldOffers()).toBe(2);
    // Work arrives: it goes to the kept offers, oldest first, with no REVIVE.
    clock.set(10_000);
    const first = core.submit(job("j", 3));
    expect(first.filter((e) => e.type === "launch")).toEqual([expect.objectContaining({ offerId: "o1", agentId: "a1", tasks: [expect.objectContaining({ taskId: "j.0.0" }), expect.objectContaining({ taskId: "j.1.0" }), expect.objectContaining({ taskId: "j.2.0" })] })]);
    expect(kinds(first)).not.toContain("revive");
    expect(core.heldOffers()).toBe(1);
    // More than the kept offers hold: what fits goes on o2, the rest needs a REVIVE.
    const second = core.submit(job("k", 2));
    expect(second.filter((e) => e.type === "launch")).toEqual([expect.objectContaining({ offerId: "o2", tasks: [expect.objectContaining({ taskId: "k.0.0" })] })]);
    expect(kinds(second)).toContain("revive");
    expect(core.heldOffers()).toBe(0);
    // A kept offer the master rescinds is forgotten; one whose hold ends is declined.
    core.offers([offer("o4", "a4", "cpus:0.5;mem:64"), offer("o5", "a5", "cpus:0.5;mem:64")]);
    expect(core.heldOffers()).toBe(2);
    core.rescinded("o4");
    expect(core.heldOffers()).toBe(1);
    clock.set(10_000 + 60_000);
    expect(core.tick()).toContainEqual({ type: "decline", offerIds: ["o5"], refuseSeconds: 30 });
    expect(core.heldOffers()).toBe(0);
    // A new subscription starts without the offers of the old one.
    core.offers([offer("o6", "a6", "cpus:0.5;mem:64")]);
    core.subscribed(true);
    expect(core.heldOffers()).toBe(0);
    expect(core.counters.offersHeld).toBe(5);

    // A kept offer is not filtered at the master: new work that no kept offer fits needs no
    // REVIVE while offers are not suppressed (the master offers what frees up anyway).
    const fresh = new BatchCore({ clock, config: { offerHoldSeconds: 60 } });
    fresh.subscribed(false);
    expect(kinds(fresh.submit(job("big", 1, {}, "cpus:8;mem:128")))).toEqual(["revive"]);
    expect(kinds(fresh.offers([offer("p1", "a1", "cpus:1;mem:1024")]))).toEqual(["wake"]);
    expect(fresh.heldOffers()).toBe(1);
    clock.advance(5_000); // past reviveIntervalMs: a filtered framework would REVIVE now
    expect(kinds(fresh.submit(job("big2", 1, {}, "cpus:8;mem:128")))).toEqual([]);
  });

  it("retries a failed task up to maxRetries times with a new task id per attempt, then fails the job", () => {
    const { core, run, end } = setup();
    core.submit(job("flaky", 2, { maxRetries: 1 }));
    run(core.offers([offer("o1", "a1", "cpus:4;mem:1024")]));
    const first = end("flaky.0.0", "TASK_FAILED", { exitCode: 3, message: "Command exited with status 3" });
    expect(eventOf(first, "task-failed")).toMatchObject({ taskId: "flaky.0.0", index: 0, attempt: 0, exitCode: 3, retrying: true });
    expect(core.pendingTasks()).toBe(1);
    end("flaky.1.0", "TASK_FINISHED");
    const retry = core.offers([offer("o2", "a2", "cpus:4;mem:1024")]);
    expect(retry.find((e) => e.type === "launch")).toMatchObject({ tasks: [{ taskId: "flaky.0.1", attempt: 1, failures: 1 }] });
    run(retry);
    const last = end("flaky.0.1", "TASK_LOST", { message: "agent gone" });
    expect(eventOf(last, "task-failed")).toMatchObject({ retrying: false, state: "TASK_LOST" });
    const ended = eventOf(last, "job-ended")!;
    expect(ended.outcome).toBe("failed");
    expect(ended.summary).toMatchObject({ tasks: 2, finished: 1, failed: 1, launches: 3, retries: 1, lastFailure: { taskId: "flaky.0.1", state: "TASK_LOST", message: "agent gone" } });
    expect(core.counters).toMatchObject({ jobsFailed: 1, attemptsFailed: 2, retries: 1, tasksFinished: 1 });
  });

  it("completes a job when every task finished, with the wait from submission to RUNNING per task", () => {
    const { clock, core, end } = setup();
    core.submit(job("j", 2));
    clock.advance(1500);
    const fx = core.offers([offer("o1", "a1", "cpus:1;mem:1024")]);
    core.launchResult(launches(fx), true);
    clock.advance(500);
    expect(eventOf(core.update({ taskId: "j.0.0", state: "TASK_RUNNING", agentId: "a1" }), "task-running")).toMatchObject({ waitMs: 2000, hostname: "a1.example" });
    end("j.0.0", "TASK_FINISHED");
    clock.advance(1000);
    const second = core.offers([offer("o2", "a1", "cpus:1;mem:1024")]);
    core.launchResult(launches(second), true);
    core.update({ taskId: "j.1.0", state: "TASK_RUNNING", agentId: "a1" });
    // A duplicate RUNNING changes nothing.
    expect(core.update({ taskId: "j.1.0", state: "TASK_RUNNING", agentId: "a1" })).toEqual([]);
    const done = end("j.1.0", "TASK_FINISHED");
    const ended = eventOf(done, "job-ended")!;
    expect(ended.outcome).toBe("completed");
    expect(ended.summary).toMatchObject({ state: "completed", finished: 2, failed: 0, waitMs: { count: 2, p50: 2000, max: 3000, mean: 2500 }, elapsedMs: 3000 });
    expect(kinds(second)).toEqual(["launch", "suppress"]);
    // The same terminal update again (the agent re-sends until acknowledged) is ignored.
    expect(end("j.1.0", "TASK_FINISHED")).toEqual([]);
  });

  it("times a job out: asks to be woken at the deadline, drops queued tasks and kills running ones", () => {
    const { clock, core, run, end } = setup();
    const fx = core.submit(job("slow", 3, { timeoutMs: 10_000 }));
    expect(fx).toContainEqual({ type: "wake", atMs: 1_010_000 });
    run(core.offers([offer("o1", "a1", "cpus:2;mem:1024")]));
    clock.advance(9_999);
    expect(core.tick()).toEqual([]);
    clock.advance(1);
    const timedOut = core.tick();
    expect(timedOut.filter((e) => e.type === "kill")).toEqual([
      { type: "kill", taskId: "slow.0.0", agentId: "a1" },
      { type: "kill", taskId: "slow.1.0", agentId: "a1" },
    ]);
    const ended = eventOf(timedOut, "job-ended")!;
    expect(ended).toMatchObject({ outcome: "timed-out", summary: { state: "timed-out", dropped: 3, finished: 0 } });
    expect(core.pendingTasks()).toBe(0);
    expect(kinds(timedOut)).toContain("suppress");
    // The kills' answers do not count as failures, nor queue anything again.
    expect(events(end("slow.0.0", "TASK_KILLED")).map((e) => e.type)).toEqual([]);
    expect(core.job("slow")).toMatchObject({ failed: 0, retries: 0 });
    expect(core.counters.jobsTimedOut).toBe(1);
  });

  it("kills a launch that was still being accepted when its job ended, once the ACCEPT succeeds", () => {
    const { clock, core } = setup();
    core.submit(job("j", 1, { timeoutMs: 1000 }));
    const fx = core.offers([offer("o1", "a1", "cpus:2;mem:1024")]);
    clock.advance(1000);
    expect(kinds(core.tick()).filter((k) => k === "kill")).toEqual([]);
    expect(core.launchResult(launches(fx), true)).toContainEqual({ type: "kill", taskId: "j.0.0", agentId: "a1" });
  });

  it("kills again a task of an ended job that still reports itself running (a kill lost in a master failover)", () => {
    const { clock, core, run } = setup();
    core.submit(job("j", 1, { timeoutMs: 1000 }));
    run(core.offers([offer("o1", "a1", "cpus:2;mem:1024")]));
    clock.advance(1000);
    expect(core.tick()).toContainEqual({ type: "kill", taskId: "j.0.0", agentId: "a1" });
    core.disconnected();
    expect(core.subscribed(true)).toContainEqual({ type: "reconcile", tasks: [{ taskId: "j.0.0", agentId: "a1" }] });
    // The reconciliation's answer: still running. The kill is asked for again, once per update.
    expect(core.update({ taskId: "j.0.0", state: "TASK_RUNNING", agentId: "a1" })).toEqual([{ type: "kill", taskId: "j.0.0", agentId: "a1" }]);
    expect(core.update({ taskId: "j.0.0", state: "TASK_KILLING", agentId: "a1" })).toEqual([]);
    expect(core.update({ taskId: "j.0.0", state: "TASK_KILLED", agentId: "a1" })).toEqual([]);
    expect(core.update({ taskId: "j.0.0", state: "TASK_RUNNING", agentId: "a1" })).toEqual([{ type: "kill", taskId: "j.0.0", agentId: "a1" }]);
    // A launch accepted after its job ended is killed once, not twice, when its first update comes first.
    core.submit(job("k", 1, { timeoutMs: 1000 }));
    const fx = core.offers([offer("o2", "a1", "cpus:2;mem:1024")]);
    clock.advance(1000);
    core.tick();
    expect(core.update({ taskId: launches(fx)[0]!, state: "TASK_RUNNING", agentId: "a1" }).filter((e) => e.type === "kill")).toHaveLength(1);
  });

  it("asks again every killRetryMs to kill a task of an ended job until it ends (a kill lost on its way to the agent)", () => {
    const { clock, core, run, end } = setup({ killRetryMs: 10_000 });
    core.submit(job("j", 2, { timeoutMs: 1000 }));
    run(core.offers([offer("o1", "a1", "cpus:2;mem:1024")]));
    clock.advance(1000);
    const timedOut = core.tick();
    expect(timedOut.filter((e) => e.type === "kill")).toHaveLength(2);
    expect(timedOut).toContainEqual({ type: "wake", atMs: clock.now() + 10_000 });
    // One of them ends; the other's kill was lost and is asked for again, and again.
    end("j.0.0", "TASK_KILLED");
    clock.advance(10_000);
    const again = core.tick();
    expect(again.filter((e) => e.type === "kill")).toEqual([{ type: "kill", taskId: "j.1.0", agentId: "a1" }]);
    expect(again).toContainEqual({ type: "wake", atMs: clock.now() + 10_000 });
    clock.advance(10_000);
    expect(core.tick().filter((e) => e.type === "kill")).toEqual([{ type: "kill", taskId: "j.1.0", agentId: "a1" }]);
    // Once it ends, nothing more is asked, and no wake-up is wanted for it.
    end("j.1.0", "TASK_KILLED");
    clock.advance(10_000);
    expect(core.tick()).toEqual([]);
  });

  it("ends a failFast job at the first task out of retries", () => {
    const { core, run, end } = setup();
    core.submit(job("ff", 3, { maxRetries: 0, failFast: true }));
    run(core.offers([offer("o1", "a1", "cpus:3;mem:1024")]));
    const fx = end("ff.1.0", "TASK_FAILED");
    expect(eventOf(fx, "job-ended")).toMatchObject({ outcome: "failed", summary: { failed: 1, dropped: 2 } });
    expect(fx.filter((e) => e.type === "kill").map((e) => (e as { taskId: string }).taskId)).toEqual(["ff.0.0", "ff.2.0"]);
  });

  it("queues the tasks of a refused ACCEPT again, in front, without counting a failure", () => {
    const { core } = setup();
    core.submit(job("a", 1));
    core.submit(job("b", 1));
    const fx = core.offers([offer("o1", "a1", "cpus:1;mem:1024")]);
    expect(launches(fx)).toEqual(["a.0.0"]);
    const refused = core.launchResult(["a.0.0"], false, "CORRAL_ERR_OFFER_RESCINDED");
    expect(eventOf(refused, "task-launch-failed")).toMatchObject({ taskId: "a.0.0", error: "CORRAL_ERR_OFFER_RESCINDED" });
    expect(launches(core.offers([offer("o2", "a1", "cpus:1;mem:1024")]))).toEqual(["a.0.1"]);
    expect(core.job("a")).toMatchObject({ retries: 0, failed: 0 });
  });

  it("queues again, in front and without using a retry, a launch the master answers TASK_DROPPED or TASK_LOST for invalid offers (it never ran)", () => {
    const { core } = setup();
    core.submit(job("once", 2, { maxRetries: 0 }));
    core.submit(job("later", 1));
    const fx = core.offers([offer("o1", "a1", "cpus:2;mem:1024")]);
    expect(launches(fx)).toEqual(["once.0.0", "once.1.0"]);
    // The master took the ACCEPT (the call succeeded) but the offer had been rescinded: it
    // answers each task TASK_LOST (not partition-aware) or TASK_DROPPED with REASON_INVALID_OFFERS.
    expect(core.launchResult(["once.0.0", "once.1.0"], true).filter((e) => e.type === "event")).toHaveLength(2);
    const lost = core.update({ taskId: "once.0.0", state: "TASK_LOST", agentId: "a1", reason: "REASON_INVALID_OFFERS", message: "offer 'o1' is no longer valid" });
    expect(eventOf(lost, "task-failed")).toBeUndefined();
    expect(eventOf(lost, "task-launch-failed")).toMatchObject({ taskId: "once.0.0", error: "TASK_LOST: offer 'o1' is no longer valid" });
    const dropped = core.update({ taskId: "once.1.0", state: "TASK_DROPPED", agentId: "a1", reason: "REASON_INVALID_OFFERS" });
    expect(eventOf(dropped, "task-failed")).toBeUndefined();
    expect(eventOf(dropped, "job-ended")).toBeUndefined();
    expect(core.job("once")).toMatchObject({ state: "running", failed: 0, retries: 0 });
    // Both go before the job queued after them.
    expect(launches(core.offers([offer("o2", "a1", "cpus:2;mem:1024")])).sort()).toEqual(["once.0.1", "once.1.1"]);
    // A TASK_LOST for another reason (its agent was lost: it may have run) uses a retry.
    const gone = core.update({ taskId: "once.0.1", state: "TASK_LOST", agentId: "a1", reason: "REASON_AGENT_REMOVED" });
    expect(eventOf(gone, "task-failed")).toMatchObject({ retrying: false });
  });

  it("partition-aware: waits for a TASK_UNREACHABLE task instead of running it again, and takes it back when it reports RUNNING; TASK_GONE runs it again", () => {
    const { core, run, end } = setup();
    core.submit(job("p", 2, { maxRetries: 1 }));
    run(core.offers([offer("o1", "a1", "cpus:2;mem:1024")]));
    const cut = end("p.0.0", "TASK_UNREACHABLE", { message: "agent unreachable" });
    expect(kinds(cut)).toEqual([]);
    expect(events(cut)).toEqual([]);
    expect(core.pendingTasks()).toBe(0);
    // Offers meanwhile launch nothing: the task is not run a second time.
    expect(launches(core.offers([offer("o2", "a2", "cpus:2;mem:1024")]))).toEqual([]);
    expect(end("p.0.0", "TASK_RUNNING")).toEqual([]);
    end("p.0.0", "TASK_FINISHED");
    expect(core.job("p")).toMatchObject({ finished: 1, launches: 2, retries: 0 });
    // The other one's agent is gone for good: it runs again, using a retry.
    end("p.1.0", "TASK_UNREACHABLE");
    expect(eventOf(end("p.1.0", "TASK_GONE"), "task-failed")).toMatchObject({ retrying: true, state: "TASK_GONE" });
    expect(launches(core.offers([offer("o3", "a2", "cpus:2;mem:1024")]))).toEqual(["p.1.1"]);
  });

  it("queues delayed tasks when their startAfterMs has passed", () => {
    const { clock, core } = setup();
    const fx = core.submit({ id: "t", tasks: [{ resources: "cpus:1;mem:1", durationMs: 5, startAfterMs: 0 }, { resources: "cpus:1;mem:1", durationMs: 5, startAfterMs: 3000 }] });
    expect(eventOf(fx, "tasks-queued")).toMatchObject({ count: 1 });
    expect(fx).toContainEqual({ type: "wake", atMs: 1_003_000 });
    expect(core.pendingTasks()).toBe(1);
    clock.advance(3000);
    const released = core.tick();
    expect(eventOf(released, "tasks-queued")).toMatchObject({ jobId: "t", count: 1, atMs: 1_003_000 });
    expect(core.pendingTasks()).toBe(2);
  });

  it("kills a running task it does not know (an earlier attempt, an earlier run) and ignores stale terminal updates", () => {
    const { core } = setup();
    expect(core.update({ taskId: "old.0.0", state: "TASK_RUNNING", agentId: "a9" })).toEqual([{ type: "kill", taskId: "old.0.0", agentId: "a9" }]);
    expect(core.update({ taskId: "old.0.0", state: "TASK_FINISHED", agentId: "a9" })).toEqual([]);
  });

  it("asks for the state of launched tasks after re-subscribing", () => {
    const { core, run } = setup();
    core.submit(job("j", 2));
    run(core.offers([offer("o1", "a1", "cpus:2;mem:1024")]));
    core.disconnected();
    const fx = core.subscribed(true);
    expect(fx).toContainEqual({ type: "reconcile", tasks: [{ taskId: "j.0.0", agentId: "a1" }, { taskId: "j.1.0", agentId: "a1" }] });
    // Nothing queued: a new subscription starts unsuppressed, so it suppresses again.
    expect(kinds(fx)).toContain("suppress");
  });

  it("refuses bad jobs naming the field and the rule, and enforces its bounds", () => {
    const { core } = setup({ maxTasksPerJob: 3, maxLiveJobs: 1 });
    const refused = (spec: unknown) => {
      try {
        core.submit(spec as BatchJobSpec);
      } catch (err) {
        expect(err).toBeInstanceOf(BatchError);
        return (err as BatchError).message;
      }
      return "accepted";
    };
    expect(refused({ id: "a.b", tasks: [] })).toMatch(/^id: must be/);
    expect(refused({ id: "x", tasks: [{ resources: "cpus:lots", command: "x" }] })).toMatch(/^tasks\[0\]\.resources: is not valid Mesos resource text/);
    expect(refused({ id: "x", tasks: [{ resources: "cpus:1" }] })).toBe("tasks[0]: needs a command or a durationMs");
    expect(refused({ id: "x", tasks: [], maxRetries: -1 })).toBe("maxRetries: must be an integer >= 0, got -1");
    // A hole in a sparse array is no task (the job would have waited for it for ever).
    expect(refused({ id: "x", tasks: [, { resources: "cpus:1", command: "x" }] })).toBe("tasks[0]: must be an object");
    expect(refused(job("x", 4))).toBe("tasks: 4 tasks, more than maxTasksPerJob (3)");
    expect(refused(job("x", 1))).toBe("accepted");
    expect(refused(job("x", 1))).toBe('id: job "x" was already submitted');
    expect(refused(job("y", 1))).toMatch(/the most maxLiveJobs allows/);
  });

  it("refuses a config that breaks a tunable's bound, naming the tunable and the rule", () => {
    const clock = new ManualClock(0);
    const refused = (config: Record<string, unknown>) => {
      try {
        new BatchCore({ clock, config });
      } catch (err) {
        expect(err).toMatchObject({ name: "BatchError", code: "CORRAL_ERR_BAD_CONFIG" });
        return (err as BatchError).message;
      }
      return "accepted";
    };
    expect(refused({ maxHeldOffers: 0 })).toBe("config.maxHeldOffers: must be an integer >= 1, got 0");
    expect(refused({ maxLiveJobs: 2.5 })).toBe("config.maxLiveJobs: must be an integer >= 1, got 2.5");
    expect(refused({ offerHoldSeconds: -1 })).toBe("config.offerHoldSeconds: must be a finite number >= 0, got -1");
    expect(refused({ refuseSeconds: Number.NaN })).toBe("config.refuseSeconds: must be a finite number >= 0, got NaN");
    expect(refused({ reviveIntervalMs: "1000" })).toBe("config.reviveIntervalMs: must be a finite number >= 0, got \"1000\"");
    expect(refused({ maxEndedJobs: 0, offerHoldSeconds: 0.5, maxHeldOffers: 1 })).toBe("accepted");
    // A tunable given as undefined keeps its default.
    expect(new BatchCore({ clock, config: { maxHeldOffers: undefined } }).config.maxHeldOffers).toBe(1000);
  });

  it("refuses the id of a forgotten job while a task of it still runs, whose task ids the new job would reuse", () => {
    const { clock, core, run, end } = setup({ maxEndedJobs: 0 });
    core.submit(job("x", 1, { timeoutMs: 1000 }));
    run(core.offers([offer("o1", "a1", "cpus:2;mem:1024")]));
    clock.advance(1000);
    expect(core.tick()).toContainEqual({ type: "kill", taskId: "x.0.0", agentId: "a1" });
    expect(core.job("x")).toBeUndefined(); // forgotten at once (maxEndedJobs 0)
    // "x.0.0" still runs: a second "x" would launch a task of the same id, and take the first
    // one's TASK_KILLED for its own.
    expect(() => core.submit(job("x", 1))).toThrow(new BatchError("CORRAL_ERR_DUPLICATE_JOB", 'id: job "x" ended but its task x.0.0 has not yet; submit it again once that task ended'));
    end("x.0.0", "TASK_KILLED");
    expect(eventOf(core.submit(job("x", 1)), "job-submitted")).toMatchObject({ jobId: "x" });
  });

  it("completes a job of zero tasks at once", () => {
    const { core } = setup();
    expect(eventOf(core.submit({ id: "empty", tasks: [] }), "job-ended")).toMatchObject({ outcome: "completed" });
    expect(core.liveJobCount()).toBe(0);
  });

  it("cancels jobs: queued tasks dropped, running ones killed", () => {
    const { core, run } = setup();
    core.submit(job("j", 2));
    run(core.offers([offer("o1", "a1", "cpus:1;mem:1024")]));
    const fx = core.cancelAll();
    expect(fx).toContainEqual({ type: "kill", taskId: "j.0.0", agentId: "a1" });
    expect(eventOf(fx, "job-ended")).toMatchObject({ outcome: "cancelled", summary: { dropped: 2 } });
  });
});

describe("parseJobFile", () => {
  it("accepts a damaged job file or refuses it with a JobFileError naming problems, never anything else (property)", () => {
    const example = JSON.parse(readFileSync(new URL("../../../examples/jobs/hello.json", import.meta.url), "utf8")) as unknown;
    fc.assert(
      fc.property(damaged([example]), ({ path, value }) => {
        try {
          parseJobFile(withValueAt(example, path, value));
        } catch (err) {
          expect(err).toBeInstanceOf(JobFileError);
          expect((err as JobFileError).problems.length).toBeGreaterThan(0);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it("refuses a duration or a timeout too long to count in milliseconds, which the framework would refuse after connecting", () => {
    let problems: string[] = [];
    try {
      parseJobFile({
        jobs: [
          { id: "a", tasks: 1, resources: "cpus:1;mem:32", durationSeconds: 1e306 },
          { id: "b", tasks: 1, resources: "cpus:1;mem:32", command: "x", timeoutSeconds: 1e306 },
        ],
      });
    } catch (err) {
      expect(err).toBeInstanceOf(JobFileError);
      problems = (err as JobFileError).problems;
    }
    expect(problems).toEqual(["jobs[0].durationSeconds: must be <= 1000000000", "jobs[1].timeoutSeconds: must be <= 1000000000"]);
  });

  it("refuses a file whose jobs hold more tasks in all than the framework keeps at once (before building them)", () => {
    const jobs = Array.from({ length: 12 }, (_, i) => ({ id: `j${i}`, tasks: 100_000, resources: "cpus:0.1;mem:32", command: "true" }));
    let problems: string[] = [];
    try {
      parseJobFile({ jobs });
    } catch (err) {
      expect(err).toBeInstanceOf(JobFileError);
      problems = (err as JobFileError).problems;
    }
    expect(problems).toEqual([
      "jobs[10].tasks: brings the file's jobs to 1100000 tasks, more than the 1000000 the batch framework keeps at once",
      "jobs[11].tasks: brings the file's jobs to 1200000 tasks, more than the 1000000 the batch framework keeps at once",
    ]);
    const { core } = setup();
    for (const spec of parseJobFile({ jobs: jobs.slice(0, 10) })) core.submit(spec);
    expect(core.pendingTasks()).toBe(1_000_000);
  });

  it("gives the framework only jobs it accepts: whatever parseJobFile returns, BatchCore.submit takes (property)", () => {
    const example = JSON.parse(readFileSync(new URL("../../../examples/jobs/hello.json", import.meta.url), "utf8")) as unknown;
    fc.assert(
      fc.property(damaged([example]), ({ path, value }) => {
        let specs: BatchJobSpec[];
        try {
          specs = parseJobFile(withValueAt(example, path, value));
        } catch {
          return;
        }
        const { core } = setup();
        for (const spec of specs) core.submit(spec);
      }),
      { numRuns: 2000 },
    );
  });

  it("refuses environment variable names no process environment can hold, and NUL characters in a command or a value", () => {
    const problems = (job: Record<string, unknown>): string[] => {
      try {
        parseJobFile({ jobs: [{ id: "e", tasks: 1, resources: "cpus:0.1;mem:32", command: "true", ...job }] });
      } catch (err) {
        expect(err).toBeInstanceOf(JobFileError);
        return (err as JobFileError).problems;
      }
      return [];
    };
    // "A=B" would reach the task as A set to "B=...", "" as nothing at all.
    expect(problems({ env: { "A=B": "1", "": "2", "N\u0000": "3", OK: "x\u0000y" } })).toEqual([
      "jobs[0].env.A=B: environment variable names must not be empty or contain '=' or NUL",
      "jobs[0].env.: environment variable names must not be empty or contain '=' or NUL",
      'jobs[0].env.N\u0000: environment variable names must not be empty or contain \'=\' or NUL',
      "jobs[0].env.OK: must not contain NUL characters",
    ]);
    expect(problems({ command: "echo a\u0000b" })).toEqual(["jobs[0].command: must not contain NUL characters"]);
    // The framework refuses them too, when given jobs directly.
    const { core } = setup();
    expect(() => core.submit({ id: "x", tasks: [{ resources: "cpus:1", command: "true", env: { "A=B": "1" } }] })).toThrow(
      new BatchError("CORRAL_ERR_INVALID_JOB", "tasks[0].env: environment variable names must not be empty or contain '=' or NUL, got \"A=B\""),
    );
    expect(() => core.submit({ id: "x", tasks: [{ resources: "cpus:1", command: "a\u0000" }] })).toThrow(new BatchError("CORRAL_ERR_INVALID_JOB", "tasks[0].command: must not contain NUL characters"));
  });

  it("turns a job file into job specs with the defaults", () => {
    const [hello, nap] = parseJobFile({
      jobs: [
        { id: "hello", tasks: 2, resources: "cpus:0.1;mem:32", command: "echo hi", env: { A: "1" }, timeoutSeconds: 30 },
        { id: "nap", tasks: 1, resources: "cpus:0.1;mem:32", durationSeconds: 1.5, maxRetries: 0, failFast: true },
      ],
    });
    expect(hello).toMatchObject({ id: "hello", maxRetries: 3, timeoutMs: 30_000, failFast: false });
    expect(hello!.tasks).toHaveLength(2);
    expect(hello!.tasks[0]).toMatchObject({ command: "echo hi", env: { A: "1" } });
    expect(nap).toMatchObject({ id: "nap", maxRetries: 0, failFast: true, tasks: [{ durationMs: 1500 }] });
  });

  it("lists every problem with its field and rule", () => {
    let problems: string[] = [];
    try {
      parseJobFile({
        jobs: [
          { id: "a", tasks: 0, resources: "cpus:x", command: "x", durationSeconds: 1, extra: 1 },
          { id: "a", tasks: 1, resources: "cpus:1", env: { X: 1 }, maxRetries: 1.5, timeoutSeconds: 0 },
          "nope",
        ],
        other: true,
      });
    } catch (err) {
      expect(err).toBeInstanceOf(JobFileError);
      problems = (err as JobFileError).problems;
    }
    expect(problems).toEqual(
      expect.arrayContaining([
        "other: is not a known field (known: jobs)",
        "jobs[0].extra: is not a known field (known: id, tasks, resources, command, durationSeconds, env, maxRetries, timeoutSeconds, failFast)",
        "jobs[0].tasks: must be an integer >= 1",
        "jobs[0].durationSeconds: give exactly one of command and durationSeconds",
        'jobs[1].id: must be unique ("a" is used twice)',
        "jobs[1].command: give exactly one of command and durationSeconds",
        "jobs[1].env.X: must be a string",
        "jobs[1].maxRetries: must be an integer >= 0",
        "jobs[1].timeoutSeconds: must be a number > 0",
        "jobs[2]: must be an object",
      ]),
    );
    expect(problems.some((p) => p.startsWith("jobs[0].resources: is not valid Mesos resource text"))).toBe(true);
  });
});
