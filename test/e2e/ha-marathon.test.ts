/**
 * Failover of real processes in the middle of a deployment, on a real nats-server with agents
 * running real tasks:
 * - the leading `corral marathon --ha` is SIGKILLed during a rolling restart; the standby takes
 *   over, reloads the deployment, reconciles with the master and finishes it;
 * - the leading `corral master --ha` of three is SIGKILLed while Marathon runs 200 tasks and
 *   deploys more; a standby leads, agents and Marathon follow, the deployment finishes;
 * - `corral up --marathons 2` starts two Marathons that elect a leader.
 * Ground truth for "launched or killed twice" is the bus itself: every runTask and killTask a
 * master sends to an agent is recorded (test/harness/processes.ts).
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { describe, expect, it } from "vitest";
import type { Agent } from "../../agent/agent.ts";
import type { NatsTransport } from "../../sdk/nats-transport.ts";
import { LEADER_HEADER, VIA_HEADER } from "../../frameworks/marathon/http.ts";
import { startCluster, type TestCluster } from "../harness/cluster.ts";
import { EventLog, eventually } from "../harness/events.ts";
import { connectBus, freePort, useNats } from "../harness/nats.ts";
import { useCleanups } from "../harness/cleanups.ts";
import { spawnCorral, tapAgentCommands, type CorralProcess } from "../harness/processes.ts";

const nats = useNats();
let clusterSeq = 0;
const defer = useCleanups();

const bus = (name: string): Promise<NatsTransport> => connectBus(nats, name, defer);

interface MarathonProcess extends CorralProcess {
  url: string;
}

/**
 * A `corral marathon` process with 100 ms ticks; with `ha`, `--ha` with a 3 s lease (short for a
 * quick takeover, long enough that a loaded machine does not make a live leader's lease lapse).
 */
async function spawnMarathon(cluster: string, { ha = true, extra = [] as string[] } = {}): Promise<MarathonProcess> {
  const port = await freePort();
  const proc = spawnCorral([
    ...["marathon", "--nats", nats.url, "--cluster", cluster, "--http-port", String(port), ...(ha ? ["--ha", "--lease", "3s"] : [])],
    ...["--tick-interval", "100ms", "--failover-timeout", "300s", "--log-level", "info", ...extra],
  ]);
  defer(() => proc.kill());
  return { ...proc, url: `http://127.0.0.1:${port}` };
}

/**
 * A `corral master --ha` process with fast allocation; the lease keeps its defaults. An agent busy
 * starting dozens of tasks on a loaded 2-core machine can be deaf for seconds: it is declared
 * unreachable (and its tasks replaced) only after 30 s, not to mistake load for failure.
 */
function spawnMaster(cluster: string, port: number): CorralProcess & { url: string } {
  const proc = spawnCorral([
    ...["master", "--ha", "--nats", nats.url, "--cluster", cluster, "--port", String(port), "--log-level", "info"],
    ...["--agent-ping-interval", "1s", "--max-missed-pings", "30", "--allocation-interval", "100ms"],
  ]);
  defer(() => proc.kill());
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
    defer(async () => {
      await cluster?.stop();
      cluster = undefined;
    });
    const tap = tapAgentCommands(await bus("tap"), cluster.cluster);
    defer(async () => tap.stop());

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
    defer(async () => clearInterval(sampler));

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

interface MasterHealth {
  masterId: string;
  leader: boolean;
  epoch: number;
  leaderInfo: { id: string; url: string } | null;
}

async function masterHealth(url: string): Promise<MasterHealth | undefined> {
  try {
    const response = await fetch(`${url}/health`, { signal: AbortSignal.timeout(10_000) });
    return response.ok ? ((await response.json()) as MasterHealth) : undefined;
  } catch {
    return undefined;
  }
}

interface AgentView {
  masterEpoch: number;
  registered: boolean;
  tasks: Array<{ taskId: string; state: string; containerId: string }>;
}

/**
 * A `corral agent` process with posix isolation (plain process groups: hundreds of tasks start in
 * seconds here). Its own process, as in production: the test process stays free to watch.
 */
async function spawnAgent(cluster: string, index: number): Promise<{ url: string; view(): Promise<AgentView> }> {
  const workDir = await mkdtemp(join(tmpdir(), "corral-ha-marathon-agent-"));
  const port = await freePort();
  const proc = spawnCorral([
    ...["agent", "--nats", nats.url, "--cluster", cluster, "--work-dir", workDir, "--hostname", `host${index + 1}`, "--port", String(port)],
    ...["--resources", `cpus:4;mem:4096;disk:1024;ports:[${31000 + index * 100}-${31099 + index * 100}]`, "--isolation", "posix", "--log-level", "warn"],
  ]);
  // A clean stop kills the agent's tasks.
  defer(async () => {
    await proc.stop();
    await rm(workDir, { recursive: true, force: true });
  });
  const url = `http://127.0.0.1:${port}`;
  const view = async () => (await (await fetch(`${url}/state`, { signal: AbortSignal.timeout(10_000) })).json()) as AgentView;
  await eventually(async () => (await view().catch(() => undefined))?.registered, 60_000, `agent ${index + 1} registered`);
  return { url, view };
}

describe("several masters as processes, under Marathon", () => {
  it("survives SIGKILL of the leading master while 200 tasks run and Marathon deploys: nothing killed or launched twice, the deployment completes", async () => {
    const cluster = `hm${process.pid}x${++clusterSeq}`;
    const tap = tapAgentCommands(await bus("tap"), cluster);
    defer(async () => tap.stop());
    const first = spawnMaster(cluster, await freePort());
    const leaderBefore = await eventually(async () => {
      const h = await masterHealth(first.url);
      return h?.leader ? h : undefined;
    }, 60_000, "the first master to lead");
    const standbys = [spawnMaster(cluster, await freePort()), spawnMaster(cluster, await freePort())];
    for (const standby of standbys) await eventually(async () => (await masterHealth(standby.url))?.leaderInfo?.id === leaderBefore.masterId, 60_000, "a standby to see the leader");

    const agents = await Promise.all([0, 1, 2, 3].map((i) => spawnAgent(cluster, i)));
    const tasksOnAgents = async () => (await Promise.all(agents.map((a) => a.view()))).flatMap((v) => v.tasks);
    const running = async (prefix: string) => (await tasksOnAgents()).filter((t) => t.state === "TASK_RUNNING" && t.taskId.startsWith(prefix));
    const marathon = await spawnMarathon(cluster, { ha: false, extra: ["--max-instances-per-offer", "25"] });
    await eventually(() => elected(marathon.url), 60_000, "Marathon to lead");

    const deployStartedAt = Date.now();
    expect((await api(marathon.url, "POST", "/v2/apps", { id: "many", instances: 200, cmd: "sleep 1000", cpus: 0.01, mem: 16 }))?.status).toBe(201);
    await eventually(async () => {
      const app = (await api(marathon.url, "GET", "/v2/apps/many"))?.body?.app;
      return app?.tasksRunning === 200 && (await api(marathon.url, "GET", "/v2/deployments"))?.body?.length === 0;
    }, 120_000, "200 running instances of /many");
    console.log(`200 instances running ${Date.now() - deployStartedAt} ms after the POST`);
    const containersBefore = (await running("many.")).map((t) => `${t.taskId}@${t.containerId}`).sort();
    expect(containersBefore).toHaveLength(200);
    expect(tap.commands.filter((c) => c.kind === "killTask")).toEqual([]);

    // The second deployment: 20 instances that pass their (agent-run) health check 3 s after start.
    const more = {
      id: "more", instances: 20, cmd: "sleep 3 && touch ready && exec sleep 1000", cpus: 0.01, mem: 16,
      healthChecks: [{ protocol: "COMMAND", command: { value: "test -f ready" }, gracePeriodSeconds: 60, intervalSeconds: 1, timeoutSeconds: 5, maxConsecutiveFailures: 3 }],
    };
    const deployed = await api(marathon.url, "POST", "/v2/apps", more);
    expect(deployed?.status).toBe(201);
    const deploymentId = deployed!.body.deployments[0].id as string;
    await tap.commands.waitFor((c) => c.kind === "runTask" && c.taskId.startsWith("more."), 30_000, "the first /more launch");

    const killedAt = Date.now();
    await first.kill();
    // Marathon (alive throughout) is mid-deployment: its instances cannot be healthy yet.
    expect(((await api(marathon.url, "GET", "/v2/deployments"))?.body as Json[]).map((d) => d.id)).toEqual([deploymentId]);
    const [newLeader, leaderAfter] = await eventually(async () => {
      for (const standby of standbys) {
        const h = await masterHealth(standby.url);
        if (h?.leader) return [standby, h] as const;
      }
      return undefined;
    }, 30_000, "a standby master to take over");
    const takeoverMs = Date.now() - killedAt;
    expect(leaderAfter.epoch).toBeGreaterThan(leaderBefore.epoch);
    for (const agent of agents) await eventually(async () => {
      const v = await agent.view();
      return v.masterEpoch === leaderAfter.epoch && v.registered;
    }, 30_000, "the agents on the new leader");
    const agentsBackMs = Date.now() - killedAt;

    await eventually(async () => (await api(marathon.url, "GET", "/v2/deployments"))?.body?.length === 0, 90_000, "Marathon's deployment to complete");
    const deployedMs = Date.now() - killedAt;
    expect((await api(marathon.url, "GET", "/v2/apps/more"))?.body?.app).toMatchObject({ tasksRunning: 20, tasksHealthy: 20 });
    expect((await api(marathon.url, "GET", "/v2/apps/many"))?.body?.app).toMatchObject({ tasksRunning: 200 });
    console.log(
      `Master failover under Marathon (SIGKILL of the leading master, 200 tasks running, 20 deploying): new leader after ${takeoverMs} ms, ` +
        `all 4 agents re-registered after ${agentsBackMs} ms, Marathon's deployment complete after ${deployedMs} ms`,
    );

    // Marathon re-subscribed to the new leader as the same framework, with all 220 tasks.
    const state = (await (await fetch(`${newLeader.url}/state`)).json()) as { frameworks: Array<{ name: string; connected: boolean; tasks: Array<{ id: string; state: string }> }> };
    expect(state.frameworks.map((f) => f.name)).toEqual(["marathon"]);
    expect(state.frameworks[0]!.connected).toBe(true);
    expect(state.frameworks[0]!.tasks.filter((t) => t.state === "TASK_RUNNING")).toHaveLength(220);
    // Nothing was killed; the 200 first containers are the same; no task id was launched twice, no task more than needed.
    expect(tap.commands.filter((c) => c.kind === "killTask")).toEqual([]);
    expect((await running("many.")).map((t) => `${t.taskId}@${t.containerId}`).sort()).toEqual(containersBefore);
    expect([...tap.launchesPerTask()].filter(([, n]) => n > 1)).toEqual([]);
    expect(tap.launchesPerTask().size).toBe(220);
    expect(await running("")).toHaveLength(220);

    await api(marathon.url, "DELETE", "/v2/apps/many?force=true");
    await api(marathon.url, "DELETE", "/v2/apps/more?force=true");
    await eventually(async () => (await running("")).length === 0, 60_000, "the apps' tasks gone");
  }, 240_000);
});

describe("corral up --marathons", () => {
  it("starts several Marathons that elect one leader, prints which leads, and stops them on Ctrl-C", async () => {
    const home = await mkdtemp(join(tmpdir(), "corral-home-"));
    defer(() => rm(home, { recursive: true, force: true }));
    const up = spawn(join(process.cwd(), "bin/corral"), ["up", "--agents", "1", "--marathons", "2", "--master-port", "0", "--marathon-port", "0", "--nats-port", String(await freePort())], {
      env: { ...process.env, CORRAL_HOME: home },
      stdio: ["ignore", "pipe", "inherit"],
    });
    defer(async () => {
      if (up.exitCode === null && up.signalCode === null) up.kill("SIGKILL");
    });
    const out = new EventLog<string>();
    createInterface({ input: up.stdout! }).on("line", (line) => out.push(line));
    await out.waitFor((l) => l.includes("Press Ctrl-C"), 90_000, "corral up to be ready");
    const listed = out.items.filter((l) => /^ {2}marathon \d/.test(l));
    expect(listed).toHaveLength(2);
    const leaderLine = listed.filter((l) => l.includes("(leader"));
    const standbyLine = listed.filter((l) => l.includes("(standby"));
    expect([leaderLine.length, standbyLine.length]).toEqual([1, 1]);
    const urlOf = (line: string) => /(http:\/\/\S+)/.exec(line)![1]!;
    const [leaderUrl, standbyUrl] = [urlOf(leaderLine[0]!), urlOf(standbyLine[0]!)];
    expect(await elected(leaderUrl)).toBe(true);
    // The standby answers through the leader, with both of Marathon's headers.
    const info = await fetch(`${standbyUrl}/v2/info`);
    expect(info.status).toBe(200);
    expect(((await info.json()) as { elected: boolean }).elected).toBe(true);
    expect(info.headers.get(LEADER_HEADER)).toBe(leaderUrl);
    expect(info.headers.get(VIA_HEADER)).toBe(`1.1 ${standbyUrl.replace("http://", "")}`);

    const exited = new Promise<number | null>((resolve) => up.once("exit", (code) => resolve(code)));
    up.kill("SIGINT");
    expect(await exited).toBe(0);
  }, 150_000);
});
