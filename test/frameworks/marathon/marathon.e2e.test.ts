/**
 * Marathon end to end (issue 5): a real nats-server, a real master, real agents running real
 * processes, and Marathon's REST API. Synchronisation is by awaiting observable state.
 */
import { readdir, readFile } from "node:fs/promises";
import { afterEach, describe, expect, it, vi } from "vitest";
import { useNats } from "../../harness/nats.ts";
import { eventually } from "../../harness/events.ts";
import { startCluster, type TestCluster } from "../../harness/cluster.ts";
import type { MarathonEvent } from "../../../frameworks/marathon/core.ts";
import { JetStreamMarathonStore, marathonBucket } from "../../../frameworks/marathon/store.ts";
import { removeAllApps, startMarathon, waitForRunning, type TestMarathon } from "./marathon-harness.ts";

// Real processes on a busy CI machine: allow more than the default 30 s per test.
vi.setConfig({ testTimeout: 90_000, hookTimeout: 60_000 });

const nats = useNats();
let cluster: TestCluster | undefined;
const marathons: TestMarathon[] = [];
afterEach(async () => {
  // Remove the apps so that their processes end with the test.
  const last = marathons.at(-1);
  if (last) await removeAllApps(last);
  for (const m of marathons.splice(0)) await m.stop();
  await cluster?.stop();
  cluster = undefined;
});

async function marathonOn(c: TestCluster, options: Parameters<typeof startMarathon>[1] = {}): Promise<TestMarathon> {
  const m = await startMarathon(c, options);
  marathons.push(m);
  return m;
}

const SLEEPY = { cmd: "sleep 1000", cpus: 0.1, mem: 32 };

describe("marathon on a real cluster", () => {
  it("deploys 3 instances that run, and lists them", async () => {
    cluster = await startCluster({ natsUrl: nats.url, agents: [{}, {}] });
    // With a principal, Marathon calls on its principal's subject and is registered under it.
    const m = await marathonOn(cluster, { principal: "marathon" });
    expect(cluster.master.core.state().frameworks).toMatchObject([{ id: m.marathon.frameworkId(), principal: "marathon" }]);
    const created = await m.api("POST", "/v2/apps", { id: "sleepy", instances: 3, ...SLEEPY, labels: { team: "a" } });
    expect(created.status).toBe(201);
    expect(created.headers.get("location")).toMatch(/\/v2\/apps\/sleepy$/);
    const deploymentId = created.headers.get("marathon-deployment-id");
    expect(created.body.deployments).toEqual([{ id: deploymentId }]);
    expect([created.body.tasksStaged, created.body.tasksRunning, created.body.tasksHealthy, created.body.tasksUnhealthy]).toEqual([0, 0, 0, 0]);
    const tasks = await waitForRunning(m, "/sleepy", 3);
    expect(tasks.every((t) => String(t.id).startsWith("sleepy."))).toBe(true);
    await m.events.waitFor((e) => e.eventType === "deployment_success" && e.id === deploymentId, 5_000, "deployment_success");

    const show = await m.api("GET", "/v2/apps/sleepy");
    expect(show.body.app.tasksRunning).toBe(3);
    expect(show.body.app.tasks).toHaveLength(3);
    const listed = await m.api("GET", "/v2/apps?embed=apps.tasks&label=team==a");
    expect(listed.body.apps.map((a: { id: string }) => a.id)).toEqual(["/sleepy"]);
    expect(listed.body.apps[0].tasks).toHaveLength(3);
    expect((await m.api("GET", "/v2/apps?label=team==b")).body.apps).toEqual([]);
    expect((await m.api("GET", "/v2/apps?cmd=sleep")).body.apps).toHaveLength(1);
    expect((await m.api("GET", "/v2/tasks?status=running")).body.tasks).toHaveLength(3);
    expect((await m.api("GET", "/v2/info")).body.frameworkId).toBe(m.marathon.frameworkId());
    expect((await m.api("GET", "/ping")).body).toBe("pong");
    expect((await m.api("GET", "/metrics")).body).toContain("marathon_instances{state=\"running\"} 3");
  });

  it("replaces a killed task, scales up and down, and deletes the app", async () => {
    cluster = await startCluster({ natsUrl: nats.url, agents: [{}, {}] });
    const m = await marathonOn(cluster);
    await m.api("POST", "/v2/apps", { id: "sleepy", instances: 2, ...SLEEPY });
    const [victim] = await waitForRunning(m, "/sleepy", 2);
    const killed = await m.api("DELETE", `/v2/apps/sleepy/tasks/${String(victim!.id)}`);
    expect(killed.status).toBe(200);
    expect(killed.body.task.id).toBe(victim!.id);
    const replaced = await eventually(async () => {
      const tasks = await m.tasks("/sleepy");
      return tasks.length === 2 && tasks.every((t) => t.id !== victim!.id) ? tasks : undefined;
    }, 20_000, "the killed task replaced");
    expect(replaced).toHaveLength(2);

    const up = await m.api("PUT", "/v2/apps/sleepy", { instances: 5 });
    expect(up.status).toBe(200);
    expect(up.headers.get("marathon-deployment-id")).toBe(up.body.deploymentId);
    await waitForRunning(m, "/sleepy", 5);
    const down = await m.api("PATCH", "/v2/apps/sleepy", { instances: 1 });
    expect(down.status).toBe(200);
    await waitForRunning(m, "/sleepy", 1);
    const versions = await m.api("GET", "/v2/apps/sleepy/versions");
    expect(versions.body.versions).toHaveLength(3);
    // Scaling does not change the config: every task still has the first config.
    expect(new Set(m.marathon.core.instancesOf("/sleepy").map((i) => i.configVersion)).size).toBe(1);

    await m.api("PUT", "/v2/apps/sleepy", { instances: 3 });
    const three = await waitForRunning(m, "/sleepy", 3);
    const scaledDown = await m.api("POST", "/v2/tasks/delete?scale=true", { ids: [three[0]!.id] });
    expect(scaledDown.status).toBe(200);
    expect(scaledDown.body.deploymentId).toBeDefined();
    const two = await waitForRunning(m, "/sleepy", 2);
    expect(two.map((t) => t.id)).not.toContain(three[0]!.id);
    expect((await m.api("GET", "/v2/apps/sleepy")).body.app.instances).toBe(2);

    const removed = await m.api("DELETE", "/v2/apps/sleepy");
    expect(removed.status).toBe(200);
    await m.events.waitFor((e) => e.eventType === "app_terminated_event", 15_000, "app_terminated_event");
    expect((await m.api("GET", "/v2/apps/sleepy")).status).toBe(404);
    expect((await m.api("GET", "/v2/tasks")).body.tasks).toEqual([]);
  });

  it("rolls a cmd change out without dropping below minimumHealthCapacity nor exceeding maximumOverCapacity", async () => {
    cluster = await startCluster({ natsUrl: nats.url, agents: [{}, {}] });
    const m = await marathonOn(cluster);
    const n = 4;
    const strategy = { minimumHealthCapacity: 0.5, maximumOverCapacity: 0.25 };
    await m.api("POST", "/v2/apps", { id: "roll", instances: n, ...SLEEPY, upgradeStrategy: strategy });
    const before = await waitForRunning(m, "/roll", n);
    const minHealthy = Math.ceil(n * strategy.minimumHealthCapacity);
    const maxCapacity = Math.floor(n * (1 + strategy.maximumOverCapacity));
    // Sample Marathon's own view at every event of the rollout.
    const samples: Array<{ serving: number; alive: number }> = [];
    const off = m.marathon.onEvent(() => {
      const list = m.marathon.core.instancesOf("/roll");
      samples.push({ serving: list.filter((i) => i.state === "running" && i.goal === "running").length, alive: list.length });
    });
    const changed = await m.api("PUT", "/v2/apps/roll", { cmd: "sleep 1001" });
    expect(changed.status).toBe(200);
    await m.events.waitFor((e) => e.eventType === "deployment_success" && e.id === changed.body.deploymentId, 30_000, "the rollout to finish");
    off();
    const after = await m.tasks("/roll");
    expect(after).toHaveLength(n);
    expect(after.some((t) => before.some((b) => b.id === t.id))).toBe(false);
    expect(samples.length).toBeGreaterThan(10);
    expect(Math.min(...samples.map((s) => s.serving))).toBeGreaterThanOrEqual(minHealthy);
    expect(Math.max(...samples.map((s) => s.alive))).toBeLessThanOrEqual(maxCapacity);
    expect(new Set(after.map((t) => t.version)).size).toBe(1);
    expect(after[0]!.version).toBe(changed.body.version);
  });

  it("runs 3 of 4 UNIQUE-hostname instances on 3 agents, shows why the 4th waits, and answers 409 while locked", async () => {
    cluster = await startCluster({ natsUrl: nats.url, agents: [{ hostname: "a1" }, { hostname: "a2" }, { hostname: "a3" }] });
    const m = await marathonOn(cluster);
    const created = await m.api("POST", "/v2/apps", { id: "uniq", instances: 4, ...SLEEPY, constraints: [["hostname", "UNIQUE"]] });
    await eventually(async () => (await m.tasks("/uniq")).length === 3, 20_000, "3 running");
    const entry = await eventually(async () => {
      const queue = (await m.api("GET", "/v2/queue")).body.queue as Array<Record<string, any>>;
      const found = queue.find((q) => q.app.id === "/uniq");
      return found && found.processedOffersSummary.unusedOffersCount > 0 ? found : undefined;
    }, 15_000, "the queue to explain");
    expect(entry.count).toBe(1);
    expect(entry.delay).toEqual({ timeLeftSeconds: 0, overdue: true });
    expect(entry.processedOffersSummary.rejectSummaryLastOffers.map((r: { reason: string }) => r.reason)).toContain("UnfulfilledConstraint");
    expect(entry.lastUnusedOffers[0].detail).toMatch(/UNIQUE|hostname/);
    expect(new Set((await m.tasks("/uniq")).map((t) => t.host))).toEqual(new Set(["a1", "a2", "a3"]));

    const deployments = (await m.api("GET", "/v2/deployments")).body;
    expect(deployments.map((d: { id: string }) => d.id)).toEqual([created.headers.get("marathon-deployment-id")]);
    const locked = await m.api("PUT", "/v2/apps/uniq", { instances: 3 });
    expect(locked.status).toBe(409);
    expect(locked.body.deployments).toEqual([{ id: created.headers.get("marathon-deployment-id") }]);
    const forced = await m.api("PUT", "/v2/apps/uniq?force=true", { instances: 3 });
    expect(forced.status).toBe(200);
    await m.events.waitFor((e) => e.eventType === "deployment_success" && e.id === forced.body.deploymentId, 10_000, "the forced scale to finish");
    expect((await m.api("GET", "/v2/queue")).body.queue).toEqual([]);
  });

  it("backs a crashing command off with growing delays, and starts afresh on a new version", async () => {
    cluster = await startCluster({ natsUrl: nats.url });
    const m = await marathonOn(cluster);
    const created = await m.api("POST", "/v2/apps", { id: "crash", cmd: "exit 1", cpus: 0.1, mem: 32, backoffSeconds: 1, backoffFactor: 2, maxLaunchDelaySeconds: 60 });
    expect(created.status).toBe(201);
    const failures = () => m.events.filter((e) => e.eventType === "status_update_event" && e.appId === "/crash" && e.taskStatus === "TASK_FAILED");
    await eventually(() => failures().length >= 4, 25_000, "4 failures");
    const launchedAt = m.events.filter((e) => e.eventType === "instance_changed_event" && e.runSpecId === "/crash" && e.condition === "Created").map((e) => Date.parse(e.timestamp));
    const failedAt = failures().map((e) => Date.parse(e.timestamp));
    // Launch k+1 waits for the delay after failure k: 1 s, then 2 s, then 4 s.
    for (let k = 0; k < 3; k++) {
      expect(launchedAt[k + 1]! - failedAt[k]!).toBeGreaterThanOrEqual(1000 * 2 ** k - 5);
    }
    expect(m.marathon.core.delayOf("/crash", Date.now())?.failures).toBeGreaterThanOrEqual(3);
    const shown = (await m.api("GET", "/v2/apps/crash")).body.app;
    expect(shown.lastTaskFailure).toMatchObject({ appId: "/crash", state: "TASK_FAILED" });
    const queued = (await m.api("GET", "/v2/queue")).body.queue as Array<Record<string, any>>;
    expect(queued.find((q) => q.app.id === "/crash")).toBeDefined();

    const fixed = await m.api("PUT", "/v2/apps/crash?force=true", { cmd: "sleep 1000" });
    expect(fixed.status).toBe(200);
    expect(m.marathon.core.delayOf("/crash", Date.now())).toBeUndefined();
    await waitForRunning(m, "/crash", 1);
  });

  it("DELETE /v2/queue/{id}/delay answers 204 and lifts the delay", async () => {
    cluster = await startCluster({ natsUrl: nats.url });
    const m = await marathonOn(cluster);
    expect((await m.api("POST", "/v2/apps", { id: "crash", cmd: "exit 1", cpus: 0.1, mem: 32, backoffSeconds: 30 })).status).toBe(201);
    await eventually(() => m.marathon.core.delayOf("/crash", Date.now()) !== undefined, 15_000, "a delay");
    const entry = ((await m.api("GET", "/v2/queue")).body.queue as Array<Record<string, any>>).find((q) => q.app.id === "/crash")!;
    expect(entry.delay.overdue).toBe(false);
    expect(entry.delay.timeLeftSeconds).toBeGreaterThan(20);
    const reset = await m.api("DELETE", "/v2/queue/crash/delay");
    expect(reset.status).toBe(204);
    expect(m.marathon.core.delayOf("/crash", Date.now())).toBeUndefined();
    expect((await m.api("DELETE", "/v2/queue/nope/delay")).status).toBe(404);
  });

  it("resumes a deployment after a Marathon restart, with the same framework and no duplicate tasks", async () => {
    cluster = await startCluster({ natsUrl: nats.url, agents: [{ hostname: "a1" }, { hostname: "a2" }] });
    const first = await marathonOn(cluster);
    const created = await first.api("POST", "/v2/apps", { id: "resume", instances: 3, ...SLEEPY, constraints: [["hostname", "UNIQUE"]] });
    const deploymentId = created.headers.get("marathon-deployment-id");
    const running = await eventually(async () => {
      const t = await first.tasks("/resume");
      return t.length === 2 ? t : undefined;
    }, 20_000, "2 of 3 running");
    const frameworkId = first.marathon.frameworkId();
    await first.stop();
    marathons.splice(marathons.indexOf(first), 1);

    const second = await marathonOn(cluster);
    expect(second.marathon.frameworkId()).toBe(frameworkId);
    expect((await second.api("GET", "/v2/deployments")).body.map((d: { id: string }) => d.id)).toEqual([deploymentId]);
    // A third agent lets the deployment finish.
    const extra = await cluster.spawnAgent("cpus:1;mem:256;ports:[31000-31099]", "a3");
    try {
      await second.events.waitFor((e) => e.eventType === "deployment_success" && e.id === deploymentId, 30_000, "the resumed deployment to finish");
      const tasks = await second.tasks("/resume");
      expect(tasks).toHaveLength(3);
      for (const t of running) expect(tasks.map((x) => x.id)).toContain(t.id);
      // The master agrees: exactly 3 live tasks of the framework.
      const live = cluster.master.core.state().frameworks.find((f) => f.id === frameworkId);
      expect(live).toBeDefined();
      const agentTasks = cluster.agents.flatMap((a) => a.state().tasks).filter((t) => t.state === "TASK_RUNNING");
      expect(agentTasks.length).toBe(2); // the in-process agents; the third runs as a child process
    } finally {
      await second.api("DELETE", "/v2/apps/resume?force=true");
      await eventually(async () => ((await second.api("GET", "/v2/tasks")).body.tasks as unknown[]).length === 0, 15_000, "tasks gone");
      extra.kill("SIGKILL");
    }
  });

  it("after a restart, kills a running task it has no record of and replaces it", async () => {
    cluster = await startCluster({ natsUrl: nats.url });
    const first = await marathonOn(cluster);
    await first.api("POST", "/v2/apps", { id: "sleepy", instances: 2, ...SLEEPY });
    const before = await waitForRunning(first, "/sleepy", 2);
    await first.stop();
    marathons.splice(marathons.indexOf(first), 1);
    // Lose the record of one instance, as if Marathon had crashed between launch and write.
    const store = await JetStreamMarathonStore.open((await cluster.connect("surgeon")).connection, { bucket: marathonBucket(cluster.cluster) });
    await store.delete("instance", String(before[0]!.id));

    const second = await marathonOn(cluster);
    const agent = cluster.agents[0]!;
    await eventually(() => agent.state().tasks.find((t) => t.taskId === before[0]!.id && t.state === "TASK_KILLED"), 15_000, "the unknown task killed");
    const after = await waitForRunning(second, "/sleepy", 2);
    expect(after.map((t) => t.id)).toContain(before[1]!.id);
    expect(after.map((t) => t.id)).not.toContain(before[0]!.id);
    await eventually(() => agent.state().tasks.filter((t) => t.state === "TASK_RUNNING").length === 2, 10_000, "2 tasks on the agent");
  });

  it("kills and replaces an instance failing its HTTP health check, and reports healthy ones", async () => {
    cluster = await startCluster({ natsUrl: nats.url });
    const m = await marathonOn(cluster, { healthChecks: { host: () => "127.0.0.1" } });
    const server = `exec node -e "require('http').createServer((q,s)=>s.end('ok')).listen(process.env.PORT0)"`;
    await m.api("POST", "/v2/apps", {
      id: "web", cmd: server, instances: 2, cpus: 0.1, mem: 64,
      healthChecks: [{ protocol: "HTTP", path: "/", portIndex: 0, gracePeriodSeconds: 10, intervalSeconds: 1, timeoutSeconds: 1, maxConsecutiveFailures: 3 }],
    });
    await eventually(async () => (await m.api("GET", "/v2/apps/web")).body.app.tasksHealthy === 2, 20_000, "2 healthy");
    expect((await m.api("GET", "/v2/deployments")).body).toEqual([]);

    await m.api("POST", "/v2/apps", {
      id: "sick", cmd: "sleep 1000", instances: 1, cpus: 0.1, mem: 32,
      healthChecks: [{ protocol: "TCP", portIndex: 0, gracePeriodSeconds: 0, intervalSeconds: 1, timeoutSeconds: 1, maxConsecutiveFailures: 2 }],
    });
    const [first] = await eventually(async () => {
      const t = await m.tasks("/sick");
      return t.length === 1 ? t : undefined;
    }, 15_000, "the sick task running");
    const kill = await m.events.waitFor((e) => e.eventType === "unhealthy_instance_kill_event" && e.taskId === first!.id, 15_000, "the unhealthy kill");
    await eventually(async () => {
      const t = await m.tasks("/sick");
      return t.length === 1 && t[0]!.id !== first!.id;
    }, 15_000, "a replacement");
    // As in Marathon, the kill is the app's last task failure.
    const shown = (await m.api("GET", "/v2/apps/sick?embed=apps.lastTaskFailure")).body.app;
    expect(shown.lastTaskFailure).toEqual({
      appId: "/sick",
      taskId: first!.id,
      host: first!.host,
      slaveId: first!.slaveId,
      state: "TASK_KILLED",
      message: "Killed for failing its TCP health check 2 times in a row",
      timestamp: kill.timestamp,
      version: first!.version,
    });
  });
});

describe("groups", () => {
  it("deploys a group in dependency order, shows it, scales it and deletes it", async () => {
    cluster = await startCluster({ natsUrl: nats.url, agents: [{}, {}] });
    const m = await marathonOn(cluster);
    const created = await m.api("POST", "/v2/groups", {
      id: "/shop",
      apps: [{ id: "web", ...SLEEPY, instances: 2, dependencies: ["/shop/db"] }],
      groups: [{ id: "/shop/db", apps: [{ id: "/shop/db/pg", ...SLEEPY, instances: 1 }] }],
    });
    expect(created.status).toBe(201);
    const deploymentId = created.headers.get("marathon-deployment-id");
    const plan = ((await m.api("GET", "/v2/deployments")).body as Array<Record<string, any>>).find((d) => d.id === deploymentId);
    expect(plan?.steps.map((s: { actions: Array<{ app: string }> }) => s.actions.map((a) => a.app))).toEqual([["/shop/db/pg"], ["/shop/web"]]);
    await m.events.waitFor((e) => e.eventType === "deployment_success" && e.id === deploymentId, 20_000, "the group deployed");
    // The database ran before the web app was launched.
    const staged = (appId: string) => m.events.items.findIndex((e) => e.eventType === "instance_changed_event" && e.runSpecId === appId && e.condition === "Created");
    const dbRunning = m.events.items.findIndex((e) => e.eventType === "status_update_event" && e.appId === "/shop/db/pg" && e.taskStatus === "TASK_RUNNING");
    expect(dbRunning).toBeGreaterThanOrEqual(0);
    expect(staged("/shop/web")).toBeGreaterThan(dbRunning);

    const root = (await m.api("GET", "/v2/groups")).body;
    expect(root.groups.map((g: { id: string }) => g.id)).toEqual(["/shop"]);
    const shop = (await m.api("GET", "/v2/groups/shop")).body;
    expect(shop.apps.map((a: { id: string }) => a.id)).toEqual(["/shop/web"]);
    expect(shop.groups[0].apps[0].id).toBe("/shop/db/pg");
    expect((await m.api("POST", "/v2/groups", { id: "/shop" })).status).toBe(409);

    const scaled = await m.api("PUT", "/v2/groups/shop", { scaleBy: 2 });
    expect(scaled.status).toBe(200);
    await m.events.waitFor((e) => e.eventType === "deployment_success" && e.id === scaled.body.deploymentId, 20_000, "the group scaled");
    expect((await m.tasks("/shop/web")).length).toBe(4);
    expect((await m.tasks("/shop/db/pg")).length).toBe(2);

    const removed = await m.api("DELETE", "/v2/groups/shop");
    expect(removed.status).toBe(200);
    await m.events.waitFor((e) => e.eventType === "deployment_success" && e.id === removed.body.deploymentId, 20_000, "the group removed");
    expect((await m.api("GET", "/v2/groups/shop")).status).toBe(404);
    expect((await m.api("GET", "/v2/tasks")).body.tasks).toEqual([]);
  });

  it("rolls a group back to an earlier version after a Marathon restart: its apps and their running tasks are those of then", async () => {
    cluster = await startCluster({ natsUrl: nats.url, agents: [{}, {}] });
    const first = await marathonOn(cluster);
    // Each definition runs a command of its own, so the processes on this host tell them apart.
    const WEB_V1 = "sleep 86401";
    const WEB_V2 = "sleep 86402";
    const DB = "sleep 86403";
    const CACHE = "sleep 86404";
    const v1 = await first.api("POST", "/v2/groups", {
      id: "/rb",
      apps: [
        { id: "web", ...SLEEPY, cmd: WEB_V1, instances: 2 },
        { id: "db", ...SLEEPY, cmd: DB, instances: 1 },
      ],
    });
    expect(v1.status).toBe(201);
    await first.events.waitFor((e) => e.eventType === "deployment_success" && e.id === v1.body.deploymentId, 30_000, "v1 deployed");
    // v2: web's cmd changed, cache added, db removed.
    const v2 = await first.api("PUT", "/v2/groups/rb", { apps: [{ id: "web", ...SLEEPY, cmd: WEB_V2, instances: 2 }, { id: "cache", ...SLEEPY, cmd: CACHE, instances: 1 }] });
    expect(v2.status).toBe(200);
    await first.events.waitFor((e) => e.eventType === "deployment_success" && e.id === v2.body.deploymentId, 30_000, "v2 deployed");
    await eventually(async () => (await processesRunning(WEB_V2)) > 0 && (await processesRunning(WEB_V1)) === 0 && (await processesRunning(DB)) === 0, 15_000, "v2's processes only");

    // The versions survive a restart of Marathon.
    await first.stop();
    marathons.splice(marathons.indexOf(first), 1);
    const second = await marathonOn(cluster);
    const versions = (await second.api("GET", "/v2/groups/rb/versions")).body as string[];
    expect(versions.slice(0, 2)).toEqual([v2.body.version, v1.body.version]);
    const then = (await second.api("GET", `/v2/groups/rb/versions/${v1.body.version}`)).body;
    expect(then.apps.map((a: { id: string; cmd: string }) => `${a.id}: ${a.cmd}`)).toEqual([`/rb/db: ${DB}`, `/rb/web: ${WEB_V1}`]);

    const rolled = await second.api("PUT", "/v2/groups/rb", { version: v1.body.version });
    expect(rolled.status).toBe(200);
    expect(rolled.headers.get("marathon-deployment-id")).toBe(rolled.body.deploymentId);
    await second.events.waitFor((e) => e.eventType === "deployment_success" && e.id === rolled.body.deploymentId, 30_000, "the rollback deployed");

    const group = (await second.api("GET", "/v2/groups/rb")).body;
    expect(group.apps.map((a: { id: string; cmd: string; instances: number }) => `${a.id}: ${a.cmd} x${a.instances}`)).toEqual([`/rb/db: ${DB} x1`, `/rb/web: ${WEB_V1} x2`]);
    expect((await second.api("GET", "/v2/apps/rb/cache")).status).toBe(404);
    for (const [appId, count] of [["/rb/web", 2], ["/rb/db", 1]] as const) {
      const app = (await second.api("GET", `/v2/apps${appId}`)).body.app;
      const tasks = await waitForRunning(second, appId, count);
      expect(tasks.every((t) => t.version === app.version), `${appId}'s tasks run its rolled-back version`).toBe(true);
    }
    expect(((await second.api("GET", "/v2/tasks")).body.tasks as Array<{ appId: string }>).map((t) => t.appId).sort()).toEqual(["/rb/db", "/rb/web", "/rb/web"]);
    await eventually(
      async () => (await processesRunning(WEB_V1)) > 0 && (await processesRunning(DB)) > 0 && (await processesRunning(WEB_V2)) === 0 && (await processesRunning(CACHE)) === 0,
      15_000,
      "v1's processes only",
    );
  });
});

/** How many processes on this host run exactly the command line `command`. */
async function processesRunning(command: string): Promise<number> {
  let count = 0;
  for (const pid of await readdir("/proc").catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (cmdline.replaceAll("\0", " ").trim() === command) count++;
  }
  return count;
}

function eventTypes(events: MarathonEvent[]): string[] {
  return [...new Set(events.map((e) => e.eventType))];
}

describe("event stream", () => {
  it("streams deployment and status events over SSE with an event_type filter", async () => {
    cluster = await startCluster({ natsUrl: nats.url });
    const m = await marathonOn(cluster);
    const controller = new AbortController();
    const response = await fetch(`${m.url}/v2/events?event_type=deployment_success&event_type=status_update_event`, { signal: controller.signal });
    expect(response.headers.get("content-type")).toContain("text/event-stream");
    const reader = response.body!.getReader();
    let text = "";
    await m.api("POST", "/v2/apps", { id: "sleepy", instances: 1, ...SLEEPY });
    while (!text.includes("event: deployment_success")) {
      const chunk = await reader.read();
      if (chunk.done) break;
      text += new TextDecoder().decode(chunk.value);
    }
    controller.abort();
    expect(text).toContain("event: status_update_event");
    expect(text).not.toContain("event: deployment_info");
    expect(eventTypes(m.events.items)).toContain("deployment_info");
  });
});

describe("several Marathons", () => {
  it("elects one leader, proxies the standby's API to it, and fails over when it stops", async () => {
    cluster = await startCluster({ natsUrl: nats.url });
    const ha = { leaderElection: { leaseMs: 600 } };
    const first = await marathonOn(cluster, ha);
    await eventually(() => first.marathon.isLeader(), 10_000, "the first Marathon to lead");
    const second = await marathonOn(cluster, ha);
    expect(second.marathon.isLeader()).toBe(false);
    const leaderHost = first.url.replace("http://", "");
    await eventually(async () => (await second.api("GET", "/v2/leader")).body?.leader === leaderHost, 10_000, "the standby to know the leader");

    // Writes through the standby reach the leader.
    const created = await second.api("POST", "/v2/apps", { id: "ha", instances: 2, ...SLEEPY });
    expect(created.status).toBe(201);
    expect(created.headers.get("marathon-deployment-id")).toBe(created.body.deployments[0].id);
    const before = await waitForRunning(second, "/ha", 2);
    expect(first.marathon.core.app("/ha")).toBeDefined();
    expect(second.marathon.core.app("/ha")).toBeUndefined(); // the standby holds no state

    const frameworkId = first.marathon.frameworkId();
    await first.stop();
    marathons.splice(marathons.indexOf(first), 1);
    await eventually(() => second.marathon.isLeader(), 10_000, "the standby to take over");
    expect(second.marathon.frameworkId()).toBe(frameworkId);
    expect((await second.api("GET", "/v2/leader")).body.leader).toBe(second.url.replace("http://", ""));
    const after = await waitForRunning(second, "/ha", 2);
    expect(after.map((t) => t.id).sort()).toEqual(before.map((t) => t.id).sort());
    expect((await second.api("PUT", "/v2/apps/ha", { instances: 3 })).status).toBe(200);
    await waitForRunning(second, "/ha", 3);
  });
});
