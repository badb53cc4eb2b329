/**
 * Groups in their own right: created through `/v2/groups` they survive without apps (and a
 * Marathon restart), keep their `dependencies`, and those dependencies order deployments of the
 * apps below them. Core decisions first, then the REST API on a real cluster.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { SeededRng } from "../../../sdk/rng.ts";
import { validateApp, type NormalizedApp } from "../../../frameworks/marathon/app-spec.ts";
import { MarathonCore, RefusedError, type GroupRecord } from "../../../frameworks/marathon/core.ts";
import { useNats } from "../../harness/nats.ts";
import { eventually } from "../../harness/events.ts";
import { startCluster, type TestCluster } from "../../harness/cluster.ts";
import { startMarathon, type TestMarathon } from "./marathon-harness.ts";

vi.setConfig({ testTimeout: 90_000, hookTimeout: 60_000 });

function app(body: Record<string, unknown>): NormalizedApp {
  const result = validateApp({ cpus: 0.1, mem: 16, cmd: "sleep 1000", instances: 1, ...body });
  if (!result.ok) throw new Error(JSON.stringify(result.body));
  return result.app;
}

describe("groups in the core", () => {
  it("keeps group records without apps, lists child groups from records and app ids, and forgets a subtree", () => {
    const core = new MarathonCore(new SeededRng(1));
    const { effects } = core.deploy([{ app: app({ id: "/shop/web/front" }) }], {}, 1000, { put: [{ id: "/empty", dependencies: [] }, { id: "/shop/db", dependencies: ["/shop/cache"] }] });
    const puts = effects.flatMap((e) => (e.type === "putGroup" ? [e.group] : []));
    expect(puts.map((g) => g.id)).toEqual(["/empty", "/shop/db"]);
    expect(core.groupExists("/empty")).toBe(true);
    expect(core.groupExists("/shop")).toBe(true); // above a record and an app
    expect(core.groupExists("/shop/web")).toBe(true);
    expect(core.groupExists("/shop/web/front")).toBe(false); // an app, not a group
    expect(core.groupExists("/nope")).toBe(false);
    expect(core.childGroups("/")).toEqual(["/empty", "/shop"]);
    expect(core.childGroups("/shop")).toEqual(["/shop/db", "/shop/web"]);
    expect(core.groupRecord("/shop/db")?.dependencies).toEqual(["/shop/cache"]);

    const removed = core.deploy([], {}, 2000, { remove: ["/shop"] });
    expect(removed.effects.filter((e) => e.type === "deleteGroup")).toEqual([{ type: "deleteGroup", id: "/shop/db" }]);
    expect(core.groupExists("/shop/db")).toBe(false);
    expect(core.groupExists("/empty")).toBe(true);
  });

  it("orders a deployment by the dependencies of the groups the apps are in", () => {
    const core = new MarathonCore(new SeededRng(2));
    const { result } = core.deploy(
      [{ app: app({ id: "/shop/front/web" }) }, { app: app({ id: "/shop/back/db" }) }],
      {},
      1000,
      { put: [{ id: "/shop/front", dependencies: ["/shop/back"] }] },
    );
    expect(core.deployment(result.deploymentId)!.steps).toEqual([["/shop/back/db"], ["/shop/front/web"]]);
  });

  it("orders apps that depend on each other through an app the write leaves alone, as Marathon orders by the whole dependency graph", () => {
    const core = new MarathonCore(new SeededRng(2));
    // web -> api -> db, and /ui's group depends on /s.
    const tree = (version: string) => [
      { app: app({ id: "/s/db", instances: 0, cmd: `sleep ${version}` }) },
      { app: app({ id: "/s/api", instances: 0, dependencies: ["/s/db"] }) },
      { app: app({ id: "/s/web", instances: 0, cmd: `sleep ${version}`, dependencies: ["/s/api"] }) },
      { app: app({ id: "/ui/app", instances: 0, cmd: `sleep ${version}` }) },
    ];
    const groups = { put: [{ id: "/ui", dependencies: ["/s"] }] };
    core.deploy(tree("1"), { force: true }, 1000, groups);
    expect(core.deploymentList()).toEqual([]);
    // Only db, web and /ui/app change; api is as it was and is not deployed.
    const expected = [["/s/db"], ["/s/web"], ["/ui/app"]];
    expect(core.planSteps(tree("2"), groups).map((s) => s.actions.map((a) => a.app))).toEqual(expected);
    // Held back by nothing, the steps pass at once: the order shows in the step events.
    const { effects } = core.deploy(tree("2"), {}, 2000, groups);
    const stepped = effects.flatMap((e) => (e.type === "event" && e.event.eventType === "deployment_step_success" ? [(e.event.currentStep as { actions: Array<{ app: string }> }).actions.map((a) => a.app)] : []));
    expect(stepped).toEqual(expected);
  });

  it("refuses a write that would make one id both an app and a group, and changes nothing", () => {
    const core = new MarathonCore(new SeededRng(4));
    core.deploy([{ app: app({ id: "/web" }) }, { app: app({ id: "/shop/cart" }) }], {}, 1000, { put: [{ id: "/empty", dependencies: [] }] });
    const refused = (changes: Parameters<MarathonCore["deploy"]>[0], groups: Parameters<MarathonCore["deploy"]>[3] = {}) => {
      expect(() => core.deploy(changes, {}, 2000, groups)).toThrow(/may not have the same identifier/);
      expect(() => core.planSteps(changes, groups)).toThrow(/may not have the same identifier/);
    };
    refused([{ app: app({ id: "/web/sub" }) }]); // below an app
    refused([{ app: app({ id: "/shop" }) }]); // where apps imply a group
    refused([{ app: app({ id: "/empty" }) }]); // where a group record is
    refused([], { put: [{ id: "/web", dependencies: [] }] }); // a group record at an app
    refused([], { put: [{ id: "/web/inner", dependencies: [] }] }); // a group record below an app
    refused([{ app: app({ id: "/new" }) }, { app: app({ id: "/new/sub" }) }]); // both in one write
    expect(core.appList().map((r) => r.app.id)).toEqual(["/shop/cart", "/web"]);
    expect(core.deploymentList()).toHaveLength(1);
    // What the same write removes no longer counts: an app may become a group in one step.
    expect(() => core.deploy([{ remove: "/web" }, { app: app({ id: "/web/sub" }) }], { force: true }, 3000)).not.toThrow();
    expect(() => core.deploy([{ remove: "/shop/cart" }, { app: app({ id: "/shop" }) }], { force: true }, 4000)).not.toThrow();
  });

  it("reloads group records and bounds their number", () => {
    const record: GroupRecord = { id: "/kept", dependencies: ["/other"], version: "2024-01-01T00:00:00.000Z" };
    const core = new MarathonCore(new SeededRng(3), { maxGroups: 1 });
    core.recover({ apps: [], deployments: [], instances: [], groups: [record] }, 1000);
    expect(core.groupRecord("/kept")).toEqual(record);
    expect(() => core.deploy([], {}, 2000, { put: [{ id: "/second", dependencies: [] }] })).toThrow(RefusedError);
    expect(core.groupExists("/second")).toBe(false);
  });
});

describe("groups through the REST API", () => {
  const nats = useNats();
  let cluster: TestCluster | undefined;
  const marathons: TestMarathon[] = [];
  afterEach(async () => {
    const last = marathons.at(-1);
    if (last) {
      await last.api("DELETE", "/v2/groups/?force=true").catch(() => undefined);
      await eventually(async () => ((await last.api("GET", "/v2/tasks")).body.tasks as unknown[]).length === 0, 15_000, "apps removed").catch(() => undefined);
    }
    for (const m of marathons.splice(0)) await m.stop();
    await cluster?.stop();
    cluster = undefined;
  });
  const marathonOn = async (c: TestCluster) => {
    const m = await startMarathon(c);
    marathons.push(m);
    return m;
  };

  it("an empty group survives with its dependencies, also across a restart, until deleted", async () => {
    cluster = await startCluster({ natsUrl: nats.url, agents: [] });
    const first = await marathonOn(cluster);
    const created = await first.api("POST", "/v2/groups", { id: "/empty", dependencies: ["/infra"], groups: [{ id: "/empty/inner" }] });
    expect(created.status).toBe(201);
    expect(created.headers.get("location")).toMatch(/\/v2\/groups\/empty$/);
    await first.events.waitFor((e) => e.eventType === "deployment_success" && e.id === created.body.deploymentId, 10_000, "the empty deployment");
    const shown = (await first.api("GET", "/v2/groups/empty")).body;
    expect(shown).toMatchObject({ id: "/empty", apps: [], dependencies: ["/infra"], groups: [{ id: "/empty/inner", apps: [], groups: [], dependencies: [] }] });
    expect(shown.version).toBe(created.body.version);
    expect((await first.api("GET", "/v2/groups")).body.groups.map((g: { id: string }) => g.id)).toEqual(["/empty"]);
    expect((await first.api("POST", "/v2/groups", { id: "/empty" })).status).toBe(409);

    // Changing only the dependencies keeps the subgroups.
    const changed = await first.api("PUT", "/v2/groups/empty", { dependencies: ["/infra", "/db"] });
    expect(changed.status).toBe(200);
    await first.stop();
    marathons.splice(marathons.indexOf(first), 1);

    const second = await marathonOn(cluster);
    const again = (await second.api("GET", "/v2/groups/empty")).body;
    expect(again.dependencies).toEqual(["/infra", "/db"]);
    expect(again.groups.map((g: { id: string }) => g.id)).toEqual(["/empty/inner"]);
    const removed = await second.api("DELETE", "/v2/groups/empty");
    expect(removed.status).toBe(200);
    expect((await second.api("GET", "/v2/groups/empty")).status).toBe(404);
    expect((await second.api("GET", "/v2/groups/empty/inner")).status).toBe(404);
    expect((await second.api("DELETE", "/v2/groups/empty")).status).toBe(404);
  });

  it("a group keeps existing after its last app is deleted, and its dependencies order the deployment", async () => {
    cluster = await startCluster({ natsUrl: nats.url, agents: [{}] });
    const m = await marathonOn(cluster);
    const sleepy = { cmd: "sleep 1000", cpus: 0.1, mem: 32, instances: 1 };
    const created = await m.api("POST", "/v2/groups", {
      id: "/shop",
      groups: [
        { id: "/shop/front", dependencies: ["/shop/back"], apps: [{ id: "web", ...sleepy }] },
        { id: "/shop/back", apps: [{ id: "db", ...sleepy }] },
      ],
    });
    expect(created.status).toBe(201);
    const plan = ((await m.api("GET", "/v2/deployments")).body as Array<Record<string, any>>).find((d) => d.id === created.body.deploymentId);
    expect(plan?.steps.map((s: { actions: Array<{ app: string }> }) => s.actions.map((a) => a.app))).toEqual([["/shop/back/db"], ["/shop/front/web"]]);
    await m.events.waitFor((e) => e.eventType === "deployment_success" && e.id === created.body.deploymentId, 30_000, "the shop deployed");
    const dbRunning = m.events.items.findIndex((e) => e.eventType === "status_update_event" && e.appId === "/shop/back/db" && e.taskStatus === "TASK_RUNNING");
    const webCreated = m.events.items.findIndex((e) => e.eventType === "instance_changed_event" && e.runSpecId === "/shop/front/web" && e.condition === "Created");
    expect(dbRunning).toBeGreaterThanOrEqual(0);
    expect(webCreated).toBeGreaterThan(dbRunning);
    expect((await m.api("GET", "/v2/groups/shop/front")).body.dependencies).toEqual(["/shop/back"]);

    const removed = await m.api("DELETE", "/v2/apps/shop/front/web");
    await m.events.waitFor((e) => e.eventType === "deployment_success" && e.id === removed.body.deploymentId, 20_000, "the app removed");
    const front = await m.api("GET", "/v2/groups/shop/front");
    expect(front.status).toBe(200);
    expect(front.body).toMatchObject({ id: "/shop/front", apps: [], dependencies: ["/shop/back"] });
  });
});
