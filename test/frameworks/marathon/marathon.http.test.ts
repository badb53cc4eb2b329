/**
 * Marathon's REST API against bad and random input, on a real nats-server and master (no agents
 * needed): every invalid spec answers Marathon's 422 at the right path and persists nothing, and
 * no generated body makes the server answer 5xx.
 */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useNats } from "../../harness/nats.ts";
import { startCluster, type TestCluster } from "../../harness/cluster.ts";
import { JetStreamMarathonStore, marathonBucket } from "../../../frameworks/marathon/store.ts";
import { MarathonApiError, MarathonClient } from "../../../frameworks/marathon/client.ts";
import { eventually } from "../../harness/events.ts";
import { ManualClock } from "../../../sdk/clock.ts";
import { SeededRng } from "../../../sdk/rng.ts";
import { validateApp, type NormalizedApp } from "../../../frameworks/marathon/app-spec.ts";
import { MarathonCore } from "../../../frameworks/marathon/core.ts";
import { invalidSpecs } from "./invalid-specs.ts";
import { startMarathon, type TestMarathon } from "./marathon-harness.ts";
import { standaloneHttp } from "./standalone-http.ts";

const nats = useNats();
let cluster: TestCluster;
let m: TestMarathon;
let store: JetStreamMarathonStore;

beforeAll(async () => {
  cluster = await startCluster({ natsUrl: nats.url, agents: [] });
  m = await startMarathon(cluster);
  const transport = await cluster.connect("inspector");
  store = await JetStreamMarathonStore.open(transport.connection, { bucket: marathonBucket(cluster.cluster) });
});
afterAll(async () => {
  await m?.stop();
  await cluster?.stop();
});

describe("POST /v2/apps with invalid specs", () => {
  it("covers at least 20 cases", () => {
    expect(invalidSpecs.length).toBeGreaterThanOrEqual(20);
  });

  it.each(invalidSpecs)("%s: 422 at the exact path, nothing persisted", async (_name, body, path, message, fragment) => {
    const answer = await m.api("POST", "/v2/apps", body);
    expect(answer.status).toBe(422);
    expect(answer.body.message).toBe(message);
    const errors: string[] = answer.body.details.find((d: { path: string }) => d.path === path)?.errors ?? [];
    expect(errors.join(" | "), JSON.stringify(answer.body.details)).toContain(fragment);
    expect((await m.api("GET", "/v2/apps")).body.apps).toEqual([]);
    expect(await store.size()).toBe(1); // the framework id only
  });

  it("answers 400 for unparseable JSON and 404/405 for unknown routes", async () => {
    const bad = await m.api("POST", "/v2/apps", "{not json");
    expect(bad.status).toBe(400);
    expect(bad.body.message).toBe("Invalid JSON");
    expect((await m.api("GET", "/v2/apps/nope")).status).toBe(404);
    expect((await m.api("DELETE", "/v2/apps/nope")).status).toBe(404);
    expect((await m.api("GET", "/v2/nothing")).status).toBe(404);
    expect((await m.api("DELETE", "/v2/deployments/nope")).status).toBe(404);
  });

  it("answers a URL with a bad percent-encoding 400 with Marathon's {message}", async () => {
    for (const [method, path] of [
      ["GET", "/v2/apps/%ZZ"],
      ["PUT", "/v2/apps/%ZZ"],
      ["DELETE", "/v2/groups/%E0%A4%A"],
      ["GET", "/v2/nothing/%ZZ"],
    ] as const) {
      const answer = await m.api(method, path, method === "PUT" ? { cmd: "sleep 1" } : undefined);
      expect(answer.status, path).toBe(400);
      expect(answer.body, path).toEqual({ message: `Invalid URL: '${path}' is not a valid url component` });
      expect(answer.headers.get("x-marathon-leader"), path).toBe(m.url);
    }
  });

  it("decodes a task id or version in the URL once: an escaped '%' is a 404, not a 500", async () => {
    expect((await m.api("POST", "/v2/apps", { id: "/pct/idle", cmd: "sleep 1", instances: 0 })).status).toBe(201);
    for (const [method, path, message] of [
      ["GET", "/v2/apps/pct/idle/tasks/%25ZZ", "Task '%ZZ' does not exist"],
      ["DELETE", "/v2/apps/pct/idle/tasks/%25ZZ", "Task '%ZZ' does not exist"],
      ["GET", "/v2/apps/pct/idle/versions/%25ZZ", "App '/pct/idle' does not exist in version %ZZ"],
      ["GET", "/v2/groups/pct/versions/%25ZZ", "Group '/pct' does not exist in version %ZZ"],
    ] as const) {
      const answer = await m.api(method, path);
      expect(answer.status, path).toBe(404);
      expect(answer.body, path).toEqual({ message });
    }
    expect((await m.api("DELETE", "/v2/apps/pct/idle")).status).toBe(200);
  });

  it("warns about unknown fields, refuses a duplicate id, and keeps versions", async () => {
    const created = await m.api("POST", "/v2/apps", { id: "/g/idle", cmd: "sleep 1", instances: 0, bogus: 1, other: true });
    expect(created.status).toBe(201);
    expect(created.headers.get("warning")).toContain("bogus");
    expect(created.headers.get("warning")).toContain("other");
    const again = await m.api("POST", "/v2/apps", { id: "/g/idle", cmd: "sleep 1", instances: 0 });
    expect(again.status).toBe(409);
    const updated = await m.api("PUT", "/v2/apps/g/idle", { cmd: "sleep 2" });
    expect(updated.status).toBe(200);
    const versions = (await m.api("GET", "/v2/apps/g/idle/versions")).body.versions as string[];
    expect(versions).toHaveLength(2);
    expect(versions[0]).toBe(updated.body.version);
    const old = await m.api("GET", `/v2/apps/g/idle/versions/${versions[1]}`);
    expect(old.body.cmd).toBe("sleep 1");
    // Rollback to a version: PUT {version}.
    const rolled = await m.api("PUT", "/v2/apps/g/idle", { version: versions[1] });
    expect(rolled.status).toBe(200);
    expect((await m.api("GET", "/v2/apps/g/idle")).body.app.cmd).toBe("sleep 1");
    expect((await m.api("DELETE", "/v2/apps/g/idle")).status).toBe(200);
  });
});

describe("PATCH /v2/apps/{id}", () => {
  it("answers 404 for an app that does not exist and creates nothing (PUT may create, PATCH only changes)", async () => {
    const patched = await m.api("PATCH", "/v2/apps/ghost", { cmd: "sleep 1", instances: 0 });
    expect(patched.status).toBe(404);
    expect(patched.body.message).toBe("App '/ghost' does not exist");
    expect((await m.api("GET", "/v2/apps/ghost")).status).toBe(404);
    expect((await m.api("GET", "/v2/deployments")).body).toEqual([]);
  });
});

describe("PUT and PATCH /v2/apps with a list of apps", () => {
  const ids = async (prefix: string) => ((await m.api("GET", `/v2/apps?id=${prefix}`)).body.apps as Array<{ id: string }>).map((a) => a.id);

  it("create and change every app in one deployment, answering 200 with the deployment", async () => {
    expect((await m.api("POST", "/v2/apps", { id: "/batch/old", cmd: "sleep 1", instances: 0, mem: 32, labels: { keep: "me" } })).status).toBe(201);
    const put = await m.api("PUT", "/v2/apps?force=true", [
      { id: "/batch/old", cmd: "sleep 2" },
      { id: "batch/new", cmd: "sleep 3", instances: 0 },
    ]);
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    expect(put.body).toEqual({ deploymentId: expect.any(String), version: expect.any(String) });
    expect(put.headers.get("marathon-deployment-id")).toBe(put.body.deploymentId);
    expect(await ids("/batch/")).toEqual(["/batch/new", "/batch/old"]);
    const old = (await m.api("GET", "/v2/apps/batch/old")).body.app;
    // partialUpdate defaults to true: what the body leaves out is kept.
    expect([old.cmd, old.mem, old.labels, old.version]).toEqual(["sleep 2", 32, { keep: "me" }, put.body.version]);
    expect((await m.api("GET", "/v2/apps/batch/new")).body.app.version).toBe(put.body.version);

    // partialUpdate=false replaces the whole definition.
    const full = await m.api("PUT", "/v2/apps?partialUpdate=false&force=true", [{ id: "/batch/old", cmd: "sleep 4", instances: 0 }]);
    expect(full.status, JSON.stringify(full.body)).toBe(200);
    const replaced = (await m.api("GET", "/v2/apps/batch/old")).body.app;
    expect([replaced.cmd, replaced.mem, replaced.labels]).toEqual(["sleep 4", 128, {}]);

    // PATCH changes existing apps only, and the whole list fails on one unknown id.
    const patched = await m.api("PATCH", "/v2/apps?force=true", [{ id: "/batch/old", mem: 64 }, { id: "/batch/new", instances: 0, cmd: "sleep 5" }]);
    expect(patched.status, JSON.stringify(patched.body)).toBe(200);
    expect((await m.api("GET", "/v2/apps/batch/old")).body.app.mem).toBe(64);
    expect((await m.api("GET", "/v2/apps/batch/new")).body.app.cmd).toBe("sleep 5");
    const unknown = await m.api("PATCH", "/v2/apps?force=true", [{ id: "/batch/old", mem: 96 }, { id: "/batch/ghost", mem: 64 }]);
    expect(unknown.status).toBe(404);
    expect(unknown.body.message).toBe("App '/batch/ghost' does not exist");
    expect((await m.api("GET", "/v2/apps/batch/old")).body.app.mem).toBe(64);
    expect(await ids("/batch/")).toEqual(["/batch/new", "/batch/old"]);
    expect((await m.api("DELETE", "/v2/groups/batch")).status).toBe(200);
  });

  it("answer 422 naming the index of each invalid app, and apply nothing", async () => {
    expect((await m.api("POST", "/v2/apps", { id: "/batchbad/old", cmd: "sleep 1", instances: 0 })).status).toBe(201);
    const versions = (await m.api("GET", "/v2/groups/versions")).body as string[];
    const answer = await m.api("PUT", "/v2/apps?force=true", [
      { id: "/batchbad/old", cmd: "sleep 2" },
      { id: "/batchbad/new", cmd: "sleep 1", instances: -1 },
      { cmd: "sleep 1" },
    ]);
    expect(answer.status, JSON.stringify(answer.body)).toBe(422);
    const paths = (answer.body.details as Array<{ path: string }>).map((d) => d.path);
    expect(paths).toEqual(expect.arrayContaining(["/(1)/instances", "/(2)/id"]));
    expect(paths.some((p) => p.startsWith("/(0)"))).toBe(false);
    expect((await m.api("GET", "/v2/apps/batchbad/old")).body.app.cmd).toBe("sleep 1");
    expect(await ids("/batchbad/")).toEqual(["/batchbad/old"]);
    expect((await m.api("GET", "/v2/groups/versions")).body).toEqual(versions);
    const notAList = await m.api("PUT", "/v2/apps", { id: "/batchbad/old", cmd: "sleep 2" });
    expect(notAList.status).toBe(422);
    expect(notAList.body.details).toEqual([{ path: "/", errors: [expect.stringContaining("array")] }]);
    expect((await m.api("DELETE", "/v2/groups/batchbad")).status).toBe(200);
  });
});

describe("GET /v2/apps?label=", () => {
  it("understands Marathon's selectors: existence, ==, !=, in, notin, escapes; a value test needs the label; a bad one is 400", async () => {
    const apps = [
      { id: "/sel/prod", labels: { env: "prod", tier: "frontend" } },
      { id: "/sel/stage", labels: { env: "stage", "owner:x": "a,b" } },
      { id: "/sel/bare", labels: {} },
    ];
    for (const a of apps) expect((await m.api("POST", "/v2/apps", { ...a, cmd: "sleep 1", instances: 0 })).status).toBe(201);
    const ids = async (selector: string) => {
      const answer = await m.api("GET", `/v2/apps?id=/sel/&label=${encodeURIComponent(selector)}`);
      expect(answer.status, JSON.stringify(answer.body)).toBe(200);
      return answer.body.apps.map((a: { id: string }) => a.id);
    };
    expect(await ids("env")).toEqual(["/sel/prod", "/sel/stage"]);
    expect(await ids("env==prod")).toEqual(["/sel/prod"]);
    expect(await ids("env != prod")).toEqual(["/sel/stage"]); // not /sel/bare: it has no env
    expect(await ids("env in (prod, stage)")).toEqual(["/sel/prod", "/sel/stage"]);
    expect(await ids("env notin (prod)")).toEqual(["/sel/stage"]);
    expect(await ids("env in (prod,stage), tier")).toEqual(["/sel/prod"]);
    expect(await ids("owner\\:x==a\\,b")).toEqual(["/sel/stage"]);
    for (const bad of ["env in prod", "env==", "==prod", "env in (prod", "a b", "owner:x"]) {
      const answer = await m.api("GET", `/v2/apps?label=${encodeURIComponent(bad)}`);
      expect(answer.status, bad).toBe(400);
      expect(answer.body.message, bad).toContain("label");
    }
    for (const a of apps) expect((await m.api("DELETE", `/v2/apps${a.id}`)).status).toBe(200);
  });
});

describe("embed", () => {
  it("apps.failures stands for tasks and lastTaskFailure, and /v2/groups honours group.apps.* embeds", async () => {
    expect((await m.api("POST", "/v2/apps", { id: "/emb/idle", cmd: "sleep 1", instances: 0 })).status).toBe(201);
    const listed = (await m.api("GET", "/v2/apps?id=/emb/&embed=apps.failures")).body.apps;
    expect(listed[0].tasks).toEqual([]);
    const plain = (await m.api("GET", "/v2/groups/emb")).body.apps[0];
    expect(plain.tasks).toBeUndefined();
    const root = (await m.api("GET", "/v2/groups?embed=group.apps.tasks&embed=group.apps.readiness")).body;
    const app = root.groups.find((g: { id: string }) => g.id === "/emb").apps[0];
    expect(app.tasks).toEqual([]);
    expect(app.readinessCheckResults).toEqual([]);
    const one = (await m.api("GET", "/v2/groups/emb?embed=group.apps.tasks")).body.apps[0];
    expect(one.tasks).toEqual([]);
    expect((await m.api("DELETE", "/v2/apps/emb/idle")).status).toBe(200);
  });
});

describe("PUT creating an app or group under an id the URL names", () => {
  it("answers 422 naming /id and the rule when that id is invalid (not 404), and creates nothing", async () => {
    for (const [path, body] of [
      ["/v2/apps/Bad_Id", { cmd: "sleep 1", instances: 0 }],
      [`/v2/apps/${"a".repeat(1100)}`, { cmd: "sleep 1", instances: 0 }],
      ["/v2/groups/Bad_Group", { apps: [] }],
    ] as const) {
      const answer = await m.api("PUT", path, body);
      expect(answer.status, path).toBe(422);
      expect(answer.body.message).toBe("Object is not valid");
      expect(answer.body.details[0].path).toBe("/id");
      expect(answer.body.details[0].errors.join(" ")).toMatch(/regular expression|at most 1024/);
    }
    expect((await m.api("PUT", "/v2/apps/Bad_Id", { version: "2020-01-01T00:00:00.000Z" })).status).toBe(422);
    expect((await m.api("GET", "/v2/apps?id=bad")).body.apps).toEqual([]);
    expect((await m.api("GET", "/v2/deployments")).body).toEqual([]);
    // Reading or removing something under an invalid id is still simply not found.
    expect((await m.api("GET", "/v2/apps/Bad_Id")).status).toBe(404);
    expect((await m.api("PATCH", "/v2/apps/Bad_Id", { instances: 1 })).status).toBe(404);
    expect((await m.api("DELETE", "/v2/groups/Bad_Group")).status).toBe(404);
  });

  it("answers 404 for a rollback ({version}) of an app that does not exist", async () => {
    const answer = await m.api("PUT", "/v2/apps/never", { version: "2020-01-01T00:00:00.000Z" });
    expect(answer.status).toBe(404);
    expect(answer.body.message).toBe("App '/never' does not exist");
    expect((await m.api("GET", "/v2/apps/never")).status).toBe(404);
  });
});

describe("killing tasks", () => {
  it("refuses scale and wipe together with 400, before killing anything", async () => {
    expect((await m.api("POST", "/v2/apps", { id: "/kill/idle", cmd: "sleep 1", instances: 0 })).status).toBe(201);
    for (const [method, path, body] of [
      ["DELETE", "/v2/apps/kill/idle/tasks?scale=true&wipe=true", undefined],
      ["DELETE", "/v2/apps/kill/idle/tasks/kill_idle.x?scale=true&wipe=true", undefined],
      ["POST", "/v2/tasks/delete?scale=true&wipe=true", { ids: [] }],
    ] as const) {
      const answer = await m.api(method, path, body);
      expect(answer.status, path).toBe(400);
      expect(answer.body.message).toBe("You cannot use scale and wipe at the same time.");
    }
    expect((await m.api("DELETE", "/v2/apps/kill/idle")).status).toBe(200);
  });
});

describe("tasks", () => {
  it("POST /v2/tasks/delete answers 400 naming a malformed task id, and 200 for well-formed unknown ones", async () => {
    for (const bad of ["garbage", "", "web.", "web_1.", ".x_"]) {
      const answer = await m.api("POST", "/v2/tasks/delete", { ids: ["web.0b3f0f4e-5d1f-11e5-88f7-56b91e7a505b", bad] });
      expect(answer.status, bad).toBe(400);
      expect(answer.body).toEqual({ message: `Invalid task id '${bad}'.` });
    }
    const unknown = await m.api("POST", "/v2/tasks/delete", { ids: ["web.0b3f0f4e-5d1f-11e5-88f7-56b91e7a505b", "shop_db.1"] });
    expect(unknown.status).toBe(200);
    expect(unknown.body).toEqual({ tasks: [] });
  });

  it("GET /v2/tasks?status= answers 400 naming the parameter and the values allowed for an unknown status", async () => {
    for (const status of ["running", "STAGING", "killing", "unreachable"]) expect((await m.api("GET", `/v2/tasks?status=${status}`)).status, status).toBe(200);
    expect((await m.api("GET", "/v2/tasks?status[]=running&status[]=staging")).status).toBe(200);
    for (const query of ["status=bogus", "status=", "status[]=running&status[]=bogus"]) {
      const answer = await m.api("GET", `/v2/tasks?${query}`);
      expect(answer.status, query).toBe(400);
      expect(answer.body.message).toContain("status");
      expect(answer.body.message).toContain("running, staging, killing, unreachable");
    }
  });
});

describe("concurrent creates", () => {
  it("of one app id: exactly one is created (201), the others answer 409", async () => {
    // Other writes keep the input queue busy while the creates are checked.
    const busy = Array.from({ length: 20 }, (_, i) => m.api("POST", "/v2/apps", { id: `/race/busy${i}`, cmd: "sleep 1", instances: 0 }));
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => m.api("POST", "/v2/apps", { id: "/race/app", cmd: `sleep ${i + 1}`, instances: 0 })));
    await Promise.all(busy);
    expect(answers.map((a) => a.status).sort()).toEqual([201, 409, 409, 409, 409, 409]);
    expect((await m.api("GET", "/v2/apps/race/app/versions")).body.versions).toHaveLength(1);
    const groups = await Promise.all(Array.from({ length: 6 }, () => m.api("POST", "/v2/groups", { id: "/race/grp", apps: [{ id: "a", cmd: "sleep 1", instances: 0 }] })));
    expect(groups.map((a) => a.status).sort()).toEqual([201, 409, 409, 409, 409, 409]);
    expect((await m.api("GET", "/v2/apps/race/grp/a/versions")).body.versions).toHaveLength(1);
    expect((await m.api("DELETE", "/v2/groups/race")).status).toBe(200);
  });

  it("partial updates of one app each apply to the app as the updates before them left it", async () => {
    expect((await m.api("POST", "/v2/apps", { id: "/merge/app", cmd: "sleep 1", instances: 0, labels: {} })).status).toBe(201);
    const busy = Array.from({ length: 20 }, (_, i) => m.api("POST", "/v2/apps", { id: `/merge/busy${i}`, cmd: "sleep 1", instances: 0 }));
    const updates = await Promise.all([
      m.api("PATCH", "/v2/apps/merge/app?force=true", { cmd: "sleep 9" }),
      m.api("PUT", "/v2/apps/merge/app?force=true", { labels: { a: "1" } }),
      m.api("PATCH", "/v2/apps/merge/app?force=true", { mem: 64 }),
    ]);
    await Promise.all(busy);
    expect(updates.map((u) => u.status)).toEqual([200, 200, 200]);
    const app = (await m.api("GET", "/v2/apps/merge/app")).body.app;
    expect([app.cmd, app.labels, app.mem]).toEqual(["sleep 9", { a: "1" }, 64]);
    expect((await m.api("DELETE", "/v2/groups/merge")).status).toBe(200);
  });
});

/** A server on a core of its own, whose input queue stays closed until `release`: requests queue up in a known order. */
function gatedServer() {
  const core = new MarathonCore(new SeededRng(5));
  const clock = new ManualClock(1_700_000_000_000);
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let queue: Promise<unknown> = Promise.resolve();
  let queued = 0;
  const server = standaloneHttp(core, {
    clock,
    input: <T,>(fn: () => T) => {
      queued++;
      const run = queue.then(async () => {
        await gate;
        clock.advance(1000);
        return fn();
      });
      queue = run.catch(() => undefined);
      return run;
    },
  });

  const app = (body: Record<string, unknown>) => (validateApp(body) as { app: NormalizedApp }).app;
  const send = (method: "POST" | "PUT" | "PATCH" | "DELETE", url: string, body?: unknown) =>
    server.inject({ method, url, ...(body !== undefined ? { payload: JSON.stringify(body), headers: { "content-type": "application/json" } } : {}) });
  return { core, clock, server, app, send, queued: () => queued, release };
}

describe("concurrent group updates", () => {
  it("a PUT of a group's apps keeps the dependencies a PUT queued before it gave the group", async () => {
    expect((await m.api("POST", "/v2/groups", { id: "/deps", apps: [{ id: "a", cmd: "sleep 1", instances: 0 }] })).status).toBe(201);
    const busy = Array.from({ length: 20 }, (_, i) => m.api("POST", "/v2/apps", { id: `/depsbusy/b${i}`, cmd: "sleep 1", instances: 0 }));
    const dependencies = m.api("PUT", "/v2/groups/deps?force=true", { dependencies: ["/depsbusy"] });
    const apps = [1, 2, 3].map((n) => m.api("PUT", "/v2/groups/deps?force=true", { apps: [{ id: "a", cmd: `sleep ${n + 1}`, instances: 0 }] }));
    const answers = await Promise.all([dependencies, ...apps]);
    await Promise.all(busy);
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200]);
    expect((await m.api("GET", "/v2/groups/deps")).body.dependencies).toEqual(["/depsbusy"]);
    expect((await m.api("DELETE", "/v2/groups/deps")).status).toBe(200);
    expect((await m.api("DELETE", "/v2/groups/depsbusy")).status).toBe(200);
  });

  it("a DELETE of a group removes the apps created under it by writes queued before it", async () => {
    const { core, clock, server, app, send, queued, release } = gatedServer();
    core.deploy([{ app: app({ id: "/gdel/a", cmd: "sleep 1", instances: 0 }) }], {}, clock.now(), { put: [{ id: "/gdel", dependencies: [] }] });
    const late = send("POST", "/v2/apps", { id: "/gdel/late", cmd: "sleep 1", instances: 0 });
    await eventually(async () => queued() === 1, 5_000, "the create to be queued");
    const removal = send("DELETE", "/v2/groups/gdel?force=true");
    await eventually(async () => queued() === 2, 5_000, "the removal to be queued");
    release();
    expect((await late).statusCode).toBe(201);
    expect((await removal).statusCode).toBe(200);
    expect(core.appList().map((r) => r.app.id)).toEqual([]);
    expect(core.groupExists("/gdel")).toBe(false);
    await server.close();
  });
});

describe("concurrent app updates", () => {
  it("a restart keeps the changes of an update queued before it", async () => {
    const { core, clock, server, app, send, queued, release } = gatedServer();
    core.putApp(app({ id: "/rs", cmd: "sleep 1", instances: 0 }), {}, clock.now());
    const update = send("PATCH", "/v2/apps/rs?force=true", { cmd: "sleep 2" });
    await eventually(async () => queued() === 1, 5_000, "the update to be queued");
    const restart = send("POST", "/v2/apps/rs/restart?force=true");
    await eventually(async () => queued() === 2, 5_000, "the restart to be queued");
    release();
    expect((await update).statusCode).toBe(200);
    expect((await restart).statusCode).toBe(200);
    expect(core.app("/rs")?.app.cmd).toBe("sleep 2");
    expect(core.app("/rs")?.versions).toHaveLength(3);
    await server.close();
  });
});

describe("ids of apps and groups", () => {
  it("answer 422 when one id would name an app and a group, and nothing is written", async () => {
    expect((await m.api("POST", "/v2/apps", { id: "/solo", cmd: "sleep 1", instances: 0 })).status).toBe(201);
    expect((await m.api("POST", "/v2/groups", { id: "/team", apps: [{ id: "api", cmd: "sleep 1", instances: 0 }] })).status).toBe(201);
    const versions = (await m.api("GET", "/v2/groups/versions")).body as string[];
    const refused = [
      await m.api("POST", "/v2/apps", { id: "/solo/sub", cmd: "sleep 1", instances: 0 }),
      await m.api("PUT", "/v2/apps/team", { cmd: "sleep 1", instances: 0 }),
      await m.api("POST", "/v2/groups", { id: "/solo", apps: [] }),
      await m.api("POST", "/v2/groups", { id: "/solo", groups: [{ id: "inner" }] }),
      await m.api("PUT", "/v2/groups/solo", { dependencies: [] }),
    ];
    for (const answer of refused) {
      expect(answer.status, JSON.stringify(answer.body)).toBe(422);
      expect(answer.body.message).toContain("Groups and Applications may not have the same identifier");
    }
    expect(refused[0]!.body.message).toContain("/solo/sub would be in /solo, which is an app");
    expect((await m.api("GET", "/v2/apps")).body.apps.map((a: { id: string }) => a.id)).toEqual(["/solo", "/team/api"]);
    expect((await m.api("GET", "/v2/groups")).body.groups.map((g: { id: string }) => g.id)).toEqual(["/team"]);
    expect((await m.api("GET", "/v2/groups/versions")).body).toEqual(versions);
    expect((await m.api("DELETE", "/v2/apps/solo")).status).toBe(200);
    expect((await m.api("DELETE", "/v2/groups/team")).status).toBe(200);
  });
});

describe("deployments without agents (they never finish on their own)", () => {
  it("rolls a new app back (removing it), cancels with force (202), and reports 409 with the blocking ids", async () => {
    const created = await m.api("POST", "/v2/apps", { id: "stuck", cmd: "sleep 1", instances: 1 });
    const id = created.headers.get("marathon-deployment-id");
    const listed = (await m.api("GET", "/v2/deployments")).body as Array<Record<string, unknown>>;
    expect(listed).toEqual([expect.objectContaining({ id, affectedApps: ["/stuck"], currentStep: 1, totalSteps: 1 })]);
    const locked = await m.api("PATCH", "/v2/apps/stuck", { instances: 2 });
    expect(locked.status).toBe(409);
    expect(locked.body.deployments).toEqual([{ id }]);
    const rollback = await m.api("DELETE", `/v2/deployments/${id}`);
    expect(rollback.status).toBe(200);
    expect(rollback.headers.get("marathon-deployment-id")).toBe(rollback.body.deploymentId);
    expect((await m.api("GET", "/v2/apps/stuck")).status).toBe(404);

    const again = await m.api("POST", "/v2/apps", { id: "stuck", cmd: "sleep 1", instances: 1 });
    const cancel = await m.api("DELETE", `/v2/deployments/${again.headers.get("marathon-deployment-id")}?force=true`);
    expect(cancel.status).toBe(202);
    expect((await m.api("GET", "/v2/deployments")).body).toEqual([]);
    expect((await m.api("GET", "/v2/apps/stuck")).body.app.instances).toBe(1);
    const queue = (await m.api("GET", "/v2/queue")).body.queue as Array<{ app: { id: string }; count: number }>;
    expect(queue.map((q) => [q.app.id, q.count])).toEqual([["/stuck", 1]]);
    // DELETE /v2/apps defaults force to true.
    expect((await m.api("PUT", "/v2/apps/stuck", { instances: 2 })).status).toBe(200);
    expect((await m.api("DELETE", "/v2/apps/stuck")).status).toBe(200);
    expect((await m.api("GET", "/v2/apps/stuck")).status).toBe(404);
    expect((await m.api("GET", "/v2/deployments")).body).toEqual([]);
  });
});

describe("a group write that gives a deploying app as it is", () => {
  it("is not refused for it, leaves its deployment and version alone, and deploys only what changed", async () => {
    const a = { id: "a", cmd: "sleep 1", instances: 1 };
    expect((await m.api("POST", "/v2/groups", { id: "/same", apps: [{ id: "b", cmd: "sleep 1", instances: 0 }] })).status).toBe(201);
    await eventually(async () => ((await m.api("GET", "/v2/deployments")).body as unknown[]).length === 0, 5_000, "the group's deployment to end");
    // /same/a waits for an agent that never comes; then a write of the whole group changes /same/b.
    const created = await m.api("POST", "/v2/apps", { ...a, id: "/same/a" });
    expect(created.status).toBe(201);
    const stuck = created.headers.get("marathon-deployment-id");
    const before = (await m.api("GET", "/v2/apps/same/a")).body.app.version as string;
    const write = await m.api("PUT", "/v2/groups/same", { apps: [a, { id: "b", cmd: "sleep 2", instances: 0 }] });
    expect(write.status).toBe(200);
    expect((await m.api("GET", "/v2/apps/same/a")).body.app.version).toBe(before);
    const listed = (await m.api("GET", "/v2/deployments")).body as Array<{ id: string; affectedApps: string[] }>;
    expect(listed.map((d) => [d.id, d.affectedApps])).toEqual([[stuck, ["/same/a"]]]);
    expect((await m.api("GET", "/v2/apps/same/b")).body.app.cmd).toBe("sleep 2");
    expect((await m.api("DELETE", "/v2/groups/same?force=true")).status).toBe(200);
  });
});

describe("MarathonClient", () => {
  it("deploys, updates, lists, shows, scales, restarts and removes; errors carry status and details", async () => {
    const client = new MarathonClient(m.url);
    const created = await client.deploy({ id: "cli-app", cmd: "sleep 1", instances: 0 });
    expect(created.created).toBe(true);
    expect(created.deploymentId).not.toBe("");
    await eventually(async () => (await client.deployments()).length === 0, 5_000, "the empty deployment to end");
    const updated = await client.deploy({ id: "/cli-app", cmd: "sleep 2", instances: 0 });
    expect(updated.created).toBe(false);
    expect((await client.show("cli-app")).cmd).toBe("sleep 2");
    expect((await client.list({ cmd: "sleep 2" })).map((a) => a.id)).toEqual(["/cli-app"]);
    await eventually(async () => (await client.deployments()).length === 0, 5_000, "the update to end");
    expect((await client.scale("cli-app", 0)).deploymentId).toBeDefined();
    await eventually(async () => (await client.deployments()).length === 0, 5_000, "the scale to end");
    expect((await client.restart("/cli-app")).version).toBeDefined();
    expect(await client.tasks("cli-app")).toEqual([]);
    expect(await client.queue()).toEqual([]);
    await client.remove("cli-app");
    await expect(client.show("cli-app")).rejects.toMatchObject({ name: "MarathonApiError", status: 404 });
    const invalid = await client.deploy({ id: "bad", cmd: "x", instances: -1 }).catch((err: unknown) => err as MarathonApiError);
    expect(invalid).toBeInstanceOf(MarathonApiError);
    expect((invalid as MarathonApiError).status).toBe(422);
    expect((invalid as MarathonApiError).detailLines().join("\n")).toContain("/instances");
    await expect(new MarathonClient("http://127.0.0.1:1").list()).rejects.toMatchObject({ status: 0 });
  });
});

describe("generated request bodies", () => {
  const bodies = fc.oneof(
    fc.json(),
    fc.string(),
    fc.record(
      {
        id: fc.oneof(fc.constantFrom("fc", "/fc/x", "", "..", "/"), fc.string()),
        cmd: fc.oneof(fc.string(), fc.integer()),
        instances: fc.oneof(fc.integer({ min: -3, max: 0 }), fc.double(), fc.string()),
        cpus: fc.oneof(fc.double(), fc.constant(0.01)),
        mem: fc.oneof(fc.double(), fc.constant(16)),
        constraints: fc.array(fc.array(fc.oneof(fc.string(), fc.constantFrom("hostname", "UNIQUE", "MAX_PER", "LIKE")), { maxLength: 4 }), { maxLength: 3 }),
        portDefinitions: fc.array(fc.record({ port: fc.integer({ min: -5, max: 70_000 }), name: fc.string() }, { requiredKeys: [] }), { maxLength: 3 }),
        healthChecks: fc.array(fc.dictionary(fc.constantFrom("protocol", "portIndex", "path", "intervalSeconds"), fc.jsonValue()), { maxLength: 2 }),
        env: fc.dictionary(fc.string(), fc.jsonValue()),
      },
      { requiredKeys: [] },
    ).map((o) => JSON.stringify(o)),
  );
  const routes: Array<[string, string]> = [
    ["POST", "/v2/apps"],
    ["PUT", "/v2/apps/fc"],
    ["PATCH", "/v2/apps/fc"],
    ["POST", "/v2/tasks/delete"],
    ["PUT", "/v2/apps/fc?partialUpdate=false"],
    ["PUT", "/v2/apps"],
    ["PATCH", "/v2/apps"],
  ];

  it("never answer 5xx", async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...routes), bodies, async ([method, path], generated) => {
        // The batch routes take a list of apps.
        const body = path === "/v2/apps" && generated.startsWith("{") ? `[${generated}]` : generated;
        const answer = await m.api(method, path, body);
        expect(answer.status, `${method} ${path} ${body} -> ${JSON.stringify(answer.body)}`).toBeLessThan(500);
      }),
      { numRuns: 150 },
    );
  });
});
