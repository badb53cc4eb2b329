/**
 * Versions of the root group and rolling a group back to one: every write makes a version, the
 * versions are bounded and reload from the store, and `PUT /v2/groups/{id}` with `{"version"}`
 * brings the group's apps, subgroups and dependencies back through one deployment. Core
 * decisions first, then the REST API on fastify (a real cluster runs it in marathon.e2e.test.ts).
 */
import type { FastifyInstance } from "fastify";
import { afterEach, describe, expect, it } from "vitest";
import { ManualClock } from "../../../sdk/clock.ts";
import { SeededRng } from "../../../sdk/rng.ts";
import { validateApp, type NormalizedApp } from "../../../frameworks/marathon/app-spec.ts";
import { MarathonCore, NotFoundError, type MarathonCoreConfig, type MarathonEffect } from "../../../frameworks/marathon/core.ts";
import { MemoryMarathonStore } from "../../../frameworks/marathon/store.ts";
import { standaloneHttp } from "./standalone-http.ts";

function app(body: Record<string, unknown>): NormalizedApp {
  const result = validateApp({ cpus: 0.1, mem: 16, cmd: "sleep 1000", instances: 0, ...body });
  if (!result.ok) throw new Error(JSON.stringify(result.body));
  return result.app;
}

/** Carries the store effects out, as the shell does. */
async function persist(store: MemoryMarathonStore, effects: readonly MarathonEffect[]): Promise<void> {
  for (const e of effects) {
    if (e.type === "putApp") await store.put("app", e.record.app.id, e.record);
    else if (e.type === "deleteApp") await store.delete("app", e.appId);
    else if (e.type === "putDeployment") await store.put("deployment", e.deployment.id, e.deployment);
    else if (e.type === "deleteDeployment") await store.delete("deployment", e.id);
    else if (e.type === "putGroup") await store.put("group", e.group.id, e.group);
    else if (e.type === "deleteGroup") await store.delete("group", e.id);
    else if (e.type === "putRootVersion") await store.put("rootversion", e.change.version, e.change);
    else if (e.type === "deleteRootVersion") await store.delete("rootversion", e.version);
    else if (e.type === "putRetiredApp") await store.put("retiredapp", e.record.app.id, e.record);
    else if (e.type === "deleteRetiredApp") await store.delete("retiredapp", e.appId);
  }
}

/** A core whose writes land in a memory store; apps have no instances, so deployments end at once. */
function bench(config: Partial<MarathonCoreConfig> = {}) {
  const store = new MemoryMarathonStore();
  const core = new MarathonCore(new SeededRng(7), config);
  let t = 1_000;
  return {
    core,
    store,
    async write<T extends { effects: MarathonEffect[] }>(fn: (core: MarathonCore, nowMs: number) => T): Promise<T> {
      const out = fn(core, (t += 1000));
      await persist(store, out.effects);
      return out;
    },
  };
}

const V1 = [app({ id: "/shop/web", cmd: "web v1" }), app({ id: "/shop/db", cmd: "db v1" })];

describe("root group versions in the core", () => {
  it("gives every write a version of the root group, and lists those a group existed at, newest first", async () => {
    const b = bench();
    const first = await b.write((c, now) => c.deploy(V1.map((a) => ({ app: a })), {}, now, { put: [{ id: "/shop", dependencies: [] }] }));
    const second = await b.write((c, now) => c.putApp(app({ id: "/other/x" }), {}, now));
    const third = await b.write((c, now) => c.deploy([], {}, now, { remove: ["/shop"] }));
    expect(b.core.rootVersions()).toEqual([third.result.version, second.result.version, first.result.version]);
    expect(b.core.groupVersions("/other")).toEqual([third.result.version, second.result.version]);
    // The record went, the apps keep /shop alive.
    expect(b.core.groupVersions("/shop")).toEqual([third.result.version, second.result.version, first.result.version]);
    const then = b.core.rootAt(first.result.version)!;
    expect([...then.apps.keys()].sort()).toEqual(["/shop/db", "/shop/web"]);
    expect([...then.groups.keys()]).toEqual(["/shop"]);
    expect(b.core.rootAt("2000-01-01T00:00:00.000Z")).toBeUndefined();
  });

  it("rolls a group back: removes apps added since, restores changed ones and brings removed ones back", async () => {
    const b = bench();
    const v1 = await b.write((c, now) => c.deploy(V1.map((a) => ({ app: a })), {}, now, { put: [{ id: "/shop", dependencies: ["/infra"] }] }));
    // v2: web's cmd changed, cache added, db removed, the group's dependencies gone.
    await b.write((c, now) =>
      c.deploy([{ app: app({ id: "/shop/web", cmd: "web v2" }) }, { app: app({ id: "/shop/cache" }) }, { remove: "/shop/db" }], {}, now, { remove: ["/shop"], put: [{ id: "/shop", dependencies: [] }] }),
    );
    expect(b.core.app("/shop/db")).toBeUndefined(); // no instances: removed at once
    const outside = await b.write((c, now) => c.putApp(app({ id: "/elsewhere" }), {}, now));

    const plan = b.core.groupRollback("/shop", v1.result.version);
    expect(plan.changes.map((c) => ("remove" in c ? `-${c.remove}` : `${c.app.id} ${c.app.cmd}`))).toEqual(["-/shop/cache", "/shop/db db v1", "/shop/web web v1"]);
    const rolled = await b.write((c, now) => c.deploy(plan.changes, {}, now, plan.groups));
    expect(b.core.app("/shop/web")?.app.cmd).toBe("web v1");
    expect(b.core.app("/shop/db")?.app.cmd).toBe("db v1");
    expect(b.core.app("/shop/cache")).toBeUndefined();
    expect(b.core.app("/elsewhere")?.version).toBe(outside.result.version); // outside the group: untouched
    expect(b.core.groupRecord("/shop")?.dependencies).toEqual(["/infra"]);
    expect(b.core.rootVersions()[0]).toBe(rolled.result.version);

    // Rolling back to what it already is changes no app.
    expect(b.core.groupRollback("/shop", rolled.result.version).changes).toEqual([]);
    expect(() => b.core.groupRollback("/shop", "1999-01-01T00:00:00.000Z")).toThrow(NotFoundError);
    expect(() => b.core.groupRollback("/elsewhere-group", v1.result.version)).toThrow(/does not exist in version/);
  });

  it("plans a rollback without changing anything (dry run)", async () => {
    const b = bench();
    const v1 = await b.write((c, now) => c.deploy(V1.map((a) => ({ app: a })), {}, now));
    await b.write((c, now) => c.deploy([{ remove: "/shop/web" }, { app: app({ id: "/shop/db", cmd: "db v2" }) }], {}, now));
    const versions = b.core.rootVersions();
    const records = b.store.size();
    const plan = b.core.groupRollback("/shop", v1.result.version);
    expect(b.core.planSteps(plan.changes, plan.groups)).toEqual([{ actions: [{ action: "RestartApplication", app: "/shop/db" }, { action: "StartApplication", app: "/shop/web" }] }]);
    expect(b.core.rootVersions()).toEqual(versions);
    expect(b.core.app("/shop/web")).toBeUndefined();
    expect(b.store.size()).toBe(records);
  });

  it("keeps maxGroupVersions versions and forgets removed apps no kept version holds", async () => {
    const b = bench({ maxGroupVersions: 3 });
    await b.write((c, now) => c.putApp(app({ id: "/gone" }), {}, now));
    await b.write((c, now) => c.deleteApp("/gone", {}, now));
    expect((await b.store.load()).retiredApps.map((r) => r.app.id)).toEqual(["/gone"]);
    const kept = [];
    for (let i = 0; i < 3; i++) kept.push((await b.write((c, now) => c.putApp(app({ id: "/a", cmd: `v${i}` }), {}, now))).result.version);
    expect(b.core.rootVersions()).toEqual(kept.reverse());
    const stored = await b.store.load();
    expect(stored.rootVersions.map((c) => c.version).sort()).toEqual([...kept].sort());
    expect(stored.retiredApps).toEqual([]);
  });

  it("reloads the versions from the store and rolls back after a restart", async () => {
    const b = bench();
    const v1 = await b.write((c, now) => c.deploy(V1.map((a) => ({ app: a })), {}, now, { put: [{ id: "/shop", dependencies: [] }] }));
    const v2 = await b.write((c, now) => c.deploy([{ remove: "/shop/db" }, { app: app({ id: "/shop/web", cmd: "web v2" }) }], {}, now));

    const restarted = new MarathonCore(new SeededRng(8));
    await persist(b.store, restarted.recover(await b.store.load(), 10_000));
    expect(restarted.rootVersions()).toEqual([v2.result.version, v1.result.version]);
    const plan = restarted.groupRollback("/shop", v1.result.version);
    const rolled = restarted.deploy(plan.changes, {}, 11_000, plan.groups);
    expect(rolled.result.version > v2.result.version).toBe(true);
    expect(restarted.app("/shop/db")?.app.cmd).toBe("db v1");
    expect(restarted.app("/shop/web")?.app.cmd).toBe("web v1");
  });
});

describe("group versions through the REST API", () => {
  let http: FastifyInstance | undefined;
  afterEach(async () => {
    await http?.close();
    http = undefined;
  });

  /** The REST API on a core whose writes land in a memory store. */
  async function api() {
    const core = new MarathonCore(new SeededRng(9));
    const store = new MemoryMarathonStore();
    const clock = new ManualClock(1_700_000_000_000);
    http = standaloneHttp(core, {
      clock,
      input: async (fn) => {
        clock.advance(1000);
        const out = fn();
        await persist(store, Array.isArray(out) ? out : out.effects);
        return out;
      },
    });

    const server = http;
    const call = async (method: "GET" | "PUT" | "POST" | "DELETE", url: string, body?: unknown) => {
      const answer = await server.inject({ method, url, ...(body !== undefined ? { payload: JSON.stringify(body), headers: { "content-type": "application/json" } } : {}) });
      return { status: answer.statusCode, headers: answer.headers, body: answer.body === "" ? undefined : answer.json() };
    };
    return { core, store, call };
  }

  it("lists versions bare and newest first, shows a group at a version, and rolls it back with one deployment", async () => {
    const { core, call } = await api();
    const v1 = await call("POST", "/v2/groups", { id: "/shop", dependencies: ["/infra"], apps: [{ id: "web", cmd: "web v1", cpus: 0.1, mem: 16, instances: 0 }, { id: "db", cmd: "db v1", cpus: 0.1, mem: 16, instances: 0 }] });
    expect(v1.status).toBe(201);
    const v2 = await call("PUT", "/v2/groups/shop", { apps: [{ id: "web", cmd: "web v2", cpus: 0.1, mem: 16, instances: 0 }, { id: "cache", cmd: "cache", cpus: 0.1, mem: 16, instances: 0 }] });
    expect(v2.status).toBe(200);
    const solo = await call("POST", "/v2/apps", { id: "/solo", cmd: "x", cpus: 0.1, mem: 16, instances: 0 });
    const soloVersion = solo.body.version as string;

    expect((await call("GET", "/v2/groups/versions")).body).toEqual([soloVersion, v2.body.version, v1.body.version]);
    expect((await call("GET", "/v2/groups/shop/versions")).body).toEqual([soloVersion, v2.body.version, v1.body.version]);
    expect((await call("GET", "/v2/groups/nope/versions")).status).toBe(404);
    const then = await call("GET", `/v2/groups/shop/versions/${v1.body.version}`);
    expect(then.status).toBe(200);
    expect(then.body).toMatchObject({ id: "/shop", dependencies: ["/infra"], groups: [], version: v1.body.version });
    expect(then.body.apps.map((a: NormalizedApp) => `${a.id} ${a.cmd}`)).toEqual(["/shop/db db v1", "/shop/web web v1"]);
    expect((await call("GET", `/v2/groups/shop/versions/${soloVersion}`)).body.apps.map((a: NormalizedApp) => a.id)).toEqual(["/shop/cache", "/shop/web"]);
    const missing = await call("GET", "/v2/groups/shop/versions/2001-01-01T00:00:00.000Z");
    expect(missing.status).toBe(404);
    expect(missing.body.message).toContain("2001-01-01T00:00:00.000Z");

    const dry = await call("PUT", "/v2/groups/shop?dryRun=true", { version: v1.body.version });
    expect(dry.status).toBe(200);
    expect(dry.body.steps.flatMap((s: { actions: Array<{ action: string; app: string }> }) => s.actions.map((a) => `${a.action} ${a.app}`))).toEqual(["StopApplication /shop/cache", "StartApplication /shop/db", "RestartApplication /shop/web"]);
    expect(core.app("/shop/cache")).toBeDefined();

    const rolled = await call("PUT", "/v2/groups/shop", { version: v1.body.version });
    expect(rolled.status).toBe(200);
    expect(rolled.headers["marathon-deployment-id"]).toBe(rolled.body.deploymentId);
    expect(Object.keys(rolled.body).sort()).toEqual(["deploymentId", "version"]);
    const shop = (await call("GET", "/v2/groups/shop")).body;
    expect(shop.apps.map((a: NormalizedApp) => `${a.id} ${a.cmd}`)).toEqual(["/shop/db db v1", "/shop/web web v1"]);
    expect(shop.dependencies).toEqual(["/infra"]);
    expect((await call("GET", "/v2/apps/solo")).body.app.version).toBe(soloVersion);
    expect((await call("GET", "/v2/groups/versions")).body[0]).toBe(rolled.body.version);
  });

  it("rolls the root back through PUT /v2/groups, and refuses unknown versions and locked apps without persisting anything", async () => {
    const { core, store, call } = await api();
    const v1 = await call("POST", "/v2/apps", { id: "/a", cmd: "a v1", cpus: 0.1, mem: 16, instances: 0 });
    // Waits for offers that never come: its deployment holds /b.
    const locked = await call("POST", "/v2/apps", { id: "/b", cmd: "b", cpus: 0.1, mem: 16, instances: 1 });
    expect(core.deployment(locked.headers["marathon-deployment-id"] as string)).toBeDefined();

    const records = store.size();
    const versions = core.rootVersions();
    const unknown = await call("PUT", "/v2/groups", { version: "1999-12-31T23:59:59.999Z" });
    expect(unknown.status).toBe(404);
    expect(unknown.body.message).toContain("1999-12-31T23:59:59.999Z");
    const conflict = await call("PUT", "/v2/groups", { version: v1.body.version });
    expect(conflict.status).toBe(409);
    expect(conflict.body.deployments).toEqual([{ id: locked.headers["marathon-deployment-id"] }]);
    expect(store.size()).toBe(records);
    expect(core.rootVersions()).toEqual(versions);
    expect(core.app("/b")).toBeDefined();

    const forced = await call("PUT", "/v2/groups?force=true", { version: v1.body.version });
    expect(forced.status).toBe(200);
    expect(core.deployment(locked.headers["marathon-deployment-id"] as string)).toBeUndefined(); // superseded
    expect(core.app("/b")).toBeUndefined(); // it never launched: removed at once
    expect([...core.rootAt(forced.body.version)!.apps.keys()]).toEqual(["/a"]);
  });
});
