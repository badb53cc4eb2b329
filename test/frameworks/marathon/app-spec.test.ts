import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { APP_DEFAULTS, CMD_OR_ARGS_MESSAGE, isRollbackRequest, validateApp, validateAppUpdate, type NormalizedApp } from "../../../frameworks/marathon/app-spec.ts";
import { INVALID_JSON, OBJECT_NOT_VALID, parseJsonBody, type ValidationFailure } from "../../../frameworks/marathon/validation.ts";
import { fixtureArray, fixtureObject } from "./fixtures.ts";
import { invalidSpecs } from "./invalid-specs.ts";

type Body = Record<string, unknown>;

const base: Body = { id: "web", cmd: "sleep 100" };

function valid(body: unknown, options?: Parameters<typeof validateApp>[1]): { app: NormalizedApp; unknownFields: string[] } {
  const result = validateApp(body, options);
  if (!result.ok) throw new Error(`expected a valid app, got ${JSON.stringify(result.body)}`);
  return result;
}

function invalid(body: unknown, options?: Parameters<typeof validateApp>[1]): ValidationFailure {
  const result = validateApp(body, options);
  if (result.ok) throw new Error(`expected a 422 for ${JSON.stringify(body)}`);
  return result;
}

function errorsAt(failure: ValidationFailure, path: string): string[] {
  return failure.body.details?.find((d) => d.path === path)?.errors ?? [];
}


describe("validateApp: invalid definitions", () => {
  it("has a broad table of invalid specs", () => {
    expect(invalidSpecs.length).toBeGreaterThanOrEqual(25);
  });

  it.each(invalidSpecs)("%s answers 422 at the exact path", (_name, body, path, message, fragment) => {
    const failure = invalid(body);
    expect(failure.status).toBe(422);
    expect(failure.body.message).toBe(message);
    const errors = errorsAt(failure, path);
    expect(errors, `details: ${JSON.stringify(failure.body.details)}`).not.toHaveLength(0);
    expect(errors.join(" | ")).toContain(fragment);
  });

  it("reports every problem at once, grouped by path", () => {
    const failure = invalid({ ...base, instances: -1, cpus: -1, constraints: [["hostname", "UNIQUE", "x"]], env: { S: { secret: "s" } } });
    expect(failure.body.details?.map((d) => d.path)).toEqual(expect.arrayContaining(["/instances", "/cpus", "/constraints(0)", "/env/S"]));
  });

  it("refuses both cmd and args with Marathon's message at the root", () => {
    expect(errorsAt(invalid({ ...base, args: ["x"] }), "/")).toEqual([CMD_OR_ARGS_MESSAGE]);
  });

  it("answers an image only on its own path, not also as 'nothing to run'", () => {
    const failure = invalid({ id: "nginx", container: { type: "DOCKER", docker: { image: "nginx:1" } } });
    expect(failure.body.details?.map((d) => d.path)).toEqual(["/container/docker/image"]);
  });

  it("rejects a docker section without an image too (never silently ignored)", () => {
    expect(errorsAt(invalid({ ...base, container: { type: "MESOS", docker: { forcePullImage: true } } }), "/container/docker")).not.toHaveLength(0);
  });
});

describe("validateApp: defaults", () => {
  it("fills every Marathon default for a minimal app", () => {
    const { app, unknownFields } = valid({ id: "/web", cmd: "python3 -m http.server $PORT0" });
    expect(unknownFields).toEqual([]);
    expect(app).toEqual({
      id: "/web",
      cmd: "python3 -m http.server $PORT0",
      instances: 1,
      cpus: 1,
      mem: 128,
      disk: 0,
      gpus: 0,
      executor: "",
      env: {},
      labels: {},
      constraints: [],
      role: "*",
      portDefinitions: [{ port: 0, protocol: "tcp", labels: {} }],
      requirePorts: false,
      fetch: [],
      healthChecks: [],
      readinessChecks: [],
      dependencies: [],
      upgradeStrategy: { minimumHealthCapacity: 1, maximumOverCapacity: 1 },
      backoffSeconds: 1,
      backoffFactor: 1.15,
      maxLaunchDelaySeconds: 300,
      killSelection: "YOUNGEST_FIRST",
      unreachableStrategy: { inactiveAfterSeconds: 0, expungeAfterSeconds: 0 },
    } satisfies NormalizedApp);
  });

  it("fills health check defaults and the single port's index", () => {
    const { app } = valid({ ...base, healthChecks: [{ protocol: "HTTP" }, { protocol: "TCP", port: 9000 }, { command: { value: "true" } }] });
    expect(app.healthChecks).toEqual([
      { protocol: "HTTP", path: "/", portIndex: 0, gracePeriodSeconds: 300, intervalSeconds: 60, timeoutSeconds: 20, maxConsecutiveFailures: 3, delaySeconds: 15, ignoreHttp1xx: false, ipProtocol: "IPv4" },
      { protocol: "TCP", port: 9000, gracePeriodSeconds: 300, intervalSeconds: 60, timeoutSeconds: 20, maxConsecutiveFailures: 3, delaySeconds: 15, ignoreHttp1xx: false, ipProtocol: "IPv4" },
      { protocol: "COMMAND", command: { value: "true" }, gracePeriodSeconds: 300, intervalSeconds: 60, timeoutSeconds: 20, maxConsecutiveFailures: 3, delaySeconds: 15, ignoreHttp1xx: false, ipProtocol: "IPv4" },
    ]);
    expect(APP_DEFAULTS.healthCheck).toMatchObject({ gracePeriodSeconds: 300, intervalSeconds: 60, timeoutSeconds: 20, maxConsecutiveFailures: 3 });
  });

  it("fills readiness check defaults", () => {
    const { app } = valid({ ...base, portDefinitions: [{ name: "http-api" }], readinessChecks: [{}] });
    expect(app.readinessChecks).toEqual([
      { name: "readinessCheck", protocol: "HTTP", path: "/", portName: "http-api", intervalSeconds: 30, timeoutSeconds: 10, httpStatusCodesForReady: [200], preserveLastResponse: false },
    ]);
  });

  it("fills partial upgrade and unreachable strategies and accepts 'disabled'", () => {
    expect(valid({ ...base, upgradeStrategy: { minimumHealthCapacity: 0.5 } }).app.upgradeStrategy).toEqual({ minimumHealthCapacity: 0.5, maximumOverCapacity: 1 });
    expect(valid({ ...base, unreachableStrategy: { expungeAfterSeconds: 600 } }).app.unreachableStrategy).toEqual({ inactiveAfterSeconds: 0, expungeAfterSeconds: 600 });
    expect(valid({ ...base, unreachableStrategy: "disabled" }).app.unreachableStrategy).toBe("disabled");
  });

  it("gives single-instance apps a 0/0 upgrade strategy", () => {
    const { app } = valid({ ...base, labels: { MARATHON_SINGLE_INSTANCE_APP: "true" } });
    expect(app.upgradeStrategy).toEqual({ minimumHealthCapacity: 0, maximumOverCapacity: 0 });
  });

  it("treats null as not given", () => {
    const { app } = valid({ ...base, args: null, instances: null, env: null, container: null, upgradeStrategy: null });
    expect(app.instances).toBe(1);
    expect(app.args).toBeUndefined();
  });

  it("folds deprecated ports and uris into portDefinitions and fetch", () => {
    const { app } = valid({ ...base, ports: [0, 8080], uris: ["https://example.com/app.tar.gz", "/opt/tool"] });
    expect(app.portDefinitions).toEqual([
      { port: 0, protocol: "tcp", labels: {} },
      { port: 8080, protocol: "tcp", labels: {} },
    ]);
    expect(app.fetch).toEqual([
      { uri: "https://example.com/app.tar.gz", executable: false, extract: true, cache: false },
      { uri: "/opt/tool", executable: false, extract: false, cache: false },
    ]);
  });

  it("keeps an explicit empty port list", () => {
    expect(valid({ ...base, portDefinitions: [] }).app.portDefinitions).toEqual([]);
  });

  it("accepts every constraint operator with Marathon's value rules", () => {
    const constraints = [
      ["hostname", "UNIQUE"],
      ["rack", "CLUSTER", "r1"],
      ["rack", "CLUSTER", ""],
      ["rack", "GROUP_BY"],
      ["rack", "GROUP_BY", "3"],
      ["hostname", "LIKE", "srv[0-9]+"],
      ["hostname", "UNLIKE", "bad.*"],
      ["rack", "MAX_PER", "2"],
      ["zone", "IS", "a"],
    ];
    expect(valid({ ...base, constraints }).app.constraints).toEqual(constraints);
  });

  it("accepts UNIQUE with an empty value, as in Marathon's own examples, and keeps it without one", () => {
    expect(valid({ ...base, constraints: [["hostname", "UNIQUE", ""]] }).app.constraints).toEqual([["hostname", "UNIQUE"]]);
    expect(errorsAt(invalid({ ...base, constraints: [["hostname", "UNIQUE", " "]] }), "/constraints(0)")).toEqual(["Value specified but not used"]);
  });

  it("accepts host volumes in a native MESOS container", () => {
    const { app } = valid({ ...base, container: { type: "MESOS", volumes: [{ containerPath: "data", hostPath: "/srv/data", mode: "RO" }] } });
    expect(app.container).toEqual({ type: "MESOS", volumes: [{ containerPath: "data", hostPath: "/srv/data", mode: "RO" }] });
  });
});

describe("validateApp: ids", () => {
  it("makes relative ids absolute against the base group", () => {
    expect(valid({ ...base, id: "frontend" }, { baseGroup: "/prod/web" }).app.id).toBe("/prod/web/frontend");
    expect(valid({ ...base, id: "../db" }, { baseGroup: "/prod/web" }).app.id).toBe("/prod/db");
    expect(valid({ ...base, id: "./a//b/" }).app.id).toBe("/a/b");
    expect(valid({ ...base, id: "/abs/olute" }, { baseGroup: "/prod" }).app.id).toBe("/abs/olute");
  });

  it("resolves relative dependencies against the app's own group", () => {
    expect(valid({ ...base, id: "/prod/web", dependencies: ["db", "/ops/logs", "../shared/cache"] }).app.dependencies).toEqual(["/prod/db", "/ops/logs", "/shared/cache"]);
  });

  it("takes the id from the URL and refuses a body that disagrees", () => {
    expect(valid({ cmd: "x" }, { pathId: "/from/url" }).app.id).toBe("/from/url");
    expect(valid({ id: "/from/url", cmd: "x" }, { pathId: "from/url" }).app.id).toBe("/from/url");
    expect(errorsAt(invalid({ id: "/other", cmd: "x" }, { pathId: "/from/url" }), "/id").join()).toContain("does not match");
  });

  it("allows the default role and the top-level group's role, and applies an enforced group role", () => {
    expect(valid({ ...base, id: "/dev/web", role: "dev" }).app.role).toBe("dev");
    expect(valid({ ...base, id: "/dev/web" }, { enforcedGroupRole: "dev" }).app.role).toBe("dev");
    expect(valid({ ...base, id: "/dev/web" }, { defaultRole: "marathon" }).app.role).toBe("marathon");
  });
});

describe("validateApp: unknown fields", () => {
  it("accepts, ignores and lists unknown fields at every level", () => {
    const { app, unknownFields } = valid({
      ...base,
      colour: "blue",
      healthChecks: [{ protocol: "TCP", portIndex: 0, flavour: "x" }],
      portDefinitions: [{ port: 0, extra: true }],
      container: { type: "MESOS", mystery: 1 },
    });
    // In the order the body lists them.
    expect(unknownFields).toEqual(["/colour", "/healthChecks(0)/flavour", "/portDefinitions(0)/extra", "/container/mystery"]);
    expect(app).not.toHaveProperty("colour");
  });

  it("does not report Marathon's own read-only fields", () => {
    const { unknownFields } = valid({ ...base, version: "2015-09-28T19:47:37.681Z", versionInfo: {}, tasksRunning: 2, deployments: [], tasks: [] });
    expect(unknownFields).toEqual([]);
  });

  it("keeps keys such as __proto__ as plain data", () => {
    const body = JSON.parse('{"id":"web","cmd":"x","env":{"__proto__":"v"},"labels":{"__proto__":"l"}}') as unknown;
    const { app } = valid(body);
    expect(Object.keys(app.env)).toEqual(["__proto__"]);
    expect(Object.getPrototypeOf(app.env)).toBe(Object.prototype);
  });
});

describe("Marathon's example definitions (fixtures)", () => {
  it("accepts the simple app and the HTTP-check app", () => {
    const simple = valid(fixtureObject("app-simple.json"));
    expect(simple.app).toMatchObject({ id: "/simple", cmd: "sleep 1000", instances: 2, cpus: 0.1, mem: 16, disk: 0 });
    const http = valid(fixtureObject("app-check-http.json"));
    expect(http.app.check).toEqual({ http: { portIndex: 0, path: "/", scheme: "HTTP" }, intervalSeconds: 60, timeoutSeconds: 20, delaySeconds: 15 });
    expect(http.app.portDefinitions).toEqual([{ port: 0, protocol: "tcp", name: "http", labels: {} }]);
  });

  it("accepts each app of the batch-create example", () => {
    const [sleep60, sleep120] = fixtureArray("apps-create.json").map((body) => valid(body).app);
    expect(sleep60?.dependencies).toEqual(["/test/sleep120", "/other/namespace/or/app"]);
    expect(sleep120).toMatchObject({ id: "/test/sleep120", instances: 2, cpus: 0.3, mem: 9 });
  });

  it("applies the patch examples to existing apps", () => {
    const existing = valid({ ...fixtureObject("app-simple.json"), id: "/foo" }).app;
    const patched = validateAppUpdate(existing, fixtureObject("app-patch.json"));
    expect(patched.ok && patched.app).toMatchObject({ id: "/foo", instances: 2, cmd: "sleep 1000" });
    for (const patch of fixtureArray("apps-patch.json")) {
      const current = valid({ id: String(patch.id), cmd: "sleep 1" }).app;
      const result = validateAppUpdate(current, patch);
      expect(result.ok).toBe(true);
    }
  });

  it("answers the full example only where it asks for what Corral does not do", () => {
    const failure = invalid(fixtureObject("app-full.json"));
    // Marathon itself refuses cmd with args; images, secrets and per-task IPs are not supported yet.
    expect(failure.body.details?.map((d) => d.path).sort()).toEqual(["/", "/container/docker/image", "/env/PASSWORD", "/ipAddress", "/secrets"]);
  });

  it("accepts the full example once those parts are taken out, with every field carried over", () => {
    const body = fixtureObject("app-full.json");
    for (const key of ["args", "container", "secrets", "ipAddress"]) delete body[key];
    delete (body.env as Body).PASSWORD;
    const { app, unknownFields } = valid(body);
    expect(unknownFields).toEqual([]);
    expect(app).toMatchObject({
      id: "/foo",
      cmd: "sleep 1000",
      instances: 2,
      acceptedResourceRoles: ["mesos_role"],
      constraints: [["hostname", "LIKE", "srv2.*"]],
      dependencies: ["/prod/group"],
      env: { XPS1: "Test", XPS2: "Rest" },
      labels: { owner: "zeus", note: "Away from olympus" },
      maxLaunchDelaySeconds: 3600,
      portDefinitions: [{ port: 0, protocol: "tcp", name: "http", labels: { vip: "192.168.0.1:80" } }],
      upgradeStrategy: { maximumOverCapacity: 1, minimumHealthCapacity: 1 },
      user: "root",
      taskKillGracePeriodSeconds: 30,
      tty: true,
      fetch: [
        { uri: "https://foo.com/setup.py", executable: false, extract: true, cache: false },
        { uri: "https://foo.com/archive.zip", executable: false, extract: true, cache: true, destPath: "newname.zip" },
      ],
    });
    expect(app.healthChecks[0]).toMatchObject({ protocol: "HTTP", path: "/", portIndex: 0, intervalSeconds: 20, ignoreHttp1xx: false });
    expect(app.readinessChecks[0]).toMatchObject({ name: "myReadyCheck", portName: "http", timeoutSeconds: 3, httpStatusCodesForReady: [200], preserveLastResponse: true });
  });
});

describe("validateAppUpdate", () => {
  const existing = valid({ id: "/api", args: ["serve"], ports: [0], uris: ["/opt/a"] }).app;

  it("replaces args when cmd is set (and the reverse)", () => {
    const result = validateAppUpdate(existing, { cmd: "serve --fast" });
    expect(result.ok && [result.app.cmd, result.app.args]).toEqual(["serve --fast", undefined]);
  });

  it("lets deprecated ports and uris replace the current definitions", () => {
    const result = validateAppUpdate(existing, { ports: [8080, 8081], uris: ["/opt/b"] });
    expect(result.ok && result.app.portDefinitions.map((p) => p.port)).toEqual([8080, 8081]);
    expect(result.ok && result.app.fetch.map((f) => f.uri)).toEqual(["/opt/b"]);
  });

  it("validates the merged result and reports the update's unknown fields", () => {
    const bad = validateAppUpdate(existing, { instances: -3 });
    expect(!bad.ok && bad.body.details?.[0]?.path).toBe("/instances");
    const odd = validateAppUpdate(existing, { instances: 3, sparkle: 1 });
    expect(odd.ok && odd.unknownFields).toEqual(["/sparkle"]);
    const moved = validateAppUpdate(existing, { id: "/elsewhere" });
    expect(moved.ok).toBe(false);
    expect(validateAppUpdate(existing, "nope").ok).toBe(false);
  });

  it("recognises Marathon's rollback request, which is not an update", () => {
    expect(isRollbackRequest({ version: "2015-09-28T19:47:37.681Z" })).toBe(true);
    expect(isRollbackRequest({ id: "/api", version: "2015-09-28T19:47:37.681Z" })).toBe(true);
    expect(isRollbackRequest({ version: "2015-09-28T19:47:37.681Z", instances: 2 })).toBe(false);
    expect(isRollbackRequest({ instances: 2 })).toBe(false);
  });
});

describe("parseJsonBody", () => {
  it("answers 400 Invalid JSON for text that is not JSON", () => {
    const result = parseJsonBody('{"id": "web", ');
    expect(result).toMatchObject({ ok: false, status: 400, body: { message: "Invalid JSON" } });
    expect(parseJsonBody("")).toMatchObject({ ok: false, status: 400 });
    expect(parseJsonBody('{"id":"x"}')).toEqual({ ok: true, value: { id: "x" } });
  });
});

// ---------------------------------------------------------------------------------------------
// Property tests: no input makes the validator throw; every answer is structured.
// ---------------------------------------------------------------------------------------------

function expectStructured(result: ReturnType<typeof validateApp>): void {
  if (result.ok) {
    expect(result.app.id.startsWith("/")).toBe(true);
    expect(Array.isArray(result.unknownFields)).toBe(true);
    return;
  }
  expect(result.status).toBe(422);
  expect([OBJECT_NOT_VALID, INVALID_JSON]).toContain(result.body.message);
  expect(result.body.details?.length).toBeGreaterThan(0);
  for (const detail of result.body.details ?? []) {
    expect(detail.path.startsWith("/")).toBe(true);
    expect(detail.errors.length).toBeGreaterThan(0);
    for (const error of detail.errors) expect(typeof error).toBe("string");
  }
}

/** A rich valid app exercising most fields (the full example minus what Corral refuses). */
function richApp(): Body {
  const body = fixtureObject("app-full.json");
  for (const key of ["args", "container", "secrets", "ipAddress"]) delete body[key];
  delete (body.env as Body).PASSWORD;
  body.container = { type: "MESOS", volumes: [{ containerPath: "data", hostPath: "/srv", mode: "RW" }] };
  body.unreachableStrategy = { inactiveAfterSeconds: 60, expungeAfterSeconds: 600 };
  body.killSelection = "OLDEST_FIRST";
  body.constraints = [["hostname", "UNIQUE"], ["rack", "GROUP_BY", "2"], ["rack", "MAX_PER", "3"]];
  return body;
}

type JsonPathStep = string | number;

/** Every path to a value inside `value` (objects and arrays), the root included. */
function allPaths(value: unknown, prefix: JsonPathStep[] = []): JsonPathStep[][] {
  const out: JsonPathStep[][] = [prefix];
  if (Array.isArray(value)) value.forEach((item, i) => out.push(...allPaths(item, [...prefix, i])));
  else if (typeof value === "object" && value !== null) for (const [k, v] of Object.entries(value)) out.push(...allPaths(v, [...prefix, k]));
  return out;
}

/** Replaces (or deletes, when `replacement` is undefined) the value at `path`. */
function mutate(root: unknown, path: JsonPathStep[], replacement: unknown): unknown {
  if (path.length === 0) return replacement;
  const copy = structuredClone(root) as Record<string | number, unknown>;
  let parent: Record<string | number, unknown> = copy;
  for (const step of path.slice(0, -1)) parent = parent[step] as Record<string | number, unknown>;
  const last = path[path.length - 1]!;
  if (replacement === undefined) {
    if (Array.isArray(parent)) parent.splice(Number(last), 1);
    else delete parent[last];
  } else parent[last] = replacement;
  return copy;
}

describe("validateApp: properties", () => {
  it("never throws on arbitrary JSON and always answers ok or a structured 422", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        expectStructured(validateApp(value));
      }),
      { numRuns: 500 },
    );
  });

  it("never throws on arbitrary objects with app-like keys", () => {
    const keys = ["id", "cmd", "args", "instances", "cpus", "env", "labels", "constraints", "portDefinitions", "healthChecks", "readinessChecks", "container", "upgradeStrategy", "unreachableStrategy", "fetch", "dependencies", "requirePorts", "ports", "uris", "check", "networks", "resourceLimits"];
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom(...keys), fc.jsonValue({ maxDepth: 3 })), (value) => {
        expectStructured(validateApp(value));
      }),
      { numRuns: 500 },
    );
  });

  it("never throws on random mutations of valid specs", () => {
    const seeds = [richApp(), fixtureObject("app-simple.json"), fixtureObject("app-check-http.json"), fixtureObject("app-full.json")];
    for (const seed of seeds) expect(() => validateApp(seed)).not.toThrow();
    const mutation = fc
      .constantFrom(...seeds)
      .chain((seed) =>
        fc.tuple(
          fc.constant(seed),
          fc.constantFrom(...allPaths(seed)),
          fc.oneof(fc.constant(undefined), fc.jsonValue({ maxDepth: 2 }), fc.constantFrom(-1, 0, 1.5, 70_000, "", "x", null, [], {}, [["hostname", "UNIQUE"]])),
        ),
      );
    fc.assert(
      fc.property(mutation, ([seed, path, replacement]) => {
        const mutated = mutate(seed, path, replacement);
        expectStructured(validateApp(mutated));
        const existing = valid(richApp()).app;
        expectStructured(validateAppUpdate(existing, mutated));
      }),
      { numRuns: 700 },
    );
  });

  it("is deterministic and idempotent: a normalised app validates to itself", () => {
    const { app } = valid(richApp());
    const again = valid(JSON.parse(JSON.stringify(app)) as unknown);
    expect(again.app).toEqual(app);
    expect(again.unknownFields).toEqual([]);
  });
});
