/**
 * Marathon on a real test cluster (real nats-server, master and agents running real processes),
 * with a small HTTP client and the event stream recorded for tests to await.
 */
import { pino } from "pino";
import { createMarathon, type Marathon, type MarathonOptions } from "../../../frameworks/marathon/marathon.ts";
import type { MarathonEvent } from "../../../frameworks/marathon/core.ts";
import { EventLog, eventually } from "../../harness/events.ts";
import type { TestCluster } from "../../harness/cluster.ts";

export interface ApiAnswer {
  status: number;
  headers: Headers;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
}

export interface TestMarathon {
  readonly marathon: Marathon;
  readonly url: string;
  readonly events: EventLog<MarathonEvent>;
  api(method: string, path: string, body?: unknown): Promise<ApiAnswer>;
  /** Tasks of an app in a state (default TASK_RUNNING), as /v2/apps/{id}/tasks shows them. */
  tasks(appId: string, state?: string): Promise<Array<Record<string, unknown>>>;
  stop(): Promise<void>;
}

const QUIET = pino({ level: "error" });

export async function startMarathon(cluster: TestCluster, options: Partial<MarathonOptions> = {}): Promise<TestMarathon> {
  const transport = await cluster.connect("marathon");
  const marathon = createMarathon({
    transport,
    cluster: cluster.cluster,
    httpPort: 0,
    log: QUIET,
    tickIntervalMs: 100,
    failoverTimeoutSeconds: 60,
    ...options,
  });
  const events = new EventLog<MarathonEvent>();
  marathon.onEvent((e) => events.push(e));
  await marathon.start();
  const url = marathon.httpUrl();
  const api = async (method: string, path: string, body?: unknown): Promise<ApiAnswer> => {
    const init: RequestInit = { method };
    if (body !== undefined) {
      init.body = typeof body === "string" ? body : JSON.stringify(body);
      init.headers = { "content-type": "application/json" };
    }
    const response = await fetch(`${url}${path}`, init);
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = text === "" ? undefined : JSON.parse(text);
    } catch {
      // not JSON (e.g. /ping)
    }
    return { status: response.status, headers: response.headers, body: parsed };
  };
  return {
    marathon,
    url,
    events,
    api,
    async tasks(appId, state = "TASK_RUNNING") {
      const answer = await api("GET", `/v2/apps${appId}/tasks`);
      return (answer.body?.tasks ?? []).filter((t: Record<string, unknown>) => t.state === state);
    },
    async stop() {
      await marathon.stop();
    },
  };
}

/** Waits for `count` running tasks of the app and no deployment left. */
export async function waitForRunning(m: TestMarathon, appId: string, count: number, timeoutMs = 20_000): Promise<Array<Record<string, unknown>>> {
  return eventually(async () => {
    const tasks = await m.tasks(appId);
    const deployments = (await m.api("GET", "/v2/deployments")).body as unknown[];
    return tasks.length === count && deployments.length === 0 ? tasks : undefined;
  }, timeoutMs, `${count} running tasks of ${appId}`);
}

/** Deletes every app of `m` (forced) and waits, best effort, until no task is left: their processes end with the test. */
export async function removeAllApps(m: TestMarathon): Promise<void> {
  for (const app of ((await m.api("GET", "/v2/apps").catch(() => undefined))?.body?.apps ?? []) as Array<{ id: string }>) {
    await m.api("DELETE", `/v2/apps${app.id}?force=true`).catch(() => undefined);
  }
  await eventually(async () => ((await m.api("GET", "/v2/tasks")).body.tasks as unknown[]).length === 0, 15_000, "apps removed").catch(() => undefined);
}
