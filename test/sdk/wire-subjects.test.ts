import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  ROLES,
  SUBJECTS,
  SubjectTokenError,
  agentCmdSubject,
  assertToken,
  clusterSubjects,
  frameworkEventsSubject,
  isValidToken,
  masterAgentSubject,
  masterLeaderSubject,
  masterSchedulerSubject,
  parseSubject,
  permissionsFor,
  subjectFor,
  subjectKind,
  subjectWildcard,
} from "../../sdk/wire/subjects.ts";
import { PAYLOAD_KINDS } from "../../sdk/wire/types.ts";

describe("subject builders", () => {
  it("build the documented subjects", () => {
    expect(masterSchedulerSubject("prod")).toBe("corral.prod.master.scheduler");
    expect(frameworkEventsSubject("prod", "fw-1")).toBe("corral.prod.framework.fw-1.events");
    expect(masterAgentSubject("prod", "a1-S0")).toBe("corral.prod.master.agent.a1-S0");
    expect(agentCmdSubject("prod", "a1-S0")).toBe("corral.prod.agent.a1-S0.cmd");
    expect(masterLeaderSubject("prod")).toBe("corral.prod.master.leader");
    // A framework with a principal calls, and hears its events, under its principal.
    expect(masterSchedulerSubject("prod", "team-a")).toBe("corral.prod.master.scheduler.team-a");
    expect(masterSchedulerSubject("prod", "")).toBe("corral.prod.master.scheduler");
    expect(frameworkEventsSubject("prod", "fw-1", "team-a")).toBe("corral.prod.framework.team-a.fw-1.events");
    expect(frameworkEventsSubject("prod", "fw-1", "")).toBe("corral.prod.framework.fw-1.events");
    expect(() => masterSchedulerSubject("prod", "team.a")).toThrow(/^principal: must not contain "."/);
  });

  it("bind to a cluster", () => {
    const s = clusterSubjects("dev");
    expect(s.agentCmd("a")).toBe("corral.dev.agent.a.cmd");
    expect(s.frameworkEvents("f")).toBe("corral.dev.framework.f.events");
    expect(s.masterScheduler()).toBe(masterSchedulerSubject("dev"));
    expect(s.masterAgent("a")).toBe("corral.dev.master.agent.a");
    expect(s.masterScheduler("p")).toBe("corral.dev.master.scheduler.p");
    expect(s.frameworkEvents("f", "p")).toBe("corral.dev.framework.p.f.events");
    expect(s.frameworkEvents("f", "")).toBe("corral.dev.framework.f.events");
  });

  it("give wildcards for per-id subjects", () => {
    expect(subjectWildcard("agentCmd", "prod")).toBe("corral.prod.agent.*.cmd");
    expect(subjectWildcard("frameworkEvents", "prod")).toBe("corral.prod.framework.*.events");
    expect(subjectWildcard("masterAgent", "prod")).toBe("corral.prod.master.agent.*");
    expect(subjectWildcard("principalScheduler", "prod")).toBe("corral.prod.master.scheduler.*");
    expect(subjectWildcard("principalFrameworkEvents", "prod")).toBe("corral.prod.framework.*.*.events");
  });

  it.each([
    ["", "must not be empty"],
    ["a.b", 'must not contain "."'],
    ["*", 'must not contain "*"'],
    ["a>", 'must not contain ">"'],
    ["a b", 'must not contain " "'],
    ["a\tb", "must not contain"],
    ["a\nb", "must not contain"],
    ["a\u0000", "must not contain"],
    ["x".repeat(129), "at most 128"],
  ])("reject the token %j", (bad, message) => {
    expect(isValidToken(bad)).toBe(false);
    expect(() => agentCmdSubject("prod", bad)).toThrow(SubjectTokenError);
    expect(() => agentCmdSubject("prod", bad)).toThrow(message);
    expect(() => masterSchedulerSubject(bad)).toThrow(/^cluster: /);
    expect(() => clusterSubjects(bad)).toThrow(SubjectTokenError);
  });

  it("name the offending argument", () => {
    try {
      frameworkEventsSubject("prod", "has.dot");
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(SubjectTokenError);
      expect((err as SubjectTokenError).field).toBe("frameworkId");
      expect((err as Error).message).toMatch(/^frameworkId: /);
    }
    expect(() => subjectFor("agentCmd", "prod")).toThrow(/^agentId: must be a string/);
    expect(() => assertToken(42, "x")).toThrow("x: must be a string, got number");
  });

  it("round-trip through parseSubject for any valid tokens (property)", () => {
    const token = fc.string({ minLength: 1, maxLength: 40 }).filter(isValidToken);
    fc.assert(
      fc.property(token, token, (cluster, id) => {
        expect(parseSubject(agentCmdSubject(cluster, id))).toMatchObject({ cluster, id, spec: SUBJECTS.agentCmd });
        expect(parseSubject(frameworkEventsSubject(cluster, id))).toMatchObject({ cluster, id, spec: SUBJECTS.frameworkEvents });
        expect(parseSubject(masterAgentSubject(cluster, id))).toEqual({ cluster, id, spec: SUBJECTS.masterAgent });
        expect(parseSubject(masterSchedulerSubject(cluster, id))).toEqual({ cluster, principal: id, spec: SUBJECTS.principalScheduler });
        expect(parseSubject(frameworkEventsSubject(cluster, id, `p-${id}`.slice(0, 128)))).toEqual({ cluster, id, principal: `p-${id}`.slice(0, 128), spec: SUBJECTS.principalFrameworkEvents });
      }),
    );
  });

  it("classify subjects for metrics", () => {
    expect(subjectKind("corral.prod.agent.a1.cmd")).toBe("agent.cmd");
    expect(subjectKind("corral.prod.master.scheduler")).toBe("master.scheduler");
    expect(subjectKind("corral.prod.master.scheduler.team-a")).toBe("master.scheduler.principal");
    expect(subjectKind("corral.prod.framework.team-a.fw-1.events")).toBe("framework.principal.events");
    expect(subjectKind("_INBOX.abc.def")).toBe("reply");
    expect(subjectKind("corral.prod.agent.a1.other")).toBe("unknown");
    expect(subjectKind("corral.prod")).toBe("unknown");
    expect(subjectKind("nats.other")).toBe("unknown");
  });
});

describe("clusterSubjects keeps what it builds", () => {
  it("gives subjectFor's subjects, also past its size and for ids seen again, and refuses bad ids as subjectFor does", () => {
    const s = clusterSubjects("c1", 2);
    for (const id of ["a1", "a1", "a2", "a3", "a1", "a3"]) expect(s.agentCmd(id)).toBe(agentCmdSubject("c1", id));
    expect(() => s.agentCmd("a.b")).toThrow(SubjectTokenError);
    expect(() => s.agentCmd("")).toThrow(SubjectTokenError);
    expect(clusterSubjects("c1").frameworkEvents("fw-1")).toBe(frameworkEventsSubject("c1", "fw-1"));
  });
});

describe("the subject table", () => {
  it("has unique shapes and kinds and only known roles and payloads", () => {
    const specs = Object.values(SUBJECTS);
    expect(new Set(specs.map((s) => s.tokens.join("."))).size).toBe(specs.length);
    expect(new Set(specs.map((s) => s.kind)).size).toBe(specs.length);
    for (const spec of specs) {
      expect(spec.publishers.every((r) => ROLES.includes(r))).toBe(true);
      expect(spec.subscribers.every((r) => ROLES.includes(r))).toBe(true);
      expect(spec.payloads.every((p) => PAYLOAD_KINDS.includes(p))).toBe(true);
      expect(spec.tokens.includes("{id}")).toBe(spec.idKind !== undefined);
      // A subject with a principal token is a principal's own; frameworks without one have twins of their own.
      if (spec.tokens.includes("{principal}")) expect(spec.principal).toBe("own");
      // Only a per-id subject can say whose name its publishers speak in.
      if (spec.senderIsId === true) expect(spec.idKind).toBeDefined();
    }
    expect(SUBJECTS.masterAgent.senderIsId).toBe(true);
  });
});

describe("permissions", () => {
  it("let an agent talk to the master only in its own name and hear only its own commands", () => {
    expect(permissionsFor("agent", "prod", { id: "a1" })).toEqual({
      publish: { allow: ["corral.prod.master.agent.a1"] },
      subscribe: { allow: ["corral.prod.agent.a1.cmd", "corral.prod.master.leader", "_INBOX.>"] },
    });
  });

  it("without an agent's id, let agents publish in any agent's name (the master still checks that a sender matches its subject)", () => {
    expect(permissionsFor("agent", "prod").publish.allow).toEqual(["corral.prod.master.agent.*"]);
  });

  it("let a framework call the master and hear only its own events", () => {
    const p = permissionsFor("framework", "prod", { id: "fw-1" });
    expect(p.publish.allow).toEqual(["corral.prod.master.scheduler"]);
    expect(p.subscribe.allow).toEqual(["corral.prod.framework.fw-1.events", "corral.prod.master.leader", "_INBOX.>"]);
    expect(p.allow_responses).toBeUndefined();
  });

  it("let a framework with a principal call only on its principal's subject and hear only its principal's events", () => {
    expect(permissionsFor("framework", "prod", { principal: "team-a" })).toEqual({
      publish: { allow: ["corral.prod.master.scheduler.team-a"] },
      subscribe: { allow: ["corral.prod.framework.team-a.*.events", "corral.prod.master.leader", "_INBOX.>"] },
    });
    expect(permissionsFor("framework", "prod", { principal: "team-a", id: "fw-1" }).subscribe.allow).toEqual([
      "corral.prod.framework.team-a.fw-1.events",
      "corral.prod.master.leader",
      "_INBOX.>",
    ]);
    expect(() => permissionsFor("framework", "prod", { principal: "team.a" })).toThrow(/^principal: /);
    expect(() => permissionsFor("agent", "prod", { principal: "team-a" })).toThrow(/^principal: is for the framework role only/);
  });

  it("let the master answer requests and reach every agent and framework", () => {
    const p = permissionsFor("master", "prod");
    expect(p.publish.allow.sort()).toEqual(
      ["corral.prod.agent.*.cmd", "corral.prod.framework.*.events", "corral.prod.framework.*.*.events", "corral.prod.master.leader"].sort(),
    );
    expect(p.subscribe.allow.sort()).toEqual(
      ["corral.prod.master.agent.*", "corral.prod.master.leader", "corral.prod.master.scheduler", "corral.prod.master.scheduler.*"].sort(),
    );
    expect(p.allow_responses).toBe(true);
  });

  it("never let an agent publish framework calls or a framework publish to agents", () => {
    const agent = permissionsFor("agent", "prod").publish.allow;
    const framework = permissionsFor("framework", "prod").publish.allow;
    expect(agent).not.toContain(masterSchedulerSubject("prod"));
    expect(framework.some((s) => s.startsWith("corral.prod.agent."))).toBe(false);
    expect(permissionsFor("operator", "prod").publish.allow).toEqual([]);
  });

  it("append extras and honour a custom inbox prefix", () => {
    const p = permissionsFor("framework", "prod", {
      inboxPrefix: "_INBOX_fw1",
      extra: { publish: ["$JS.API.>"], subscribe: ["$KV.marathon.>"] },
    });
    expect(p.publish.allow).toContain("$JS.API.>");
    expect(p.subscribe.allow).toContain("_INBOX_fw1.>");
    expect(p.subscribe.allow).toContain("$KV.marathon.>");
  });
});
