import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { renderAgentMetrics, renderContainerMetrics } from "../../agent/agent-http.ts";
import {
  bytesToHex,
  containerResourcesOf,
  DEFAULT_PING_TIMEOUT_MS,
  hexToBytes,
  invalidTaskStatus,
  killGraceMs,
  launchFailureStatus,
  mergeWithDetected,
  missingStandardResources,
  parseAgentResources,
  pingTimeoutMs,
  planLaunch,
  registrationDelayMs,
  sandboxPath,
  terminationStatus,
  toWireStatus,
} from "../../agent/agent-logic.ts";
import { pathIdProblem } from "../../sdk/task-key.ts";
import type { StatusUpdateManagerStats } from "../../agent/status-updates.ts";
import { Resources } from "../../sdk/resources.ts";
import { DropCounter, encodeEnvelope } from "../../sdk/wire/codec.ts";
import type { FrameworkInfo, TaskInfo } from "../../sdk/wire/types.ts";

const framework: FrameworkInfo = {
  id: "fw-1",
  name: "test",
  roles: ["*"],
  principal: "",
  failoverTimeoutSeconds: 0,
  checkpoint: false,
  partitionAware: false,
  hostname: "",
};

function task(overrides: Partial<TaskInfo> = {}): TaskInfo {
  return {
    taskId: "web.1",
    name: "web",
    agentId: "agent-1",
    resources: [
      { name: "cpus", role: "*", value: "scalar", scalar: 0.5 },
      { name: "mem", role: "web", value: "scalar", scalar: 128 },
      { name: "mem", role: "*", value: "scalar", scalar: 64 },
      { name: "disk", role: "*", value: "scalar", scalar: 10 },
      { name: "ports", role: "*", value: "ranges", ranges: { range: [{ begin: 31005, end: 31006 }, { begin: 31000, end: 31000 }] } },
    ],
    command: { value: "echo hi", arguments: [], shell: true, environment: { A: "1" }, user: "" },
    labels: {},
    ...overrides,
  };
}

const context = { agentId: "agent-1", workDir: "/var/lib/corral" };

describe("path-safe ids and sandboxes", () => {
  it("accepts Marathon- and Mesos-style ids", () => {
    for (const id of ["web.1", "app_group.marathon-7f3a", "3b0f-0001", "a@b+c", "x".repeat(200)]) expect(pathIdProblem(id)).toBeUndefined();
  });

  it("refuses anything that could leave the sandbox root or break the path", () => {
    for (const id of ["", ".", "..", "a/b", "../x", "a\\b", "a b", "é", "a\u0000b", "x".repeat(201)]) {
      expect(pathIdProblem(id), JSON.stringify(id)).toBeTypeOf("string");
    }
    expect(pathIdProblem(7)).toMatch(/string/);
  });

  it("builds <workDir>/sandboxes/<frameworkId>/<taskId>", () => {
    expect(sandboxPath("/w", "fw-1", "web.1")).toBe("/w/sandboxes/fw-1/web.1");
    expect(() => sandboxPath("/w", "..", "t")).toThrow(/frameworkId/);
    expect(() => sandboxPath("/w", "fw", "a/b")).toThrow(/taskId/);
  });

  it("never yields a path outside the sandboxes directory", () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), (fw, t) => {
        if (pathIdProblem(fw) !== undefined || pathIdProblem(t) !== undefined) return;
        const path = sandboxPath("/w", fw, t);
        expect(path.startsWith("/w/sandboxes/")).toBe(true);
        expect(path.split("/")).toHaveLength(5);
      }),
    );
  });
});

describe("planLaunch", () => {
  it("turns a valid run_task into a container spec", () => {
    const plan = planLaunch({ framework, task: task() }, context);
    expect(plan).toMatchObject({
      kind: "launch",
      frameworkId: "fw-1",
      taskId: "web.1",
      sandboxDir: "/var/lib/corral/sandboxes/fw-1/web.1",
      command: { shell: true, value: "echo hi" },
      env: { A: "1" },
      // mem sums over roles; ports are every port of every range, ascending.
      resources: { cpus: 0.5, memMb: 192, diskMb: 10, ports: [31000, 31005, 31006] },
      user: "",
    });
  });

  it("passes argv for non-shell commands", () => {
    const plan = planLaunch({ framework, task: task({ command: { value: "/bin/echo", arguments: ["echo", "x"], shell: false, environment: {}, user: "nobody" } }) }, context);
    expect(plan).toMatchObject({ kind: "launch", command: { shell: false, value: "/bin/echo", arguments: ["echo", "x"] }, user: "nobody" });
  });

  it("rejects, naming the field, what the agent cannot run", () => {
    const cases: Array<[TaskInfo, FrameworkInfo, RegExp]> = [
      [task({ taskId: "../x" }), framework, /task\.taskId/],
      [task(), { ...framework, id: "fw/1" }, /framework\.id/],
      [task({ agentId: "agent-2" }), framework, /task\.agentId.*agent-2/],
      [task({ resources: [{ name: "ports", role: "*", value: "ranges", ranges: { range: [{ begin: 0, end: 1 }] } }] }), framework, /ports/],
      [task({ resources: [{ name: "cpus", role: "*", value: "scalar", scalar: -1 }] }), framework, /resources/],
      [task({ resources: [{ name: "ports", role: "*", value: "ranges", ranges: { range: [{ begin: 5, end: 9 }, { begin: 8, end: 10 }] } }] }), framework, /overlapping/],
    ];
    for (const [t, fw, rule] of cases) {
      const plan = planLaunch({ framework: fw, task: t }, context);
      expect(plan.kind, rule.source).toBe("reject");
      if (plan.kind === "reject") expect(plan.message).toMatch(rule);
    }
  });

  it("drops what cannot even be answered", () => {
    expect(planLaunch({ framework: { ...framework, id: "" }, task: task() }, context)).toMatchObject({ kind: "drop" });
    expect(planLaunch({ framework }, context)).toMatchObject({ kind: "drop" });
  });

  it("bounds the number of ports", () => {
    const all = Resources.ranges("ports", [{ begin: 1, end: 65_535 }]);
    expect(containerResourcesOf(all).ports).toHaveLength(65_535);
  });
});

describe("task status decisions", () => {
  const base = { exitCode: null, signal: null, killed: false, message: "m" };

  it("maps a container's end onto FINISHED, FAILED or KILLED", () => {
    expect(terminationStatus({ ...base, exitCode: 0 })).toEqual({ state: "TASK_FINISHED", reason: "REASON_UNSPECIFIED", message: "m", exitCode: 0 });
    expect(terminationStatus({ ...base, exitCode: 3 })).toEqual({ state: "TASK_FAILED", reason: "REASON_COMMAND_EXECUTOR_FAILED", message: "m", exitCode: 3 });
    expect(terminationStatus({ ...base, signal: "SIGSEGV" })).toEqual({ state: "TASK_FAILED", reason: "REASON_COMMAND_EXECUTOR_FAILED", message: "m" });
    expect(terminationStatus({ ...base, signal: "SIGTERM", killed: true })).toEqual({ state: "TASK_KILLED", reason: "REASON_UNSPECIFIED", message: "m" });
    // Killed wins even when the task exited cleanly on SIGTERM.
    expect(terminationStatus({ ...base, exitCode: 0, killed: true }).state).toBe("TASK_KILLED");
  });

  it("keeps a known containerizer reason and ignores an unknown one", () => {
    expect(terminationStatus({ ...base, signal: "SIGKILL", reason: "REASON_CONTAINER_LIMITATION_MEMORY" }).reason).toBe("REASON_CONTAINER_LIMITATION_MEMORY");
    expect(terminationStatus({ ...base, exitCode: 1, reason: "REASON_MADE_UP" }).reason).toBe("REASON_COMMAND_EXECUTOR_FAILED");
  });

  it("reports launch failures and refusals", () => {
    expect(launchFailureStatus("boom", false)).toEqual({ state: "TASK_FAILED", reason: "REASON_CONTAINER_LAUNCH_FAILED", message: "boom" });
    expect(launchFailureStatus("boom", true)).toMatchObject({ state: "TASK_KILLED", reason: "REASON_TASK_KILLED_DURING_LAUNCH" });
    expect(invalidTaskStatus("bad")).toEqual({ state: "TASK_FAILED", reason: "REASON_TASK_INVALID", message: "bad" });
  });
});

describe("timing", () => {
  it("picks the kill's grace period, then the task's, then the default", () => {
    expect(killGraceMs(0.5, 10, 3000)).toBe(500);
    expect(killGraceMs(undefined, 10, 3000)).toBe(10_000);
    expect(killGraceMs(undefined, undefined, 3000)).toBe(3000);
    expect(killGraceMs(0, 10, 3000)).toBe(0);
    expect(killGraceMs(-1, Number.NaN, 3000)).toBe(3000);
  });

  it("backs off exponentially, randomised in the upper half, capped at 60 s", () => {
    expect(registrationDelayMs(0, 1000, 0)).toBe(500);
    expect(registrationDelayMs(0, 1000, 0.999_999)).toBe(1000);
    expect(registrationDelayMs(3, 1000, 0)).toBe(4000);
    expect(registrationDelayMs(100, 1000, 1)).toBe(60_000);
    fc.assert(
      fc.property(fc.nat(200), fc.integer({ min: 1, max: 100_000 }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (attempt, base, r) => {
        const ceiling = Math.min(60_000, base * 2 ** Math.min(attempt, 40));
        const delay = registrationDelayMs(attempt, base, r);
        expect(delay).toBeGreaterThanOrEqual(Math.floor(ceiling / 2));
        expect(delay).toBeLessThanOrEqual(Math.ceil(ceiling));
      }),
    );
  });

  it("falls back to 75 s when the master gives no ping timeout", () => {
    expect(pingTimeoutMs(0)).toBe(DEFAULT_PING_TIMEOUT_MS);
    expect(pingTimeoutMs(0.25)).toBe(250);
  });
});

describe("resources", () => {
  const detected = Resources.parse("cpus:8;mem:15000;disk:90000;ports:[31000-32000]");

  it("fills in the standard resources the operator left out", () => {
    expect(missingStandardResources(Resources.parse("cpus:2;gpus:1"))).toEqual(["mem", "disk", "ports"]);
    expect(mergeWithDetected(Resources.parse("cpus:2;gpus:1"), detected).toString()).toBe("cpus:2;disk:90000;gpus:1;mem:15000;ports:[31000-32000]");
  });

  it("counts a reserved resource as given", () => {
    expect(mergeWithDetected(Resources.parse("cpus(web):2"), detected).scalar("cpus")).toBe(2);
    expect(mergeWithDetected(Resources.empty(), detected).equals(detected)).toBe(true);
  });

  it("takes an operator's resources only with port numbers from 1 to 65535", () => {
    expect(parseAgentResources("cpus:2;ports(web):[1-80,31000-65535]").rangesSize("ports")).toBe(80 + 34536);
    expect(() => parseAgentResources("ports:[1-70000]")).toThrow("resources: ports [1-70000]: port numbers are 1 to 65535");
    expect(() => parseAgentResources("ports:[0-0]")).toThrow("resources: ports [0-0]: port numbers are 1 to 65535");
    expect(() => parseAgentResources("ports(web):[31000-31010,65535-65536]")).toThrow(/ports \[65535-65536\]/);
    // Ranges of other resources are not ports.
    expect(parseAgentResources("slots:[0-100000]").rangesSize("slots")).toBe(100001);
    expect(() => parseAgentResources("cpus:x")).toThrow(/^resources: .*cpus:x/);
  });
});

describe("wire status", () => {
  it("round-trips uuids through hex", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 32 }), (bytes) => {
        expect(hexToBytes(bytesToHex(bytes))).toEqual(bytes);
      }),
    );
    expect(() => hexToBytes("abc")).toThrow(RangeError);
  });

  it("builds a TaskStatus the codec accepts", () => {
    const status = toWireStatus(
      { taskId: "t", frameworkId: "fw-1", agentId: "old", state: "TASK_FAILED", uuid: "00ff", timestampMs: 1500, message: "x", reason: "REASON_COMMAND_EXECUTOR_FAILED", exitCode: 3 },
      "agent-1",
    );
    expect(status).toEqual({
      taskId: "t",
      state: "TASK_FAILED",
      message: "x",
      source: "SOURCE_AGENT",
      reason: "REASON_COMMAND_EXECUTOR_FAILED",
      agentId: "agent-1",
      frameworkId: "fw-1",
      uuid: new Uint8Array([0, 255]),
      timestamp: 1.5,
      exitCode: 3,
    });
    expect(() =>
      encodeEnvelope({ senderId: "agent-1", payload: "agentToMaster", agentToMaster: { kind: "statusUpdate", statusUpdate: { frameworkId: "fw-1", status } } }),
    ).not.toThrow();
    expect(toWireStatus({ taskId: "t", frameworkId: "f", agentId: "a", state: "TASK_RUNNING", uuid: "01", timestampMs: 0, reason: "nope" }, "a").reason).toBe(
      "REASON_UNSPECIFIED",
    );
  });
});

describe("metrics", () => {
  it("lists every task state and the agent's counters", () => {
    const stats: StatusUpdateManagerStats = {
      enqueued: 3, sent: 5, retried: 2, acknowledged: 1, duplicateUpdates: 0, updatesAfterTerminal: 0, ignoredAcks: 0, unknownTaskAcks: 0, ignoredTimers: 0,
    };
    const drops = new DropCounter();
    drops.record("corral.c.agent.a1.cmd", "decode_error");
    const text = renderAgentMetrics({
      tasks: [{ state: "TASK_RUNNING" }, { state: "TASK_RUNNING" }, { state: "TASK_FAILED" }],
      pendingStatusUpdates: 2,
      registered: true,
      statusUpdateStats: stats,
      registrationAttempts: 4,
      staleEpochMessages: 1,
      drops,
    });
    expect(text).toContain('corral_agent_tasks{state="TASK_RUNNING"} 2');
    expect(text).toContain('corral_agent_tasks{state="TASK_FAILED"} 1');
    expect(text).toContain('corral_agent_tasks{state="TASK_STAGING"} 0');
    expect(text).toContain("corral_agent_status_updates_pending 2");
    expect(text).toContain("corral_agent_registered 1");
    expect(text).toContain("corral_agent_status_updates_retried_total 2");
    expect(text).toContain("corral_agent_registration_attempts_total 4");
    expect(text).toContain('corral_bus_dropped_messages_total{kind="agent.cmd",reason="decode_error"} 1');
    expect(text.endsWith("\n")).toBe(true);
    // Every sample line belongs to a declared metric.
    const declared = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]));
    for (const line of text.split("\n").filter((l) => l !== "" && !l.startsWith("#"))) expect(declared.has(line.split(/[{ ]/)[0])).toBe(true);
  });

  it("names container usage by Prometheus's rules: cumulative figures are counters in seconds or events, ending in _total; nothing else does", () => {
    const statistics = {
      timestamp: 1_700_000_000, cpus_user_time_secs: 1.5, cpus_system_time_secs: 0.5, cpus_limit: 0.1, cpus_nr_periods: 40, cpus_nr_throttled: 3,
      cpus_throttled_time_secs: 0.2, mem_rss_bytes: 7e6, mem_total_bytes: 8e6, mem_max_bytes: 9e6, mem_limit_bytes: 134217728, processes: 2,
    };
    const text = renderAgentMetrics({
      tasks: [], pendingStatusUpdates: 0, registered: true, registrationAttempts: 1, staleEpochMessages: 0, drops: new DropCounter(),
      statusUpdateStats: { enqueued: 0, sent: 0, retried: 0, acknowledged: 0, duplicateUpdates: 0, updatesAfterTerminal: 0, ignoredAcks: 0, unknownTaskAcks: 0, ignoredTimers: 0 },
    }) + renderContainerMetrics([
      { framework_id: "fw-1", executor_id: "web.1", container_id: "c1", statistics },
      { framework_id: "fw-1", executor_id: "web.2", container_id: "c2", statistics: { ...statistics, cpus_user_time_secs: 2 } },
    ]);
    const types = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map(([, name, type]) => ({ name: name!, type: type! }));
    const helps = [...text.matchAll(/^# HELP (\S+) .+$/gm)].map(([, name]) => name!);
    expect(new Set(types.map((t) => t.name)).size).toBe(types.length);
    expect(helps.sort()).toEqual(types.map((t) => t.name).sort());
    for (const { name, type } of types) {
      expect({ name, type, total: name.endsWith("_total") }).toEqual({ name, type, total: type === "counter" });
      expect(name).not.toMatch(/_secs(_|$)/); // Prometheus's base unit is spelled out: _seconds.
    }
    const container = Object.fromEntries(types.filter((t) => t.name.startsWith("corral_agent_container_")).map((t) => [t.name, t.type]));
    expect(container).toEqual({
      corral_agent_container_cpus_user_seconds_total: "counter",
      corral_agent_container_cpus_system_seconds_total: "counter",
      corral_agent_container_cpus_periods_total: "counter",
      corral_agent_container_cpus_throttled_periods_total: "counter",
      corral_agent_container_cpus_throttled_seconds_total: "counter",
      corral_agent_container_cpus_limit: "gauge",
      corral_agent_container_mem_rss_bytes: "gauge",
      corral_agent_container_mem_total_bytes: "gauge",
      corral_agent_container_mem_max_bytes: "gauge",
      corral_agent_container_mem_limit_bytes: "gauge",
      corral_agent_container_processes: "gauge",
    });
    expect(text).toContain('corral_agent_container_cpus_user_seconds_total{framework_id="fw-1",task_id="web.2"} 2');
    expect(text).toContain('corral_agent_container_cpus_throttled_periods_total{framework_id="fw-1",task_id="web.1"} 3');
    expect(text).toMatch(/^# HELP corral_agent_container_cpus_throttled_periods_total .*CFS.*$/m);
  });
});
