/**
 * Readiness checks, the shell's half: which instances to probe and what counts as ready are the
 * core's decisions ({@link MarathonCore.readinessTargets}, {@link MarathonCore.readinessResult});
 * this file only sends the HTTP(S) GETs, every `intervalSeconds`, each bounded by
 * `timeoutSeconds`, and hands the answers back. An answer whose status is one of
 * `httpStatusCodesForReady` means ready; no answer (refused, timed out) means not ready.
 *
 * @module
 */

import type { Instance, MarathonCore, ReadinessProbe, ReadinessTarget } from "./core.ts";
import { httpGet } from "./health.ts";

/** Options of the readiness checker. */
export interface ReadinessCheckerOptions {
  /** The host to probe an instance on. @default the instance's agent hostname */
  host?: (instance: Instance) => string;
  /** Probes running at once, at most. @default 256 */
  maxConcurrentChecks?: number;
  /** Body bytes kept of an answer (`preserveLastResponse`). @default 65536 */
  maxBodyBytes?: number;
}

interface ProbeState {
  lastStartedMs: number;
  inFlight: boolean;
}

/** Probes the readiness of the instances the core names; see the module comment. */
export class ReadinessChecker {
  private readonly states = new Map<string, ProbeState>();
  private running = 0;
  private stopped = false;

  constructor(
    private readonly core: MarathonCore,
    private readonly options: ReadinessCheckerOptions,
    private readonly report: (instanceId: string, probe: ReadinessProbe) => void,
  ) {}

  stop(): void {
    this.stopped = true;
  }

  /** Starts the probes that are due. */
  poll(nowMs: number): void {
    if (this.stopped) return;
    const seen = new Set<string>();
    for (const target of this.core.readinessTargets()) {
      const id = target.instance.id;
      seen.add(id);
      let state = this.states.get(id);
      if (!state) this.states.set(id, (state = { lastStartedMs: -Infinity, inFlight: false }));
      if (state.inFlight || nowMs - state.lastStartedMs < target.check.intervalSeconds * 1000) continue;
      if (this.running >= (this.options.maxConcurrentChecks ?? 256)) break;
      state.lastStartedMs = nowMs;
      state.inFlight = true;
      this.running++;
      const current = state;
      void this.probe(target)
        .then((probe) => {
          if (!this.stopped && this.states.get(id) === current) this.report(id, probe);
        })
        .finally(() => {
          current.inFlight = false;
          this.running--;
        });
    }
    for (const id of this.states.keys()) if (!seen.has(id)) this.states.delete(id);
  }

  private async probe({ instance, check, port }: ReadinessTarget): Promise<ReadinessProbe> {
    if (port === undefined) return { ready: false };
    const host = this.options.host?.(instance) ?? instance.hostname;
    const scheme = check.protocol === "HTTPS" ? "https" : "http";
    const answer = await httpGet(`${scheme}://${host}:${port}${check.path}`, check.timeoutSeconds * 1000, this.options.maxBodyBytes ?? 65_536);
    if (!answer) return { ready: false };
    return { ready: check.httpStatusCodesForReady.includes(answer.status), response: answer };
  }

  /** Instances with a probe state (tests). */
  tracked(): number {
    return this.states.size;
  }
}
