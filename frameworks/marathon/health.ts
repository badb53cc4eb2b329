/**
 * Runs the health checks Marathon runs itself (`HTTP`, `HTTPS`, `TCP`): each every
 * `intervalSeconds`, failing after `timeoutSeconds`, and hands every answer to the core
 * ({@link MarathonCore.health}), which decides what it means (grace period, consecutive failures,
 * healthy, kill). `COMMAND` and `MESOS_*` checks run on the agent and arrive in status updates instead.
 *
 * @module
 */

import { get as httpGetRequest, type ClientRequest, type IncomingMessage } from "node:http";
import { get as httpsGetRequest } from "node:https";
import { connect } from "node:net";
import { MAX_TIMEOUT_MS } from "../../sdk/clock.ts";
import type { HealthCheck } from "./app-spec.ts";
import { MARATHON_HEALTH_PROTOCOLS, type HealthAnswer, type Instance, type MarathonCore } from "./core.ts";

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
    private readonly report: (instanceId: string, checkIndex: number, answer: HealthAnswer) => void,
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
      const checks = this.core.healthChecksOf(instance); // its own version's, not the app's current ones
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
          .then((answer) => {
            if (!this.stopped && this.states.get(instance.id) === current) this.report(instance.id, i, answer);
          })
          .finally(() => {
            state.inFlight = false;
            this.running--;
          });
      });
    }
    for (const id of this.states.keys()) if (!seen.has(id)) this.states.delete(id);
  }

  private probe(instance: Instance, check: HealthCheck): Promise<HealthAnswer> {
    const port = check.port ?? instance.hostPorts[check.portIndex ?? 0];
    if (port === undefined) return Promise.resolve(false);
    const host = this.options.host?.(instance) ?? instance.hostname;
    const timeoutMs = check.timeoutSeconds * 1000;
    if (check.protocol === "TCP") return tcpProbe(host, port, timeoutMs);
    const scheme = check.protocol === "HTTPS" ? "https" : "http";
    return httpProbe(`${scheme}://${host}:${port}${check.path ?? "/"}`, timeoutMs, check.ignoreHttp1xx);
  }
}

async function httpProbe(url: string, timeoutMs: number, ignore1xx: boolean): Promise<HealthAnswer> {
  return httpHealthVerdict(await httpStatus(url, timeoutMs), ignore1xx);
}

/**
 * Marathon's reading of an HTTP(S) check's answer: 200-399 pass; a 1xx is discarded with
 * `ignoreHttp1xx` (the instance's health stays as it was) and fails without; anything else, and
 * no answer at all, fails.
 */
function httpHealthVerdict(status: number | undefined, ignore1xx: boolean): HealthAnswer {
  if (status === undefined) return false;
  if (status < 200) return ignore1xx ? "ignored" : false;
  return status < 400;
}

/**
 * GETs `url` (redirects are answers, not followed) and answers the final status within
 * `timeoutMs`. A server that sent 1xx answers but no final one before closing or timing out
 * answered the last 1xx (fetch would report no answer at all, so `ignoreHttp1xx` could not
 * apply). Undefined when nothing came (refused, timed out, bad URL).
 */
function httpStatus(url: string, timeoutMs: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    let interim: number | undefined;
    let request: ClientRequest | undefined;
    const finish = (status: number | undefined) => {
      clearTimeout(timer);
      request?.destroy();
      resolve(status);
    };
    const timer = setTimeout(() => finish(interim), timerMs(timeoutMs));
    const onResponse = (response: IncomingMessage) => {
      response.resume();
      finish(response.statusCode);
    };
    try {
      // As Marathon's, an HTTPS check takes any certificate: tasks commonly serve self-signed ones,
      // and the check asks whether the task answers, not who it is.
      request = url.startsWith("https:") ? httpsGetRequest(url, { rejectUnauthorized: false }, onResponse) : httpGetRequest(url, onResponse);
    } catch {
      finish(undefined); // a URL node:http refuses (say, a path with spaces)
      return;
    }
    request.on("information", (info: { statusCode: number }) => (interim = info.statusCode));
    request.on("error", () => finish(interim));
  });
}

/**
 * A check's timeout as a timer can wait it: setTimeout fires at once past 2^31-1 ms (and
 * AbortSignal.timeout throws past 2^32-1), while timeoutSeconds may go up to 2^31-1; a timeout
 * of more than 24 days is as good as none.
 */
function timerMs(timeoutMs: number): number {
  return Math.min(timeoutMs, MAX_TIMEOUT_MS);
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
  try {
    const signal = AbortSignal.timeout(timerMs(timeoutMs));
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
    socket.setTimeout(timerMs(timeoutMs), () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}
