/**
 * The health checker (the shell that runs Marathon's own HTTP/HTTPS/TCP checks) and the readiness
 * checker against real local servers, feeding a real core: what an answer on the wire means for an
 * instance's health or readiness. Synchronisation is by waiting for the checker's report of each probe.
 */
import { readFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { Resources } from "../../../sdk/resources.ts";
import { SeededRng } from "../../../sdk/rng.ts";
import { validateApp, type NormalizedApp } from "../../../frameworks/marathon/app-spec.ts";
import { MarathonCore, type LaunchTask, type MarathonEffect, type ReadinessProbe } from "../../../frameworks/marathon/core.ts";
import { HealthChecker } from "../../../frameworks/marathon/health.ts";
import { ReadinessChecker } from "../../../frameworks/marathon/readiness.ts";
import { eventually } from "../../harness/events.ts";

function app(body: Record<string, unknown>): NormalizedApp {
  const result = validateApp({ cpus: 0.1, mem: 16, cmd: "sleep 1000", ...body });
  if (!result.ok) throw new Error(JSON.stringify(result.body));
  return result.app;
}

const launches = (effects: MarathonEffect[]): LaunchTask[] => effects.flatMap((e) => (e.type === "launch" ? e.tasks : []));
const kills = (effects: MarathonEffect[]): string[] => effects.flatMap((e) => (e.type === "kill" ? [e.taskId] : []));

const servers: Array<{ server: Server; sockets: Set<Socket> }> = [];
const checkers: Array<HealthChecker | ReadinessChecker> = [];
afterEach(async () => {
  for (const c of checkers.splice(0)) c.stop();
  for (const { server, sockets } of servers.splice(0)) {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
});

/** A raw TCP server on loopback that writes `answer.bytes` to each request, then closes unless `answer.hang`. */
async function rawServer(): Promise<{ port: number; answer: { bytes: string; hang: boolean } }> {
  const answer = { bytes: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", hang: false };
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => undefined);
    socket.on("close", () => sockets.delete(socket));
    socket.once("data", () => {
      socket.write(answer.bytes);
      if (!answer.hang) socket.end();
    });
  });
  servers.push({ server, sockets });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { port: (server.address() as { port: number }).port, answer };
}

/** A core running one instance of `spec`, a checker probing it on 127.0.0.1, and what each probe led to. */
function world(spec: Record<string, unknown>) {
  const core = new MarathonCore(new SeededRng(5));
  let now = 7_000_000;
  core.putApp(app(spec), {}, now);
  const offer = { id: "o1", agentId: "agent-h1", hostname: "h1", role: "default", resources: Resources.parse("cpus:8;mem:8192;disk:1000;ports:[31000-31999]"), attributes: {} };
  const [task] = launches(core.offers([offer], now));
  core.statusUpdate({ taskId: task!.taskId, state: "TASK_RUNNING", agentId: "agent-h1" }, now);
  const results: MarathonEffect[][] = [];
  const checker = new HealthChecker(core, { host: () => "127.0.0.1" }, (id, checkIndex, ok) => results.push(core.health(id, checkIndex, ok, now)));
  checkers.push(checker);
  return {
    core,
    taskId: task!.taskId,
    instance: () => core.instance(task!.taskId),
    /** Runs the next probe (an interval later) and answers what its report did to the core. */
    probe: async (): Promise<MarathonEffect[]> => {
      now += 60_000;
      const before = results.length;
      // The previous probe's slot frees just after its report: poll until this one starts and reports.
      return eventually(() => {
        checker.poll(now);
        return results.length > before ? results[before]! : undefined;
      }, 10_000, "the probe's report");
    },
  };
}

describe("HTTP health checks against a real server", () => {
  const PROCESSING = "HTTP/1.1 102 Processing\r\n\r\n";
  const OK = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  const check = (port: number, ignoreHttp1xx: boolean) => ({ protocol: "HTTP", port, path: "/health", gracePeriodSeconds: 0, intervalSeconds: 60, timeoutSeconds: 2, maxConsecutiveFailures: 1, ignoreHttp1xx });

  it("with ignoreHttp1xx, a 1xx answer is discarded: health stays as it was, healthy or not, and nothing is killed", async () => {
    const server = await rawServer();
    const w = world({ id: "ignoring", instances: 1, healthChecks: [{ ...check(server.port, true), maxConsecutiveFailures: 0 }] });
    expect(await w.probe()).not.toEqual([]);
    expect(w.instance()?.healthy).toBe(true);

    server.answer.bytes = PROCESSING;
    expect(await w.probe()).toEqual([]);
    expect(w.instance()?.healthy).toBe(true);
    server.answer.hang = true; // a 1xx and then nothing until the timeout: still the 1xx is the answer
    expect(await w.probe()).toEqual([]);
    expect(w.instance()?.healthy).toBe(true);

    server.answer.hang = false;
    server.answer.bytes = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    await w.probe();
    expect(w.instance()?.healthy).toBe(false);
    server.answer.bytes = PROCESSING;
    expect(await w.probe()).toEqual([]);
    expect(w.instance()?.healthy).toBe(false); // not turned healthy by a 1xx either
  });

  it("with ignoreHttp1xx, the final answer after a 1xx is what counts", async () => {
    const server = await rawServer();
    const w = world({ id: "final", instances: 1, healthChecks: [check(server.port, true)] });
    server.answer.bytes = PROCESSING + OK;
    await w.probe();
    expect(w.instance()?.healthy).toBe(true);
    server.answer.bytes = "HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    expect(kills(await w.probe())).toEqual([w.taskId]);
  });

  it("without ignoreHttp1xx, a 1xx answer is a failure (healthy is 200-399)", async () => {
    const server = await rawServer();
    const w = world({ id: "strict", instances: 1, healthChecks: [check(server.port, false)] });
    await w.probe();
    expect(w.instance()?.healthy).toBe(true);
    server.answer.bytes = PROCESSING;
    expect(kills(await w.probe())).toEqual([w.taskId]);
    expect(w.instance()?.healthy).toBe(false);
  });
});

describe("TCP health checks against a real server", () => {
  it("take a timeoutSeconds beyond what a socket timer holds without a warning on every probe", async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.name);
    process.on("warning", onWarning);
    try {
      const server = await rawServer();
      const w = world({ id: "tcp-long", instances: 1, healthChecks: [{ protocol: "TCP", port: server.port, gracePeriodSeconds: 0, intervalSeconds: 60, timeoutSeconds: 3_000_000, maxConsecutiveFailures: 1 }] });
      await w.probe();
      expect(w.instance()?.healthy).toBe(true);
      // Node reports the overflow from a later tick: let one pass before looking.
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings).not.toContain("TimeoutOverflowWarning");
    } finally {
      process.off("warning", onWarning);
    }
  });
});

describe("HTTPS health checks against a real server", () => {
  it("accept any certificate, as Marathon's do: a task's self-signed one is healthy", async () => {
    // A fixed self-signed certificate (fixtures/README.md): no CA vouches for it.
    const fixture = (name: string) => readFileSync(new URL(`./fixtures/${name}`, import.meta.url));
    const server = createHttpsServer({ key: fixture("self-signed.key"), cert: fixture("self-signed.pem") }, (_req, res) => res.end("ok"));
    servers.push({ server, sockets: new Set() });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as { port: number }).port;
    const w = world({ id: "tls", instances: 1, healthChecks: [{ protocol: "HTTPS", port, path: "/", gracePeriodSeconds: 0, intervalSeconds: 60, timeoutSeconds: 5, maxConsecutiveFailures: 1 }] });
    expect(kills(await w.probe())).toEqual([]);
    expect(w.instance()?.healthy).toBe(true);
  });
});

/** An HTTP server on loopback answering each path with `statuses[path]`, 404 for any other. */
async function pathServer(statuses: Record<string, number>): Promise<number> {
  const sockets = new Set<Socket>();
  const server = createHttpServer((req, res) => {
    res.statusCode = statuses[req.url ?? ""] ?? 404;
    res.end();
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  servers.push({ server, sockets });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as { port: number }).port;
}

describe("health checks during a rolling restart", () => {
  it("check each instance with the checks of the version it was launched with: a new path does not kill the old instances", async () => {
    const spec = (path: string) => ({
      id: "moved",
      instances: 1,
      cmd: `serve ${path}`,
      portDefinitions: [{ port: 0 }],
      upgradeStrategy: { minimumHealthCapacity: 1, maximumOverCapacity: 1 },
      healthChecks: [{ protocol: "HTTP", portIndex: 0, path, gracePeriodSeconds: 3600, intervalSeconds: 60, timeoutSeconds: 2, maxConsecutiveFailures: 1 }],
    });
    // Each instance is its own server: the old version serves /health, the new one /healthz.
    const oldPort = await pathServer({ "/health": 200 });
    const newStatuses: Record<string, number> = { "/healthz": 503 };
    const newPort = await pathServer(newStatuses);
    const offer = (port: number) => ({ id: `o${port}`, agentId: "agent-h1", hostname: "h1", role: "default", resources: Resources.parse(`cpus:8;mem:8192;disk:1000;ports:[${port}-${port}]`), attributes: {} });

    const core = new MarathonCore(new SeededRng(6));
    let now = 8_000_000;
    const reports: Array<{ id: string; effects: MarathonEffect[] }> = [];
    const checker = new HealthChecker(core, { host: () => "127.0.0.1" }, (id, checkIndex, answer) => reports.push({ id, effects: core.health(id, checkIndex, answer, now) }));
    checkers.push(checker);
    /** One round of checks an interval later: the effects of each instance's answer, by instance. */
    const round = async (instances: number): Promise<Map<string, MarathonEffect[]>> => {
      now += 60_000;
      const before = reports.length;
      await eventually(() => (checker.poll(now), reports.length >= before + instances ? true : undefined), 10_000, "the round's reports");
      return new Map(reports.slice(before).map((r) => [r.id, r.effects]));
    };

    core.putApp(app(spec("/health")), {}, now);
    const [old] = launches(core.offers([offer(oldPort)], now));
    core.statusUpdate({ taskId: old!.taskId, state: "TASK_RUNNING", agentId: "agent-h1" }, now);
    await round(1);
    expect(core.instance(old!.taskId)?.healthy).toBe(true);

    core.putApp(app(spec("/healthz")), {}, now);
    const [fresh] = launches(core.offers([offer(newPort)], now));
    core.statusUpdate({ taskId: fresh!.taskId, state: "TASK_RUNNING", agentId: "agent-h1" }, now);
    // The new instance is not healthy yet (in its grace period); the old one still answers its own /health.
    const second = await round(2);
    expect(kills(second.get(old!.taskId)!)).toEqual([]);
    expect(core.instance(old!.taskId)).toMatchObject({ goal: "running", healthy: true });
    expect(core.instance(fresh!.taskId)?.healthy).toBeUndefined();

    // Once the new one is healthy, the restart (not a health check) retires the old one.
    newStatuses["/healthz"] = 200;
    const third = await round(2);
    expect(core.instance(fresh!.taskId)?.healthy).toBe(true);
    const effects = [...third.values()].flat();
    expect(kills(effects)).toEqual([old!.taskId]);
    expect(effects.some((e) => e.type === "event" && e.event.eventType === "unhealthy_instance_kill_event")).toBe(false);
  });
});

describe("readiness probes against a real server", () => {
  // Both are valid (below 2^31 - 1 s) but beyond what setTimeout (2^31 - 1 ms) or AbortSignal.timeout (2^32 - 1 ms) take.
  it.each([3_000_000, 5_000_000])("a timeoutSeconds of %i neither throws nor times out at once: the answer counts", async (timeoutSeconds) => {
    const server = await rawServer();
    const core = new MarathonCore(new SeededRng(9));
    const now = 9_000_000;
    const readinessChecks = [{ path: "/ready", portName: "http-api", intervalSeconds: timeoutSeconds + 1, timeoutSeconds }];
    core.putApp(app({ id: "slowready", instances: 1, requirePorts: true, portDefinitions: [{ port: server.port, name: "http-api" }], readinessChecks }), {}, now);
    const offer = { id: "o1", agentId: "agent-h1", hostname: "h1", role: "default", resources: Resources.parse(`cpus:8;mem:8192;disk:1000;ports:[${server.port}-${server.port}]`), attributes: {} };
    const [task] = launches(core.offers([offer], now));
    core.statusUpdate({ taskId: task!.taskId, state: "TASK_RUNNING", agentId: "agent-h1" }, now);
    expect(core.readinessTargets().map((t) => t.port)).toEqual([server.port]);

    const reports: ReadinessProbe[] = [];
    const checker = new ReadinessChecker(core, { host: () => "127.0.0.1" }, (_id, probe) => reports.push(probe));
    checkers.push(checker);
    checker.poll(now);
    const [probe] = await eventually(() => (reports.length > 0 ? reports : undefined), 10_000, "the readiness report");
    expect(probe).toMatchObject({ ready: true, response: { status: 200 } });
  });
});
