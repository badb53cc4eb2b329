/**
 * Readiness checks, agent-run COMMAND health checks and persisted launch delays, end to end: a
 * real nats-server, master and agents running real processes, and Marathon's REST API.
 * Synchronisation is by awaiting observable state (API answers, events, files).
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { useNats } from "../../harness/nats.ts";
import { eventually } from "../../harness/events.ts";
import { startCluster, type TestCluster } from "../../harness/cluster.ts";
import { removeAllApps, startMarathon, waitForRunning, type TestMarathon } from "./marathon-harness.ts";

vi.setConfig({ testTimeout: 90_000, hookTimeout: 60_000 });

const nats = useNats();
let cluster: TestCluster | undefined;
const marathons: TestMarathon[] = [];
const dirs: string[] = [];
afterEach(async () => {
  const last = marathons.at(-1);
  if (last) await removeAllApps(last);
  for (const m of marathons.splice(0)) await m.stop();
  await cluster?.stop();
  cluster = undefined;
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function marathonOn(c: TestCluster, options: Parameters<typeof startMarathon>[1] = {}): Promise<TestMarathon> {
  const m = await startMarathon(c, options);
  marathons.push(m);
  return m;
}

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "corral-checks-"));
  dirs.push(dir);
  return dir;
}

/** A web server whose /ready answers 503 until the file $READY_FILE exists, then 200. */
const READY_SERVER =
  `exec node -e "const fs=require('fs');require('http').createServer((q,s)=>{` +
  `if(q.url!=='/ready')return s.end('ok');const ok=fs.existsSync(process.env.READY_FILE);` +
  `s.statusCode=ok?200:503;s.setHeader('content-type','text/plain');s.end(ok?'ready':'warming up')}).listen(process.env.PORT0)"`;

describe("readiness checks", () => {
  it("keeps the old instance until the new one is ready, and shows readinessCheckResults meanwhile", async () => {
    cluster = await startCluster({ natsUrl: nats.url });
    const m = await marathonOn(cluster, { healthChecks: { host: () => "127.0.0.1" } });
    const dir = await tempDir();
    await writeFile(join(dir, "v1"), "");
    const spec = (file: string) => ({
      id: "ready",
      cmd: READY_SERVER,
      env: { READY_FILE: join(dir, file) },
      instances: 1,
      cpus: 0.1,
      mem: 64,
      portDefinitions: [{ port: 0, name: "http-api" }],
      upgradeStrategy: { minimumHealthCapacity: 1, maximumOverCapacity: 1 },
      readinessChecks: [{ path: "/ready", portName: "http-api", intervalSeconds: 2, timeoutSeconds: 1, preserveLastResponse: true }],
    });
    const created = await m.api("POST", "/v2/apps", spec("v1"));
    expect(created.status).toBe(201);
    await m.events.waitFor((e) => e.eventType === "deployment_success" && e.id === created.headers.get("marathon-deployment-id"), 30_000, "v1 deployed");
    const [old] = await waitForRunning(m, "/ready", 1);

    const changed = await m.api("PUT", "/v2/apps/ready", spec("v2"));
    expect(changed.status).toBe(200);
    // The new instance runs and answers 503 (before it listens, it does not answer at all): Marathon
    // reports it not ready and keeps the old one.
    const notReady = await eventually(async () => {
      const deployments = (await m.api("GET", "/v2/deployments")).body as Array<Record<string, any>>;
      const results = deployments.find((d) => d.id === changed.body.deploymentId)?.currentActions?.[0]?.readinessCheckResults ?? [];
      return results.length === 1 && results[0].ready === false && results[0].lastResponse?.status === 503 ? results[0] : undefined;
    }, 30_000, "a not-ready result in the deployment");
    expect(notReady.taskId).not.toBe(old!.id);
    expect(notReady).toMatchObject({ name: "readinessCheck", ready: false, lastResponse: { status: 503, body: "warming up" } });
    expect(notReady.lastResponse.contentType).toContain("text/plain");
    const shown = (await m.api("GET", "/v2/apps/ready")).body.app;
    expect(shown.readinessCheckResults).toEqual([notReady]);
    expect(shown.tasksRunning).toBe(2);
    const agentView = () => cluster!.agents[0]!.state().tasks.find((t) => t.taskId === old!.id)?.state;
    expect(agentView()).toBe("TASK_RUNNING");
    expect(m.marathon.core.instance(String(old!.id))?.goal).toBe("running");
    expect(m.events.filter((e) => e.eventType === "instance_changed_event" && e.instanceId === old!.id && e.condition === "Killing")).toEqual([]);

    const readyAt = Date.now();
    await writeFile(join(dir, "v2"), "");
    await m.events.waitFor((e) => e.eventType === "deployment_success" && e.id === changed.body.deploymentId, 30_000, "v2 deployed");
    const killing = m.events.filter((e) => e.eventType === "instance_changed_event" && e.instanceId === old!.id && e.condition === "Killing");
    expect(killing).toHaveLength(1);
    expect(Date.parse(killing[0]!.timestamp)).toBeGreaterThanOrEqual(readyAt);
    const after = await waitForRunning(m, "/ready", 1);
    expect(after[0]!.id).toBe(notReady.taskId);
    expect((await m.api("GET", "/v2/apps/ready")).body.app.readinessCheckResults).toEqual([]);
  });
});

describe("COMMAND health checks", () => {
  it("are run by the agent; Marathon counts the failures it reports and kills and replaces the task", async () => {
    cluster = await startCluster({ natsUrl: nats.url });
    const m = await marathonOn(cluster);
    const created = await m.api("POST", "/v2/apps", {
      id: "cmdcheck",
      cmd: "sleep 1000",
      instances: 1,
      cpus: 0.1,
      mem: 32,
      healthChecks: [{ protocol: "COMMAND", command: { value: "test ! -e \"$MESOS_SANDBOX/sick\"" }, delaySeconds: 0, gracePeriodSeconds: 0, intervalSeconds: 1, timeoutSeconds: 5, maxConsecutiveFailures: 2 }],
    });
    expect(created.status).toBe(201);
    // The deployment waits for the agent's first healthy verdict.
    await m.events.waitFor((e) => e.eventType === "deployment_success" && e.id === created.headers.get("marathon-deployment-id"), 30_000, "deployed healthy");
    const shown = (await m.api("GET", "/v2/apps/cmdcheck")).body.app;
    expect(shown.tasksHealthy).toBe(1);
    const task = shown.tasks[0];
    expect(task.healthCheckResults).toEqual([{ alive: true, taskId: task.id, instanceId: task.id }]);

    const agent = cluster.agents[0]!;
    const sandbox = agent.state().tasks.find((t) => t.taskId === task.id)?.sandbox;
    expect(sandbox).toBeTruthy();
    await writeFile(join(sandbox!, "sick"), "");
    const sick = await m.events.waitFor((e) => e.eventType === "health_status_changed_event" && e.instanceId === task.id && e.alive === false, 20_000, "unhealthy");
    const killed = await m.events.waitFor((e) => e.eventType === "unhealthy_instance_kill_event" && e.taskId === task.id, 20_000, "the unhealthy kill");
    // Killed after two failures, not at the first one.
    expect(Date.parse(killed.timestamp) - Date.parse(sick.timestamp)).toBeGreaterThanOrEqual(900);
    await eventually(() => agent.state().tasks.find((t) => t.taskId === task.id)?.state === "TASK_KILLED", 15_000, "the task killed on the agent");
    const replacement = await eventually(async () => {
      const app = (await m.api("GET", "/v2/apps/cmdcheck")).body.app;
      const fresh = (app.tasks as Array<Record<string, any>>).find((t) => t.id !== task.id);
      return fresh && app.tasksHealthy === 1 && fresh.healthCheckResults?.[0]?.alive === true ? fresh : undefined;
    }, 30_000, "a healthy replacement");
    expect(replacement.state).toBe("TASK_RUNNING");
    expect(m.marathon.core.instance(task.id)).toBeUndefined();
  });
});

describe("launch delays", () => {
  it("survive a Marathon restart: the delay is reloaded and holds the launch back", async () => {
    cluster = await startCluster({ natsUrl: nats.url });
    const first = await marathonOn(cluster);
    expect((await first.api("POST", "/v2/apps", { id: "crash", cmd: "exit 1", cpus: 0.1, mem: 32, backoffSeconds: 60 })).status).toBe(201);
    const delay = await eventually(() => first.marathon.core.delayOf("/crash", Date.now()), 20_000, "a delay");
    await first.stop();
    marathons.splice(marathons.indexOf(first), 1);

    const second = await marathonOn(cluster);
    expect(second.marathon.core.delayOf("/crash", Date.now())).toEqual(delay);
    const entry = ((await second.api("GET", "/v2/queue")).body.queue as Array<Record<string, any>>).find((q) => q.app.id === "/crash");
    expect(entry?.count).toBe(1);
    expect(entry?.delay.overdue).toBe(false);
    expect(entry?.delay.timeLeftSeconds).toBeGreaterThan(30);
    // Nothing else waits: the restarted Marathon suppresses offers and wakes when the delay ends.
    await eventually(() => second.marathon.frameworkId() !== undefined && second.marathon.core.isSuppressed(), 15_000, "offers suppressed");
    expect(second.marathon.core.nextWakeMs(Date.now())).toBe(delay!.sinceMs + delay!.delayMs);
    expect(second.events.filter((e) => e.eventType === "instance_changed_event" && e.runSpecId === "/crash" && e.condition === "Created")).toEqual([]);
    expect((await second.api("DELETE", "/v2/queue/crash/delay")).status).toBe(204);
    await second.events.waitFor((e) => e.eventType === "instance_changed_event" && e.runSpecId === "/crash" && e.condition === "Created", 15_000, "a launch once lifted");
  });
});
