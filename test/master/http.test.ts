import { hostname } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectNats, type NatsTransport } from "../../sdk/nats-transport.ts";
import { SeededRng } from "../../sdk/rng.ts";
import { createMaster, type Master } from "../../master/shell.ts";
import { MIN_ROLE_WEIGHT } from "../../master/http.ts";
import { MemoryRegistryStore } from "../../master/store.ts";
import { Resources } from "../../sdk/resources.ts";
import { resourcesToWire } from "../../sdk/wire/resources.ts";
import type { Offer } from "../../sdk/wire/types.ts";
import { useNats } from "../harness/nats.ts";
import { eventually, FakeAgent, FakeFramework, memoryLog } from "./fakes.ts";

const nats = useNats();
const CLUSTER = "http";

let transport: NatsTransport;
let master: Master;
let agent: FakeAgent;
let framework: FakeFramework;
let firstOffer: Offer;

beforeAll(async () => {
  transport = await connectNats({ servers: nats.url, name: "http-test" });
  master = createMaster({
    cluster: CLUSTER,
    transport,
    store: new MemoryRegistryStore(),
    rng: new SeededRng("http"),
    log: memoryLog("warn").log,
    // No periodic allocation runs during the test: each one we see is one we caused.
    config: { allocationIntervalMs: 600_000, agentPingIntervalMs: 100, maxMissedPings: 600 },
  });
  await master.start();
  agent = await FakeAgent.register(transport, CLUSTER, { hostname: "h1.test", resources: "cpus:4;mem:2048;ports:[31000-31009]" });
  framework = new FakeFramework(transport, CLUSTER);
  expect(await framework.subscribe(FakeFramework.info({ roles: ["web"] }))).toBeUndefined();
  firstOffer = (await framework.next("offers")).event.offers.offers[0]!;
});

afterAll(async () => {
  await master?.stop();
  await transport?.close();
});

async function get(path: string): Promise<{ status: number; body: unknown; type: string | null }> {
  const response = await fetch(`${master.httpUrl()}${path}`);
  const type = response.headers.get("content-type");
  return { status: response.status, type, body: type?.startsWith("application/json") ? await response.json() : await response.text() };
}

async function put(path: string, body: string, contentType = "application/json"): Promise<{ status: number; body: any }> {
  const response = await fetch(`${master.httpUrl()}${path}`, { method: "PUT", headers: { "content-type": contentType }, body });
  return { status: response.status, body: await response.json() };
}

describe("master HTTP API", () => {
  it("serves /health", async () => {
    expect(await get("/health")).toMatchObject({ status: 200, body: { status: "ok", masterId: master.masterId } });
  });

  it("serves /state with the core's view and the shell's facts", async () => {
    const { status, body } = await get("/state");
    expect(status).toBe(200);
    const state = body as Record<string, any>;
    expect(state).toMatchObject({ masterId: master.masterId, cluster: CLUSTER, epoch: 1, leader: true, offers: 1, unreachableAgents: [], completedFrameworks: [] });
    expect(state.startedAtMs).toBeGreaterThan(0);
    expect(state.startedAtMs).toBeLessThanOrEqual(Date.now());
    expect(state.agents).toMatchObject([{ id: agent.agentId, hostname: "h1.test", active: true, attributes: { rack: "r1" }, resources: { cpus: 4, mem: 2048 } }]);
    expect(state.frameworks).toMatchObject([{ id: framework.frameworkId, name: "fake", roles: ["web"], connected: true, active: true }]);
    expect(state.frameworks[0].offers).toHaveLength(1);
    // What the framework holds is only offered: nothing of it is used (as for the agent).
    expect({ used: state.frameworks[0].used, offered: state.frameworks[0].offered }).toEqual({ used: {}, offered: { cpus: 4, mem: 2048 } });
    expect({ used: state.agents[0].used, offered: state.agents[0].offered }).toEqual({ used: {}, offered: { cpus: 4, mem: 2048 } });
    expect(state.roles).toEqual(expect.arrayContaining([expect.objectContaining({ role: "web", weight: 1 })]));
  });

  it("serves Prometheus text at /metrics", async () => {
    const { status, body, type } = await get("/metrics");
    expect(status).toBe(200);
    expect(type).toContain("text/plain");
    const text = body as string;
    for (const family of [
      "corral_master_resources_capacity",
      "corral_master_resources_used",
      "corral_master_resources_offered",
      "corral_master_tasks",
      "corral_master_agents",
      "corral_master_frameworks",
      "corral_master_outstanding_offers",
      "corral_master_offers_total",
      "corral_master_allocation_runs_total",
      "corral_master_allocation_run_seconds",
      "corral_master_allocation_agents_visited_total",
      "corral_master_invalid_calls_total",
      "corral_bus_dropped_messages_total",
    ]) {
      expect(text).toMatch(new RegExp(`^# HELP ${family} .+$`, "m"));
      expect(text).toMatch(new RegExp(`^# TYPE ${family} (counter|gauge|summary)$`, "m"));
    }
    expect(text).toContain('corral_master_resources_capacity{resource="cpus"} 4');
    expect(text).toContain('corral_master_resources_capacity{resource="mem"} 2048');
    expect(text).toContain('corral_master_resources_offered{resource="cpus"} 4');
    expect(text).toContain('corral_master_agents{status="active"} 1');
    expect(text).toMatch(/^corral_master_allocation_agents_visited_total [1-9]\d*$/m);
    expect(text).toContain('corral_master_agents{status="unreachable"} 0');
    expect(text).toContain("corral_master_frameworks 1");
    expect(text).toContain("corral_master_outstanding_offers 1");
    expect(text).toContain('corral_master_offers_total{event="made"} 1');
    expect(text).toMatch(/^corral_master_allocation_run_seconds_sum \d/m);
    expect(text).toMatch(/^corral_master_invalid_calls_total \d+$/m);
    // Prometheus naming: `_total` marks a counter, and only a counter; each family is declared once.
    const types = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map(([, name, type]) => ({ name: name!, type: type! }));
    expect(new Set(types.map((t) => t.name)).size).toBe(types.length);
    for (const { name, type } of types) expect({ name, type, total: name.endsWith("_total") }).toEqual({ name, type, total: type === "counter" });
    // Every sample line is well-formed.
    for (const line of text.split("\n").filter((l) => l && !l.startsWith("#"))) {
      expect(line).toMatch(/^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+-]+$/);
    }
  });

  it("refuses a zero weight with 422 naming the field, and changes nothing", async () => {
    const before = await get("/weights");
    const { status, body } = await put("/weights", JSON.stringify([{ role: "web", weight: 0 }]));
    expect(status).toBe(422);
    expect(body.details).toEqual([{ path: "/0/weight", errors: [`must be >= ${MIN_ROLE_WEIGHT}`] }]);
    expect(body.message).toContain("/0/weight");
    expect(await get("/weights")).toEqual(before);
  });

  it("refuses a weight so small that a share divided by it is no number JSON can carry", async () => {
    const before = await get("/weights");
    // 5e-324 was taken: a role's weighted share became Infinity, /state showed it as null and
    // `corral state` failed on it.
    const { status, body } = await put("/weights", JSON.stringify([{ role: "web", weight: 2 }, { role: "batch", weight: 5e-324 }]));
    expect(status).toBe(422);
    expect(body.details).toEqual([{ path: "/1/weight", errors: [`must be >= ${MIN_ROLE_WEIGHT}`] }]);
    expect(await get("/weights")).toEqual(before);
    expect((await put("/weights", JSON.stringify([{ role: "web", weight: MIN_ROLE_WEIGHT }]))).status).toBe(200);
    const roles = ((await get("/state")).body as { roles: Array<{ role: string; share: unknown }> }).roles;
    for (const { share } of roles) expect(Number.isFinite(share)).toBe(true);
  });

  it("applies a weights PUT all or nothing", async () => {
    const before = await get("/weights");
    const mixed = await put("/weights", JSON.stringify([{ role: "web", weight: 5 }, { role: "bad role", weight: 2 }, { role: "web", weight: 3 }]));
    expect(mixed.status).toBe(422);
    expect(mixed.body.details.map((d: { path: string }) => d.path)).toEqual(["/1/role", "/2/role"]);
    expect(mixed.body.details[1].errors[0]).toContain("duplicate role 'web'");
    expect(await get("/weights")).toEqual(before);
  });

  it("checks shapes strictly: no coercion, no unknown fields, required fields", async () => {
    const { status, body } = await put("/weights", JSON.stringify([{ role: "web", weight: "2", extra: true }, { weight: 1 }]));
    expect(status).toBe(422);
    expect(body.details).toEqual([
      { path: "/0/extra", errors: ["is not allowed"] },
      { path: "/0/weight", errors: ["must be number"] },
      { path: "/1/role", errors: ["is required"] },
    ]);
    expect((await put("/weights", JSON.stringify({ role: "web", weight: 2 }))).body.details).toEqual([{ path: "", errors: ["must be array"] }]);
  });

  it("answers unparseable JSON with 400 and a wrong media type with 415", async () => {
    const bad = await put("/weights", "[{ role: web");
    expect(bad.status).toBe(400);
    expect(bad.body.message).toMatch(/not valid JSON/);
    expect((await put("/weights", "[]", "text/plain")).status).toBe(415);
  });

  it("answers a known path with the wrong method 405 with Allow, and an unknown path 404", async () => {
    const deleted = await fetch(`${master.httpUrl()}/weights`, { method: "DELETE" });
    expect(deleted.status).toBe(405);
    expect(deleted.headers.get("allow")).toBe("GET, HEAD, PUT");
    expect(await deleted.json()).toMatchObject({ message: expect.stringContaining("DELETE"), code: "CORRAL_ERR_METHOD_NOT_ALLOWED" });
    const posted = await fetch(`${master.httpUrl()}/state`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(posted.status).toBe(405);
    expect(posted.headers.get("allow")).toBe("GET, HEAD");
    expect((await fetch(`${master.httpUrl()}/no-such-endpoint`)).status).toBe(404);
    expect((await fetch(`${master.httpUrl()}/no-such-endpoint`, { method: "DELETE" })).status).toBe(404);
  });

  it("refuses a quota whose guarantee exceeds its limit, and changes nothing", async () => {
    const before = await get("/quota");
    const { status, body } = await put("/quota", JSON.stringify([{ role: "web", guarantees: { cpus: 2 }, limits: { cpus: 3 } }, { role: "batch", guarantees: { cpus: 4, mem: 10 }, limits: { cpus: 2 } }]));
    expect(status).toBe(422);
    expect(body.details).toEqual([{ path: "/1/guarantees/cpus", errors: ["must be <= limits.cpus (2), got 4"] }]);
    expect(await get("/quota")).toEqual(before);
    const negative = await put("/quota", JSON.stringify([{ role: "web/api", guarantees: { cpus: -1 } }]));
    expect(negative.status).toBe(422);
    expect(negative.body.details).toEqual([
      { path: "/0/guarantees/cpus", errors: ["must be >= 0"] },
    ]);
    const nested = await put("/quota", JSON.stringify([{ role: "web/api", guarantees: { cpus: 1 } }]));
    expect(nested.body.details).toEqual([{ path: "/0/role", errors: ["quota is set per top-level role; 'web/api' is nested"] }]);
  });

  it("refuses a quota too large to count in thousandths with 422 naming the field, not a 500", async () => {
    const before = await get("/quota");
    const { status, body } = await put("/quota", JSON.stringify([{ role: "web", guarantees: { cpus: 1 } }, { role: "batch", limits: { mem: 1e16 } }]));
    expect(status).toBe(422);
    expect(body.details).toEqual([{ path: "/1/limits/mem", errors: [`must be <= ${Math.floor(Number.MAX_SAFE_INTEGER / 1000)}`] }]);
    expect(await get("/quota")).toEqual(before);
  });

  it("refuses quota on ports, which is no scalar, with 422 naming the field", async () => {
    const before = await get("/quota");
    const { status, body } = await put("/quota", JSON.stringify([{ role: "web", guarantees: { cpus: 1 } }, { role: "batch", guarantees: { mem: 10 }, limits: { ports: 5 } }]));
    expect(status).toBe(422);
    expect(body.details).toEqual([{ path: "/1/limits/ports", errors: ["quota is set on scalar resources only; 'ports' is a ranges resource"] }]);

    expect(await get("/quota")).toEqual(before);
  });

  it("applies valid weights and quotas, shows them, and runs an allocation at once", async () => {
    const runs = master.core.counters.allocationRuns;
    const weights = await put("/weights", JSON.stringify([{ role: "web", weight: 2.5 }, { role: "batch", weight: 1 }]));
    expect(weights).toEqual({ status: 200, body: [{ role: "batch", weight: 1 }, { role: "web", weight: 2.5 }] });
    expect(master.core.counters.allocationRuns).toBe(runs + 1);
    expect((await get("/weights")).body).toEqual([{ role: "batch", weight: 1 }, { role: "web", weight: 2.5 }]);

    const quota = await put("/quota", JSON.stringify([{ role: "web", guarantees: { cpus: 1, mem: 256 }, limits: { cpus: 3 } }, { role: "batch", limits: { mem: 512 } }]));
    expect(quota.status).toBe(200);
    expect(master.core.counters.allocationRuns).toBe(runs + 2);
    const expected = [
      { role: "batch", guarantees: {}, limits: { mem: 512 } },
      { role: "web", guarantees: { cpus: 1, mem: 256 }, limits: { cpus: 3 } },
    ];
    expect(quota.body).toEqual(expected);
    expect((await get("/quota")).body).toEqual(expected);

    const state = (await get("/state")).body as { roles: Array<{ role: string; weight: number; quota?: unknown }> };
    expect(state.roles.find((r) => r.role === "web")).toMatchObject({ weight: 2.5, quota: { guarantees: { cpus: 1, mem: 256 }, limits: { cpus: 3 } } });
    expect(state.roles.find((r) => r.role === "batch")).toMatchObject({ weight: 1, quota: { limits: { mem: 512 } } });
  });
  it("tears a framework down on POST /teardown: its tasks are shut down, it is told, and its id is refused from then on", async () => {
    const launched = await framework.callResponse({
      kind: "accept",
      accept: {
        offerIds: [firstOffer.id],
        operations: [
          {
            kind: "launch",
            launch: {
              taskInfos: [
                {
                  taskId: "doomed",
                  name: "doomed",
                  agentId: agent.agentId,
                  resources: resourcesToWire(Resources.parse("cpus:1;mem:128")),
                  command: { value: "sleep 600", arguments: [], shell: true, environment: {}, user: "" },
                  labels: {},
                },
              ],
            },
          },
        ],
      },
    });
    expect(launched.ok).toBe(true);
    await agent.next("runTask");
    agent.sendStatus(framework.frameworkId, { taskId: "doomed", state: "TASK_RUNNING" });
    await framework.next("update", (e) => e.update.status?.taskId === "doomed");

    const form = (body: string, method = "POST") => fetch(`${master.httpUrl()}/teardown`, { method, headers: { "content-type": "application/x-www-form-urlencoded" }, body });
    const missing = await form("frameworkid=typo");
    expect(missing.status).toBe(400);
    expect(await missing.json()).toMatchObject({ message: expect.stringContaining("frameworkId") });
    const unknown = await form("frameworkId=no-such-framework");
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ message: expect.stringContaining("no-such-framework"), code: "CORRAL_ERR_UNKNOWN_FRAMEWORK" });
    expect((await master.core.state()).frameworks.map((f) => f.id)).toEqual([framework.frameworkId]);

    // As Mesos's operators send it: curl -d frameworkId=<id> -X POST <master>/teardown
    const torn = await form(`frameworkId=${encodeURIComponent(framework.frameworkId)}`);
    expect(torn.status).toBe(200);
    expect((await agent.next("shutdownFramework")).message.shutdownFramework.frameworkId).toBe(framework.frameworkId);
    expect((await framework.next("error")).event.error.message).toMatch(/^CORRAL_ERR_FRAMEWORK_REMOVED/);
    const state = (await get("/state")).body as { frameworks: unknown[]; completedFrameworks: Array<{ id: string }> };
    expect(state.frameworks).toEqual([]);
    expect(state.completedFrameworks.map((f) => f.id)).toContain(framework.frameworkId);
    expect(await framework.callResponse({ kind: "heartbeat", heartbeat: {} })).toMatchObject({ ok: false, errorCode: "CORRAL_ERR_FRAMEWORK_REMOVED" });
    // The id is gone: a second teardown finds nothing, and a JSON body is read the same way.
    const again = await fetch(`${master.httpUrl()}/teardown`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ frameworkId: framework.frameworkId }) });
    expect(again.status).toBe(404);
    expect(await again.json()).toMatchObject({ message: expect.stringContaining("torn down") });
  });
});

describe("a standby master's HTTP API", () => {
  const timings = { leaseMs: 3000, renewIntervalMs: 300, stepDownMarginMs: 300, pollIntervalMs: 50 };
  let leaderBus: NatsTransport;
  let standbyBus: NatsTransport;
  let leader: Master;
  let standby: Master;

  beforeAll(async () => {
    leaderBus = await connectNats({ servers: nats.url, name: "http-leader" });
    standbyBus = await connectNats({ servers: nats.url, name: "http-standby" });
    leader = createMaster({ cluster: "http-ha", transport: leaderBus, rng: new SeededRng("leader"), log: memoryLog("warn").log, election: { timings } });
    await leader.start();
    standby = createMaster({ cluster: "http-ha", transport: standbyBus, rng: new SeededRng("standby"), log: memoryLog("warn").log, election: { timings } });
    await standby.start();
    await eventually("the standby to know the leader", () => standby.leader()?.id === leader.masterId);
    expect(standby.isLeader()).toBe(false);
  });

  afterAll(async () => {
    await standby?.stop();
    await leader?.stop();
    await standbyBus?.close();
    await leaderBus?.close();
  });

  it("redirects /state to the leader, as a Mesos standby does, and answers /health and /metrics itself", async () => {
    const redirected = await fetch(`${standby.httpUrl()}/state?x=1`, { redirect: "manual" });
    expect(redirected.status).toBe(307);
    expect(redirected.headers.get("location")).toBe(`${leader.httpUrl()}/state?x=1`);
    // A client that follows redirects (fetch, curl -L, corral state) reads the leader's state.
    const followed = (await (await fetch(`${standby.httpUrl()}/state`)).json()) as { masterId: string; leader: boolean };
    expect(followed).toMatchObject({ masterId: leader.masterId, leader: true });
    const health = await fetch(`${standby.httpUrl()}/health`, { redirect: "manual" });
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ masterId: standby.masterId, leader: false, leaderInfo: { id: leader.masterId, url: leader.httpUrl() } });
    const metrics = await fetch(`${standby.httpUrl()}/metrics`, { redirect: "manual" });
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toMatch(/^corral_master_elected 0$/m);
  });

  it("answers /redirect on every master with 307 to the leader, as Mesos's /redirect for bookmarks", async () => {
    for (const master of [standby, leader]) {
      const response = await fetch(`${master.httpUrl()}/redirect`, { redirect: "manual" });
      expect(response.status).toBe(307);
      expect(response.headers.get("location")).toBe(leader.httpUrl());
    }
  });

  it("sends clients to its host name, not to the wildcard address it listens on", async () => {
    const bus = await connectNats({ servers: nats.url, name: "http-wildcard" });
    const wildcard = createMaster({ cluster: "http-wildcard", transport: bus, log: memoryLog("warn").log, election: { timings }, httpHost: "0.0.0.0" });
    try {
      await wildcard.start();
      const port = new URL(wildcard.httpUrl()).port;
      // http://0.0.0.0:<port> would send another machine's client to itself.
      const health = (await (await fetch(`http://127.0.0.1:${port}/health`)).json()) as { leaderInfo: { url: string } };
      expect(health.leaderInfo.url).toBe(`http://${hostname()}:${port}`);
    } finally {
      await wildcard.stop();
      await bus.close();
    }
    expect(() => createMaster({ cluster: "http-wildcard", transport: leaderBus, election: { timings, advertisedUrl: "master-1:5050" } })).toThrow(
      /advertisedUrl: must be an http\(s\) URL/,
    );
  });

  it("redirects an operator write however its path is spelled, and applies nothing itself", async () => {
    // %77 is "w": the router decodes it, so a check on the raw URL let this write through.
    const response = await fetch(`${standby.httpUrl()}/%77eights`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify([{ role: "sneaky", weight: 3 }]),
      redirect: "manual",
    });
    expect(response.status).toBe(307);
    expect(response.headers.get("location")).toBe(`${leader.httpUrl()}/%77eights`);
    expect(standby.core.allocator.getWeights().has("sneaky")).toBe(false);
  });
});
