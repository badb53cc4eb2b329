/**
 * The batch framework on a real cluster: a real nats-server, an in-process master and two
 * `corral agent` child processes running real commands.
 */
import { afterEach, describe, expect, it } from "vitest";
import { runBatchJobs } from "../../../frameworks/batch/batch.ts";
import type { BatchEvent } from "../../../frameworks/batch/core.ts";
import { parseJobFile } from "../../../frameworks/batch/job-file.ts";
import { startCluster, type TestCluster } from "../../harness/cluster.ts";
import { eventually } from "../../harness/events.ts";
import { useNats } from "../../harness/nats.ts";

const nats = useNats();
let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

describe("batch framework on a real cluster", () => {
  it("runs jobs of real commands: retries a task that fails once, gives up on a broken one, times a slow one out", async () => {
    cluster = await startCluster({ natsUrl: nats.url, agents: [] });
    const resources = "cpus:1;mem:512;disk:256;ports:[31000-31009]";
    await cluster.spawnAgent(resources, "batch-a", { isolation: "posix" });
    await cluster.spawnAgent(resources, "batch-b", { isolation: "posix" });
    const master = cluster.master;
    await eventually(() => master.core.sizes().agents === 2, 30_000, "both agents registered");

    const jobs = parseJobFile({
      jobs: [
        { id: "ok", tasks: 3, resources: "cpus:0.2;mem:32", command: "true" },
        // Fails on its first attempt, succeeds on the retry.
        { id: "flaky", tasks: 2, resources: "cpus:0.2;mem:32", command: 'test "$CORRAL_TASK_ATTEMPT" -ge 1', maxRetries: 2 },
        { id: "broken", tasks: 1, resources: "cpus:0.1;mem:32", command: "exit 3", maxRetries: 1 },
        { id: "slow", tasks: 1, resources: "cpus:0.1;mem:32", command: "sleep 30", timeoutSeconds: 1 },
      ],
    });
    const events: BatchEvent[] = [];
    let frameworkId: string | undefined;
    const summary = await runBatchJobs({
      transport: await cluster.connect("batch"),
      cluster: cluster.cluster,
      jobs,
      framework: { name: "batch-e2e" },
      onEvent: (event, framework) => {
        events.push(event);
        frameworkId ??= framework.driver.frameworkId();
      },
    });

    const byId = Object.fromEntries(summary.jobs.map((j) => [j.id, j]));
    expect(byId.ok).toMatchObject({ state: "completed", tasks: 3, finished: 3, failed: 0, launches: 3, retries: 0 });
    expect(byId.flaky).toMatchObject({ state: "completed", finished: 2, launches: 4, retries: 2 });
    expect(byId.broken).toMatchObject({ state: "failed", failed: 1, launches: 2, retries: 1, lastFailure: { taskId: "broken.0.1", state: "TASK_FAILED", exitCode: 3 } });
    expect(byId.slow).toMatchObject({ state: "timed-out", finished: 0, dropped: 1 });
    expect(summary).toMatchObject({ completed: 2, failed: 1, timedOut: 1, cancelled: 0 });
    // Every task that ran waited a measurable, plausible time for its offer.
    expect(byId.ok!.waitMs.count).toBe(3);
    expect(byId.ok!.waitMs.max).toBeLessThan(10_000);

    // Tasks ran on both spawned agents, with the batch environment.
    const running = events.filter((e): e is Extract<BatchEvent, { type: "task-running" }> => e.type === "task-running");
    expect(new Set(running.map((e) => e.hostname))).toEqual(new Set(["batch-a", "batch-b"]));
    const flakyFailures = events.filter((e) => e.type === "task-failed" && e.jobId === "flaky");
    expect(flakyFailures.map((e) => (e as { attempt: number; retrying: boolean }).attempt)).toEqual([0, 0]);
    expect(flakyFailures.every((e) => (e as { retrying: boolean }).retrying)).toBe(true);
    // The slow task was running when its job timed out; with nothing left queued, offers were suppressed.
    expect(running.some((e) => e.taskId === "slow.0.0")).toBe(true);
    expect(events.some((e) => e.type === "offers-suppressed")).toBe(true);

    // The framework tore itself down: the master no longer runs anything of it.
    expect(frameworkId).toBeDefined();
    await eventually(() => master.core.state().completedFrameworks.some((f) => f.id === frameworkId), 10_000, "the framework removed");
    await eventually(() => master.core.state().agents.every((a) => a.tasks === 0), 10_000, "no task left on the agents");
  }, 90_000);

  it("runs a job on an agent whose resources are all reserved for the framework's role", async () => {
    cluster = await startCluster({ natsUrl: nats.url, agents: [{ hostname: "reserved", resources: "cpus(analytics):1;mem(analytics):256;disk(analytics):64" }] });
    const summary = await runBatchJobs({
      transport: await cluster.connect("batch-reserved"),
      cluster: cluster.cluster,
      jobs: parseJobFile({ jobs: [{ id: "r", tasks: 2, resources: "cpus:0.5;mem:64", command: "true", timeoutSeconds: 10 }] }),
      framework: { name: "batch-reserved", roles: ["analytics"] },
    });
    expect(summary.jobs[0]).toMatchObject({ state: "completed", finished: 2, launches: 2 });
  }, 30_000);
});
