/**
 * Failover of real processes in the middle of a deployment, on a real nats-server with agents
 * running real tasks:
 * - the leading `corral marathon --ha` is SIGKILLed during a rolling restart; the standby takes
 *   over, reloads the deployment, reconciles with the master and finishes it;
 * - the leading `corral master --ha` of three is SIGKILLed while Marathon runs 200 tasks and
 *   deploys more; a standby leads, agents and Marathon follow, the deployment finishes.
 * Ground truth for "launched or killed twice" is the bus itself: every runTask and killTask a
 * master sends to an agent is recorded (test/harness/processes.ts).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { createAgent, type Agent } from "../../agent/agent.ts";
import { connectNats, type NatsTransport } from "../../sdk/nats-transport.ts";
import { LEADER_HEADER, VIA_HEADER } from "../../frameworks/marathon/http.ts";
import { startCluster, type TestCluster } from "../harness/cluster.ts";
import { eventually } from "../harness/events.ts";
import { freePort, useNats } from "../harness/nats.ts";
import { spawnCorral, tapAgentCommands, type CorralProcess } from "../harness/processes.ts";

const nats = useNats();
const QUIET = pino({ level: "error" });
let clusterSeq = 0;
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
});

async function bus(name: string): Promise<NatsTransport> {
  const transport = await connectNats({ servers: nats.url, name });
  cleanups.push(() => transport.close());
  return transport;
}

interface MarathonProcess extends CorralProcess {
  url: string;
}

/** A `corral marathon --ha` process with test timings (a 1.5 s lease, 100 ms ticks). */
async function spawnMarathon(cluster: string, extra: string[] = []): Promise<MarathonProcess> {
  const port = await freePort();
  const proc = spawnCorral([
    ...["marathon", "--ha", "--nats", nats.url, "--cluster", cluster, "--http-port", String(port), "--lease", "1500ms"],
    ...["--tick-interval", "100ms", "--failover-timeout", "300s", "--log-level", "info", ...extra],
  ]);
  cleanups.push(() => proc.kill());
  return { ...proc, url: `http://127.0.0.1:${port}` };
}

/** A `corral master --ha` process with fast allocation and pings; the lease keeps its defaults. */
function spawnMaster(cluster: string, port: number): CorralProcess & { url: string } {
  const proc = spawnCorral([
    ...["master", "--ha", "--nats", nats.url, "--cluster", cluster, "--port", String(port), "--log-level", "info"],
    ...["--agent-ping-interval", "200ms", "--max-missed-pings", "25", "--allocation-interval", "100ms"],
  ]);
  cleanups.push(() => proc.kill());
  return { ...proc, url: `http://127.0.0.1:${port}` };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

/** A request to Marathon's API; network errors and 5xx (a standby between leaders) come back as undefined. */
async function api(base: string, method: string, path: string, body?: unknown): Promise<{ status: number; headers: Headers; body: Json } | undefined> {
  try {
    const response = await fetch(`${base}${path}`, {
      method,
      ...(body !== undefined ? { body: JSON.stringify(body), headers: { "content-type": "application/json" } } : {}),
      signal: AbortSignal.timeout(20_000),
    });
    if (response.status >= 500) return undefined;
    const text = await response.text();
    return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : undefined };
  } catch {
    return undefined;
  }
}

async function elected(url: string): Promise<boolean> {
  return (await api(url, "GET", "/v2/info"))?.body?.elected === true;
}

async function appTasks(url: string, appId: string): Promise<Json[]> {
  return (await api(url, "GET", `/v2/apps${appId}/tasks`))?.body?.tasks ?? [];
}

async function startAgents(cluster: string, count: number, resources: (i: number) => string, hostname: (i: number) => string): Promise<Agent[]> {
  const agents: Agent[] = [];
  for (let i = 0; i < count; i++) {
    const workDir = await mkdtemp(join(tmpdir(), "corral-ha-marathon-agent-"));
    const agent = createAgent({ cluster, transport: await bus(`agent${i}`), workDir, resources: resources(i), hostname: hostname(i), log: QUIET });
    cleanups.push(async () => {
      await agent.stop();
      await rm(workDir, { recursive: true, force: true });
    });
    await agent.start();
    agents.push(agent);
  }
  return agents;
}

function runningOnAgents(agents: Agent[], prefix: string): string[] {
  return agents.flatMap((a) => a.state().tasks.filter((t) => t.state === "TASK_RUNNING" && t.taskId.startsWith(prefix)).map((t) => t.taskId));
}

describe("several Marathons as processes", () => {
  it("finishes a rolling restart after SIGKILL of the leading Marathon: nothing launched twice, no old task killed early, health checks go on", async () => {
    let cluster: TestCluster | undefined = await startCluster({
      natsUrl: nats.url,
      agents: [
        { hostname: "127.0.0.1", resources: "cpus:2;mem:2048;disk:1024;ports:[31000-31099]" },
        { hostname: "127.0.0.2", resources: "cpus:2;mem:2048;disk:1024;ports:[31100-31199]" },
      ],
    });
    cleanups.push(async () => {
      await cluster?.stop();
      cluster = undefined;
    });
    const tap = tapAgentCommands(await bus("tap"), cluster.cluster);
    cleanups.push(async () => tap.stop());

    const first = await spawnMarathon(cluster.cluster);
    await eventually(() => elected(first.url), 60_000, "the first Marathon to lead");
    const second = await spawnMarathon(cluster.cluster);
    await eventually(async () => (await api(second.url, "GET", "/v2/leader"))?.body?.leader === first.url.replace("http://", ""), 60_000, "the standby to know the leader");

    // A bystander app, and a web app whose instances answer their HTTP health check 2 s after start.
    const bystander = await api(first.url, "POST", "/v2/apps", { id: "steady", instances: 2, cmd: "sleep 1000", cpus: 0.1, mem: 32 });
    expect(bystander?.status).toBe(201);
    const server = `sleep 2 && exec node -e "require('http').createServer((q,s)=>s.end('ok')).listen(process.env.PORT0)"`;
    const web = {
      id: "web", cmd: server, instances: 3, cpus: 0.1, mem: 64,
      healthChecks: [{ protocol: "HTTP", path: "/", portIndex: 0, gracePeriodSeconds: 60, intervalSeconds: 1, timeoutSeconds: 2, maxConsecutiveFailures: 3 }],
      // One new instance at a time; an old one goes only once a new one is healthy.
      upgradeStrategy: { minimumHealthCapacity: 1, maximumOverCapacity: 0.34 },
    };
    expect((await api(first.url, "POST", "/v2/apps", web))?.status).toBe(201);
    await eventually(async () => {
      const app = (await api(first.url, "GET", "/v2/apps/web"))?.body?.app;
      const deployments = (await api(first.url, "GET", "/v2/deployments"))?.body;
      return app?.tasksHealthy === 3 && deployments?.length === 0;
    }, 90_000, "3 healthy web instances and no deployment");
    const steadyBefore = (await appTasks(first.url, "/steady")).map((t) => t.id as string).sort();
    const oldWeb = new Set((await appTasks(first.url, "/web")).map((t) => t.id as string));
    expect(steadyBefore).toHaveLength(2);
    expect(oldWeb.size).toBe(3);

    // Never fewer than 3 web tasks running on the agents from here on (minimumHealthCapacity 1).
    let fewestRunning = Infinity;
    const sampler = setInterval(() => (fewestRunning = Math.min(fewestRunning, runningOnAgents(cluster!.agents, "web.").length)), 50);
    cleanups.push(async () => clearInterval(sampler));

    // The restart goes through the standby, which forwards it to the leader.
    const restart = await api(second.url, "POST", "/v2/apps/web/restart");
    expect(restart?.status).toBe(200);
    expect(restart?.headers.get(LEADER_HEADER)).toBe(first.url);
    expect(restart?.headers.get(VIA_HEADER)).toBe(`1.1 ${second.url.replace("http://", "")}`);
    const deploymentId = restart!.body.deploymentId as string;

    // Mid-deployment: one new instance became healthy and the first old one is being killed.
    const firstOldKill = await tap.commands.waitFor((c) => c.kind === "killTask" && oldWeb.has(c.taskId), 60_000, "the first old web task killed");
    const killedAt = Date.now();
    await first.kill();
    expect(runningOnAgents(cluster.agents, "web.").length).toBeGreaterThanOrEqual(3);

    await eventually(() => elected(second.url), 30_000, "the standby to take over");
    const takeoverMs = Date.now() - killedAt;
    // It reloaded the deployment and carries it on.
    const deployments = (await api(second.url, "GET", "/v2/deployments"))?.body as Json[];
    expect(deployments.map((d) => d.id)).toEqual([deploymentId]);
    await eventually(async () => (await api(second.url, "GET", "/v2/deployments"))?.body?.length === 0, 90_000, "the resumed deployment to finish");
    const finishedMs = Date.now() - killedAt;

    const webAfter = await eventually(async () => {
      const app = (await api(second.url, "GET", "/v2/apps/web"))?.body?.app;
      return app?.tasksHealthy === 3 && app.tasksRunning === 3 ? (app.tasks as Json[]) : undefined;
    }, 30_000, "3 healthy web instances on the new leader");
    console.log(
      `Marathon failover (SIGKILL of the leading Marathon mid rolling restart): standby elected and serving after ${takeoverMs} ms, ` +
        `deployment finished ${finishedMs} ms after the kill; ${tap.commands.items.filter((c) => c.kind === "runTask").length} launches, ${tap.commands.items.filter((c) => c.kind === "killTask").length} kills on the bus`,
    );
    clearInterval(sampler);

    // Every web instance is of the new deployment, reported healthy by the new leader's checks.
    const newWeb = webAfter.map((t) => t.id as string);
    for (const id of newWeb) expect(oldWeb.has(id)).toBe(false);
    for (const t of webAfter) expect(t.healthCheckResults).toEqual([expect.objectContaining({ alive: true })]);
    // No task id was launched twice, by either Marathon.
    const launchedTwice = [...tap.launchesPerTask()].filter(([, n]) => n > 1);
    expect(launchedTwice).toEqual([]);
    // Only old web tasks were killed (each one is replaced), the bystander and the new ones never.
    const killed = new Set(tap.commands.filter((c) => c.kind === "killTask").map((c) => c.taskId));
    expect([...killed].filter((id) => !oldWeb.has(id))).toEqual([]);
    expect([...killed].sort()).toEqual([...oldWeb].sort());
    expect(firstOldKill.atMs).toBeLessThanOrEqual(killedAt);
    expect(fewestRunning).toBeGreaterThanOrEqual(3);
    expect((await appTasks(second.url, "/steady")).map((t) => t.id as string).sort()).toEqual(steadyBefore);
    expect(runningOnAgents(cluster.agents, "steady.").sort()).toEqual(steadyBefore);

    await api(second.url, "DELETE", "/v2/apps/web?force=true");
    await api(second.url, "DELETE", "/v2/apps/steady?force=true");
    await eventually(() => runningOnAgents(cluster!.agents, "").length === 0, 30_000, "the apps' tasks gone");
  }, 240_000);
});
