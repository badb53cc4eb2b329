import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CYCLE_MESSAGE, MAX_GROUP_DEPTH, validateGroup, type NormalizedGroup } from "../../../frameworks/marathon/group-spec.ts";
import { INVALID_JSON, OBJECT_NOT_VALID, type ValidationFailure } from "../../../frameworks/marathon/validation.ts";
import { fixtureObject } from "./fixtures.ts";

type Body = Record<string, unknown>;

function valid(body: unknown, options?: Parameters<typeof validateGroup>[1]): { group: NormalizedGroup; unknownFields: string[] } {
  const result = validateGroup(body, options);
  if (!result.ok) throw new Error(`expected a valid group, got ${JSON.stringify(result.body)}`);
  return result;
}

function invalid(body: unknown, options?: Parameters<typeof validateGroup>[1]): ValidationFailure {
  const result = validateGroup(body, options);
  if (result.ok) throw new Error(`expected a 422 for ${JSON.stringify(body)}`);
  return result;
}

function paths(failure: ValidationFailure): string[] {
  return failure.body.details?.map((d) => d.path) ?? [];
}

/** The documented group, with its docker containers swapped for commands Corral can run. */
function runnableGroupFixture(): Body {
  const body = fixtureObject("group.json");
  const visit = (group: Body): void => {
    for (const app of (group.apps as Body[] | undefined) ?? []) {
      delete app.container;
      app.cmd = "./run.sh";
    }
    for (const child of (group.groups as Body[] | undefined) ?? []) visit(child);
  };
  visit(body);
  return body;
}

describe("validateGroup", () => {
  it("answers the documented group only where its apps use docker images", () => {
    const failure = invalid(fixtureObject("group.json"));
    expect(failure.status).toBe(422);
    expect(paths(failure)).toEqual([
      "/groups(0)/apps(0)/container/docker/image",
      "/groups(0)/apps(1)/container/docker/image",
      "/groups(0)/groups(1)/apps(0)/container/docker/image",
    ]);
  });

  it("accepts the documented group once its apps run commands, with every app normalised", () => {
    const { group, unknownFields } = valid(runnableGroupFixture());
    expect(unknownFields).toEqual([]);
    expect(group.id).toBe("/");
    expect(group.version).toBeUndefined();
    const tools = group.groups[0]!;
    expect(tools.id).toBe("/tools");
    expect(tools.apps.map((a) => a.id)).toEqual(["/tools/oauth-server", "/tools/datadog-agent"]);
    expect(tools.apps[0]).toMatchObject({
      instances: 2,
      constraints: [["hostname", "UNIQUE"]],
      portDefinitions: [{ port: 1980, protocol: "tcp", labels: {} }],
      upgradeStrategy: { minimumHealthCapacity: 0.5, maximumOverCapacity: 0 },
      maxLaunchDelaySeconds: 3600,
    });
    expect(tools.groups.map((g) => g.id)).toEqual(["/tools/log", "/tools/docker"]);
    expect(tools.groups[1]!.apps[0]!.id).toBe("/tools/docker/registry");
  });

  it("resolves relative ids against the enclosing group", () => {
    const { group } = valid({ id: "prod", apps: [{ id: "web", cmd: "x", dependencies: ["db"] }, { id: "db", cmd: "y" }], groups: [{ id: "batch", apps: [{ id: "/prod/batch/job", cmd: "z" }] }] });
    expect(group.id).toBe("/prod");
    expect(group.apps.map((a) => [a.id, a.dependencies])).toEqual([
      ["/prod/web", ["/prod/db"]],
      ["/prod/db", []],
    ]);
    expect(group.groups[0]!.apps[0]!.id).toBe("/prod/batch/job");
  });

  it("refuses nested ids that are not direct children, with Marathon's hint", () => {
    const failure = invalid({ id: "/prod", apps: [{ id: "/other/web", cmd: "x" }], groups: [{ id: "a/b" }] });
    expect(failure.body.details).toEqual([
      { path: "/apps(0)/id", errors: ["Identifier is not child of /prod. Hint: use relative paths."] },
      { path: "/groups(0)/id", errors: ["Identifier is not child of /prod. Hint: use relative paths."] },
    ]);
  });

  it("reports nested app errors with their full path", () => {
    const failure = invalid({ id: "/", groups: [{ id: "a", apps: [{ id: "x", cmd: "" }, { id: "y", cmd: "ok", instances: -1 }] }] });
    expect(paths(failure)).toEqual(["/groups(0)/apps(0)/cmd", "/groups(0)/apps(1)/instances"]);
  });

  it("requires ids of nested apps and groups, and of the body unless the URL gives one", () => {
    const failure = invalid({ apps: [{ cmd: "x" }], groups: [{}] });
    expect(failure.body.message).toBe(INVALID_JSON);
    expect(paths(failure)).toEqual(["/apps(0)/id", "/groups(0)/id"]);
    expect(paths(invalid({ apps: [] }))).toEqual(["/id"]);
    expect(valid({ apps: [{ id: "web", cmd: "x" }] }, { pathId: "/shop" }).group.apps[0]!.id).toBe("/shop/web");
  });

  it("refuses an app and a group with the same id", () => {
    const failure = invalid({ id: "/x", apps: [{ id: "a", cmd: "x" }], groups: [{ id: "a" }] });
    expect(failure.body.details).toEqual([{ path: "/groups(0)/id", errors: ["Groups and Applications may not have the same identifier: /x/a"] }]);
  });

  it("detects dependency cycles, through groups too", () => {
    const direct = invalid({ id: "/x", apps: [{ id: "a", cmd: "x", dependencies: ["b"] }, { id: "b", cmd: "x", dependencies: ["a"] }] });
    expect(direct.body.details).toEqual([{ path: "/", errors: [CYCLE_MESSAGE] }]);
    const viaGroup = invalid({
      id: "/x",
      groups: [
        { id: "front", dependencies: ["/x/back"], apps: [{ id: "web", cmd: "x" }] },
        { id: "back", apps: [{ id: "api", cmd: "x", dependencies: ["/x/front/web"] }] },
      ],
    });
    expect(paths(viaGroup)).toEqual(["/"]);
    expect(valid({ id: "/x", apps: [{ id: "a", cmd: "x", dependencies: ["b", "/elsewhere"] }, { id: "b", cmd: "x" }] }).group.apps.length).toBe(2);
  });

  it("treats scaleBy and version as requests of their own", () => {
    expect(valid({ id: "/x", scaleBy: 2 }).group.scaleBy).toBe(2);
    expect(valid({ id: "/x", version: "2015-09-17T10:38:20.875Z" }).group.version).toBe("2015-09-17T10:38:20.875Z");
    expect(paths(invalid({ id: "/x", scaleBy: -1 }))).toEqual(["/scaleBy"]);
    expect(paths(invalid({ id: "/x", scaleBy: 2, apps: [{ id: "a", cmd: "x" }] }))).toEqual(["/scaleBy"]);
    expect(paths(invalid({ id: "/x", scaleBy: 2, version: "v1" }))).toEqual(["/"]);
  });

  it("gives apps of a role-enforcing top-level group that role, and refuses foreign roles", () => {
    const { group } = valid({ id: "/dev", enforceRole: true, apps: [{ id: "web", cmd: "x" }], groups: [{ id: "batch", apps: [{ id: "job", cmd: "x" }] }] });
    expect(group.apps[0]!.role).toBe("dev");
    expect(group.groups[0]!.apps[0]!.role).toBe("dev");
    expect(valid({ id: "/dev", apps: [{ id: "web", cmd: "x" }] }).group.apps[0]!.role).toBe("*");
    expect(paths(invalid({ id: "/dev", apps: [{ id: "web", cmd: "x", role: "prod" }] }))).toEqual(["/apps(0)/role"]);
  });

  it("lists unknown fields of groups and their apps, and refuses pods", () => {
    const { unknownFields } = valid({ id: "/x", owner: "me", groups: [{ id: "y", colour: 1, apps: [{ id: "z", cmd: "x", flavour: 2 }] }] });
    expect(unknownFields).toEqual(["/owner", "/groups(0)/colour", "/groups(0)/apps(0)/flavour"]);
    expect(paths(invalid({ id: "/x", pods: [{ id: "p" }] }))).toEqual(["/pods"]);
  });

  it("answers wrong JSON types with Invalid JSON", () => {
    const failure = invalid({ id: "/x", apps: { id: "a" }, dependencies: "b" });
    expect(failure.body.message).toBe(INVALID_JSON);
    expect(failure.body.details).toEqual([
      { path: "/apps", errors: ["error.expected.jsarray"] },
      { path: "/dependencies", errors: ["error.expected.jsarray"] },
    ]);
  });

  it("bounds nesting depth instead of exhausting the stack", () => {
    const nest = (levels: number): Body => {
      let group: Body = { id: `g${levels}`, apps: [{ id: "app", cmd: "x" }] };
      for (let i = levels - 1; i >= 1; i--) group = { id: `g${i}`, groups: [group] };
      return group;
    };
    expect(valid(nest(MAX_GROUP_DEPTH)).group.id).toBe("/g1");
    const failure = invalid(nest(MAX_GROUP_DEPTH + 1));
    expect(failure.body.details?.[0]?.path).toBe(`${"/groups(0)".repeat(MAX_GROUP_DEPTH)}`);
    expect(() => validateGroup(nest(20_000))).not.toThrow();
  });

  it("never throws on arbitrary JSON or mutated groups", () => {
    const check = (result: ReturnType<typeof validateGroup>): void => {
      if (result.ok) return;
      expect(result.status).toBe(422);
      expect([OBJECT_NOT_VALID, INVALID_JSON]).toContain(result.body.message);
      expect(result.body.details?.length).toBeGreaterThan(0);
    };
    fc.assert(fc.property(fc.jsonValue(), (value) => check(validateGroup(value))), { numRuns: 300 });
    const app = fc.record({ id: fc.constantFrom("a", "b", "/x/c", "../d", "Bad"), cmd: fc.constantFrom("x", ""), dependencies: fc.array(fc.constantFrom("a", "b", "/x", "c")) });
    // Three levels of nesting, built explicitly so the size of a generated tree stays bounded.
    const groupOf = (children: fc.Arbitrary<unknown[]>) =>
      fc.record({
        id: fc.constantFrom("g", "h", "/x/g", "a"),
        apps: fc.array(app, { maxLength: 3 }),
        groups: children,
        dependencies: fc.array(fc.constantFrom("a", "g", "/x/g/a"), { maxLength: 3 }),
      });
    const leaf = groupOf(fc.constant([]));
    const group = groupOf(fc.array(groupOf(fc.array(leaf, { maxLength: 2 })), { maxLength: 2 }));
    fc.assert(
      fc.property(fc.array(group, { maxLength: 3 }), fc.array(app, { maxLength: 3 }), (groups, apps) => check(validateGroup({ id: "/x", groups, apps }))),
      { numRuns: 300 },
    );
  });
});
