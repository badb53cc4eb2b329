/**
 * `GET /v2/apps` writes its answer from cached definition bytes and, without embeds, the rest of
 * each app directly: it must answer exactly what `appJson` describes, whatever the apps hold.
 */
import { describe, expect, it } from "vitest";
import { Resources } from "../../../sdk/resources.ts";
import { SeededRng } from "../../../sdk/rng.ts";
import { validateApp, type NormalizedApp } from "../../../frameworks/marathon/app-spec.ts";
import { MarathonCore, type MarathonEffect } from "../../../frameworks/marathon/core.ts";
import { appJson } from "../../../frameworks/marathon/http.ts";
import { standaloneHttp } from "./standalone-http.ts";

function app(body: Record<string, unknown>): NormalizedApp {
  const result = validateApp({ cpus: 0.1, mem: 16, cmd: "sleep 1000", ...body });
  if (!result.ok) throw new Error(JSON.stringify(result.body));
  return result.app;
}

/** A core with apps in several situations: deploying, running, failed, idle, with non-ASCII text. */
function populatedCore(): { core: MarathonCore; now: number } {
  const core = new MarathonCore(new SeededRng(3));
  const now = 1_700_000_000_000;
  core.putApp(app({ id: "/shop/web", instances: 2, labels: { tier: "front", "naïve": "ünïcode ✓" } }), {}, now);
  core.putApp(app({ id: "/shop/db", instances: 1, healthChecks: [{ protocol: "COMMAND", command: { value: "true" } }] }), {}, now);
  core.putApp(app({ id: "/idle", instances: 0, env: { GREETING: "grüß dich" } }), {}, now);
  core.putApp(app({ id: "/waiting", instances: 3, constraints: [["hostname", "UNIQUE"]] }), {}, now);
  const offers = ["h1", "h2"].map((h, i) => ({ id: `o${i}`, agentId: `agent-${h}`, hostname: h, role: "default", resources: Resources.parse("cpus:8;mem:8192;disk:1000;ports:[31000-31999]"), attributes: {} }));
  const launched = core.offers(offers, now).flatMap((e: MarathonEffect) => (e.type === "launch" ? e.tasks : []));
  // In id order: /shop/db (healthy), /shop/web (one failed, one starting), /waiting (running).
  for (const [n, task] of launched.entries()) {
    const state = n === 1 ? "TASK_FAILED" : n === 2 ? "TASK_STARTING" : "TASK_RUNNING";
    const health = n === 0 ? { healthy: true, reason: "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED" } : {};
    core.statusUpdate({ taskId: task.taskId, state, agentId: task.agentId, message: n === 1 ? "exited: ☹" : "", ...health }, now + 1);
  }
  expect(core.taskCounts("/shop/db").tasksHealthy).toBe(1);
  expect(core.lastTaskFailure("/shop/web")).toBeDefined();
  expect(core.deploymentOf("/waiting")).toBeDefined();
  return { core, now };
}

function http(core: MarathonCore, now: number) {
  return standaloneHttp(core, { clock: { now: () => now } });
}

describe("GET /v2/apps", () => {
  it.each(["", "?embed=apps.tasks", "?embed=apps.lastTaskFailure&embed=apps.deployments", "?id=shop"])("answers appJson for every app (%s)", async (query) => {
    const { core, now } = populatedCore();
    const server = http(core, now);
    const embed = new URLSearchParams(query.slice(1)).getAll("embed");
    const wanted = core.appList().filter((r) => !query.startsWith("?id=") || r.app.id.includes("shop"));
    for (let round = 0; round < 2; round++) {
      // Twice: the second answer comes from the cached definitions.
      const answer = await server.inject({ method: "GET", url: `/v2/apps${query}` });
      expect(answer.statusCode).toBe(200);
      expect(answer.headers["content-type"]).toMatch(/^application\/json/);
      expect(Number(answer.headers["content-length"])).toBe(answer.rawPayload.length);
      expect(JSON.parse(answer.body)).toEqual(JSON.parse(JSON.stringify({ apps: wanted.map((r) => appJson(core, r, new Set(embed), "apps.")) })));
    }
    await server.close();
  });

  it("answers intact over a socket while its answer buffer is reused, also to concurrent requests", async () => {
    const { core, now } = populatedCore();
    const server = http(core, now);
    await server.listen({ host: "127.0.0.1", port: 0 });
    const { port } = server.server.address() as { port: number };
    try {
      for (let round = 0; round < 5; round++) {
        // Something changes between rounds, so each round's answer differs from the last.
        if (round > 0) core.putApp(app({ id: "/idle", instances: round, env: { ROUND: "x".repeat(round * 100) } }), { force: true }, now + round);
        const expected = JSON.parse(JSON.stringify({ apps: core.appList().map((r) => appJson(core, r, new Set(), "apps.")) }));
        const answers = await Promise.all(Array.from({ length: 4 }, () => fetch(`http://127.0.0.1:${port}/v2/apps`).then((r) => r.json())));
        for (const answer of answers) expect(answer).toEqual(expected);
      }
    } finally {
      await server.close();
    }
  });
});
