/**
 * Marathon's HTTP layer alone, over a core of the test's own: no bus, no store unless the test's
 * `input` writes one. Always leading, no events, no metrics.
 */
import type { FastifyInstance } from "fastify";
import { ManualClock, type Clock } from "../../../sdk/clock.ts";
import { silentLogger } from "../../../sdk/transport.ts";
import type { MarathonCore } from "../../../frameworks/marathon/core.ts";
import { createMarathonHttp, type MarathonHttpDeps } from "../../../frameworks/marathon/http.ts";

/** Options of {@link standaloneHttp}. */
export interface StandaloneHttpOptions {
  /** @default a ManualClock at 1,700,000,000,000 */
  clock?: Clock;
  /** How a core input runs. @default at once, its effects dropped */
  input?: MarathonHttpDeps["input"];
}

export function standaloneHttp(core: MarathonCore, options: StandaloneHttpOptions = {}): FastifyInstance {
  return createMarathonHttp({
    core,
    clock: options.clock ?? new ManualClock(1_700_000_000_000),
    input: options.input ?? (async (fn) => fn()),
    info: () => ({ frameworkId: undefined, url: "http://127.0.0.1:1", frameworkName: "marathon", role: "default", cluster: "c", startedAtMs: 0 }),
    leadership: () => ({ leading: true, leaderUrl: "http://127.0.0.1:1" }),
    onEvent: () => () => undefined,
    emit: () => undefined,
    metrics: () => "",
    log: silentLogger,
  });
}
