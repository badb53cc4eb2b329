/**
 * Runs the health checks Marathon runs itself (`HTTP`, `HTTPS`, `TCP`): each every
 * `intervalSeconds`, failing after `timeoutSeconds`, and hands every answer to the core
 * ({@link MarathonCore.health}), which decides what it means (grace period, consecutive failures,
 * healthy, kill). `COMMAND` and `MESOS_*` checks run on the agent and arrive in status updates instead.
 *
 * @module
 */

import { connect } from "node:net";
import type { HealthCheck } from "./app-spec.ts";
import { MARATHON_HEALTH_PROTOCOLS, type Instance, type MarathonCore } from "./core.ts";

/** Options of the health checker. */
export interface HealthCheckerOptions {
  /** The host to check an instance on. @default the instance's agent hostname */
  host?: (instance: Instance) => string;
  /** Checks running at once, at most. @default 256 */
  maxConcurrentChecks?: number;
}

interface CheckState {
  lastStartedMs: number;
  inFlight: boolean;
}

export class HealthChecker {
  /** Per instance, per check index. */
  private readonly states = new Map<string, CheckState[]>();
  private running = 0;
  private stopped = false;

  constructor(
    private readonly core: MarathonCore,
    private readonly options: HealthCheckerOptions,
    private readonly report: (instanceId: string, checkIndex: number, ok: boolean) => void,
  ) {}

  stop(): void {
    this.stopped = true;
  }

  /** Starts the checks that are due. */
  poll(nowMs: number): void {
    if (this.stopped) return;
    // Most apps have no check Marathon runs: then there is no instance to walk, only states to forget.
    if (!this.core.hasMarathonHealthChecks()) {
      this.states.clear();
      return;
    }
    const seen = new Set<string>();
    for (const instance of this.core.unorderedInstances()) {
      const record = this.core.app(instance.appId);
      if (!record || instance.state !== "running" || instance.goal !== "running") continue;
      const checks = record.app.healthChecks;
      if (!checks.some((c) => MARATHON_HEALTH_PROTOCOLS.has(c.protocol))) continue;
      seen.add(instance.id);
      let states = this.states.get(instance.id);
      if (!states) {
        states = checks.map(() => ({ lastStartedMs: -Infinity, inFlight: false }));
        this.states.set(instance.id, states);
      }
      checks.forEach((check, i) => {
        const state = states[i]!;
        if (!MARATHON_HEALTH_PROTOCOLS.has(check.protocol) || state.inFlight) return;
        if (nowMs - state.lastStartedMs < check.intervalSeconds * 1000) return;
        if (this.running >= (this.options.maxConcurrentChecks ?? 256)) return;
        state.lastStartedMs = nowMs;
        state.inFlight = true;
        this.running++;
        const current = states;
        void this.probe(instance, check)
          .then((ok) => {
            if (!this.stopped && this.states.get(instance.id) === current) this.report(instance.id, i, ok);
          })
          .finally(() => {
            state.inFlight = false;
            this.running--;
          });
      });
    }
    for (const id of this.states.keys()) if (!seen.has(id)) this.states.delete(id);
  }

  private probe(instance: Instance, check: HealthCheck): Promise<boolean> {
    const port = check.port ?? instance.hostPorts[check.portIndex ?? 0];
    if (port === undefined) return Promise.resolve(false);
    const host = this.options.host?.(instance) ?? instance.hostname;
    const timeoutMs = check.timeoutSeconds * 1000;
    if (check.protocol === "TCP") return tcpProbe(host, port, timeoutMs);
    const scheme = check.protocol === "HTTPS" ? "https" : "http";
    return httpProbe(`${scheme}://${host}:${port}${check.path ?? "/"}`, timeoutMs, check.ignoreHttp1xx);
  }
}

async function httpProbe(url: string, timeoutMs: number, ignore1xx: boolean): Promise<boolean> {
  const response = await httpGet(url, timeoutMs, 0);
  if (!response) return false;
  // Marathon: 2xx and 3xx are healthy; 1xx only counts when not ignored.
  if (response.status < 200) return ignore1xx;
  return response.status < 400;
}

/** An HTTP answer as probes keep it. */
export interface HttpAnswer {
  status: number;
  /** The Content-Type header ("" when absent). */
  contentType: string;
  /** The body as text, cut after `maxBodyBytes`. */
  body: string;
}

/**
 * GETs `url` (redirects are answers, not followed) within `timeoutMs`, reading at most
 * `maxBodyBytes` of the body; undefined when no answer came (refused, timed out, bad URL).
 */
export async function httpGet(url: string, timeoutMs: number, maxBodyBytes: number): Promise<HttpAnswer | undefined> {
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    const response = await fetch(url, { signal, redirect: "manual" });
    const chunks: Uint8Array[] = [];
    let size = 0;
    const reader = response.body?.getReader();
    while (reader && size < maxBodyBytes) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
    }
    await reader?.cancel().catch(() => undefined);
    const bytes = Buffer.concat(chunks).subarray(0, maxBodyBytes);
    return { status: response.status, contentType: response.headers.get("content-type") ?? "", body: bytes.toString("utf8") };
  } catch {
    return undefined;
  }
}

function tcpProbe(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}
