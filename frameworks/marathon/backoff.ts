/**
 * Launch backoff: how long to wait before launching an app again after its tasks keep failing.
 *
 * As in Marathon's `RateLimiter`: the first failure delays launches by `backoffSeconds`; each
 * further failure multiplies the current delay by `backoffFactor`, never beyond
 * `maxLaunchDelaySeconds`; the delay counts from the latest failure. So after `n` failures the
 * delay is `min(max, backoffSeconds * backoffFactor^(n-1))`.
 *
 * A delay belongs to one configuration of the app: a new config version (not a scale change)
 * starts afresh, and so does a deployment restarting the app or `DELETE /v2/queue/{id}/delay`.
 * A delay is forgotten once no instance of its configuration failed, was launched or started for
 * longer than `maxLaunchDelaySeconds` (Marathon's overdue clean-up, which counts from the latest
 * launch or start as well): an app whose task ran that long without failing starts with a short
 * delay again, while one that crashes right after each launch stays at the ceiling.
 */

/** The backoff fields of an app definition. */
export interface BackoffPolicy {
  /** Delay after the first failure, in seconds. @default 1 */
  readonly backoffSeconds: number;
  /** Multiplier per further failure (at least 1). @default 1.15 */
  readonly backoffFactor: number;
  /** Ceiling of the delay, in seconds. @default 300 */
  readonly maxLaunchDelaySeconds: number;
}

/** Marathon's default backoff. */
export const DEFAULT_BACKOFF: BackoffPolicy = { backoffSeconds: 1, backoffFactor: 1.15, maxLaunchDelaySeconds: 300 };

/** The launch delay of one app configuration. Plain data, persisted with the launch queue. */
export interface LaunchDelay {
  /** The app's config version (last config change) the delay belongs to. */
  readonly configVersion: string;
  /** When the latest failure was recorded, epoch ms. */
  readonly sinceMs: number;
  /** The current delay, ms. */
  readonly delayMs: number;
  /** The ceiling at the time, ms (also how long an untouched delay is remembered). */
  readonly maxDelayMs: number;
  /** Failures recorded for this configuration. */
  readonly failures: number;
  /** When an instance of this configuration was last launched or started, epoch ms, if since the latest failure. */
  readonly activeAtMs?: number;
}

/** Delay info as `GET /v2/queue` shows it. */
export interface QueueDelayInfo {
  /** Whole seconds until launching may resume (0 when it may now). */
  readonly timeLeftSeconds: number;
  /** True when not backed off: the app is waiting for offers, not for its delay. */
  readonly overdue: boolean;
}

function policyMs(policy: BackoffPolicy): { backoffMs: number; maxMs: number; factor: number } {
  return { backoffMs: policy.backoffSeconds * 1000, maxMs: policy.maxLaunchDelaySeconds * 1000, factor: policy.backoffFactor };
}

/** The delay, in seconds, after `failures` consecutive failures (0 failures: no delay). */
export function delayAfterFailuresSeconds(policy: BackoffPolicy, failures: number): number {
  if (failures <= 0) return 0;
  let delay = Math.min(policy.backoffSeconds, policy.maxLaunchDelaySeconds);
  // Iterate rather than use a power: this is how the delay evolves, capped at every step.
  for (let i = 1; i < failures && delay < policy.maxLaunchDelaySeconds; i++) {
    delay = Math.min(policy.maxLaunchDelaySeconds, delay * policy.backoffFactor);
  }
  return delay;
}

/**
 * The delay that still applies to `configVersion` at `nowMs`, or undefined when there is none:
 * none was recorded, it belongs to an older configuration, or it was left alone (no failure,
 * launch or start) for longer than its ceiling (Marathon's overdue clean-up).
 */
export function activeDelay(delay: LaunchDelay | undefined, configVersion: string, nowMs: number): LaunchDelay | undefined {
  if (delay === undefined || delay.configVersion !== configVersion) return undefined;
  if (nowMs > Math.max(delay.sinceMs, delay.activeAtMs ?? delay.sinceMs) + delay.maxDelayMs) return undefined;
  return delay;
}

/**
 * Records that an instance of `configVersion` was launched or started at `nowMs`: the delay is
 * remembered for its ceiling from then on, so that a task crashing soon after its launch raises it
 * further rather than finding it forgotten. The time launching may resume is unchanged. Answers
 * undefined when there is no delay to keep.
 */
export function recordActivity(delay: LaunchDelay | undefined, configVersion: string, nowMs: number): LaunchDelay | undefined {
  const current = activeDelay(delay, configVersion, nowMs);
  return current === undefined ? undefined : { ...current, activeAtMs: nowMs };
}

/**
 * Records a task failure of the app's configuration `configVersion` at `nowMs` and returns the new
 * delay: `backoffSeconds` for the first, the current delay times `backoffFactor` (capped) after.
 */
export function recordFailure(delay: LaunchDelay | undefined, policy: BackoffPolicy, configVersion: string, nowMs: number): LaunchDelay {
  const { backoffMs, maxMs, factor } = policyMs(policy);
  const current = activeDelay(delay, configVersion, nowMs);
  if (current === undefined) {
    return { configVersion, sinceMs: nowMs, delayMs: Math.min(backoffMs, maxMs), maxDelayMs: maxMs, failures: 1 };
  }
  return { configVersion, sinceMs: nowMs, delayMs: Math.min(maxMs, current.delayMs * factor), maxDelayMs: maxMs, failures: current.failures + 1 };
}

/** When launching may resume, epoch ms (`nowMs` itself when there is no delay). */
export function launchAllowedAtMs(delay: LaunchDelay | undefined, configVersion: string, nowMs: number): number {
  const current = activeDelay(delay, configVersion, nowMs);
  return current === undefined ? nowMs : current.sinceMs + current.delayMs;
}

/** True when the app may launch at `nowMs`. */
export function canLaunch(delay: LaunchDelay | undefined, configVersion: string, nowMs: number): boolean {
  return launchAllowedAtMs(delay, configVersion, nowMs) <= nowMs;
}

/** The `delay` object of a `GET /v2/queue` entry. */
export function queueDelayInfo(delay: LaunchDelay | undefined, configVersion: string, nowMs: number): QueueDelayInfo {
  const leftMs = launchAllowedAtMs(delay, configVersion, nowMs) - nowMs;
  // Whole seconds, truncated, as Marathon's `Duration.toSeconds`.
  return { timeLeftSeconds: Math.max(0, Math.trunc(leftMs / 1000)), overdue: leftMs <= 0 };
}

/**
 * The delay after a reset (a deployment restarting the app, `DELETE /v2/queue/{id}/delay`): none.
 * A function rather than a bare `undefined` at call sites so resets are easy to find.
 */
export function resetDelay(): undefined {
  return undefined;
}
