/**
 * Marathon's rolling-restart arithmetic, as a pure step function over instance counts.
 *
 * For `N` target instances and an upgrade strategy:
 *
 * - `minHealthy = ceil(N * minimumHealthCapacity)` instances must stay healthy;
 * - `maxCapacity = floor(N * (1 + maximumOverCapacity))` instances may exist at once, old and new;
 *   when `minHealthy == maxCapacity` (and at least that many old instances run) one extra is
 *   allowed, or the restart could never begin;
 * - at the start, `max(0, healthy - minHealthy)` old instances are killed at once, where `healthy`
 *   counts the new instances already running too (a deployment forced onto an unfinished restart
 *   finds some), as Marathon counts every healthy instance of the app;
 * - new instances are started while there is room: `min(N - started, maxCapacity - oldActive -
 *   started)`, where an old instance counts until it is really gone, not merely told to go;
 * - each new instance that turns healthy (and ready) lets one more old instance be killed; those
 *   already healthy at the start were counted in the kills at once instead.
 *
 * The arithmetic uses IEEE doubles like Marathon's JVM code, so `ceil(100 * 0.55)` is 56 here too.
 *
 * The scheduler feeds {@link rolloutStep} the counts it observes and carries out the kills and
 * launches it returns; {@link simulateRollout} runs the same function against a model of the
 * cluster for tests and the capacity simulator.
 */
import type { Rng } from "../../sdk/rng.ts";
import type { UpgradeStrategy } from "./app-spec.ts";

/** The fixed numbers of one rollout, computed when it starts. */
export interface RestartPlan {
  /** N: instances of the new version wanted. */
  readonly target: number;
  /** Healthy instances (old and new) that must remain. */
  readonly minHealthy: number;
  /** Instances (old, including those being killed, and new) that may exist at once. */
  readonly maxCapacity: number;
  /** Old instances to kill right away. */
  readonly killImmediately: number;
  /** Whether the one-extra-instance allowance of the `minHealthy == maxCapacity` case applied. */
  readonly overCapacityAllowance: boolean;
  /**
   * New instances already healthy and ready at the start: they were counted in
   * `killImmediately`, so only new ones beyond them let more old instances go.
   * @default 0 (plans stored before this field existed had none)
   */
  readonly newReadyAtStart?: number;
}

/** New instances (of the target config) that already exist when a rollout starts. */
export interface AlreadyStarted {
  /** New instances active (launched and meant to run). @default 0 */
  readonly started?: number;
  /** Of those, the healthy and ready ones. @default 0 */
  readonly ready?: number;
}

/** What the scheduler observes of a running rollout. */
export interface RolloutState {
  /** Old instances not yet told to stop. */
  readonly oldRunning: number;
  /** Of those, the healthy ones (all of them when the app has no health checks). */
  readonly oldHealthy: number;
  /** Old instances told to stop whose end has not been confirmed yet. */
  readonly oldStopping: number;
  /** Old instances this rollout has told to stop so far. */
  readonly oldKillsIssued: number;
  /** New instances launched or queued and meant to run. */
  readonly newStarted: number;
  /** Of those, the ones healthy and ready. */
  readonly newHealthy: number;
}

/** What to do now. */
export interface RolloutStep {
  /** Old instances to kill, unhealthy ones first. */
  readonly killOld: number;
  /** Of `killOld`, how many should be unhealthy ones (the rest are healthy). */
  readonly killOldUnhealthy: number;
  /** New instances to launch. */
  readonly startNew: number;
  /** True when nothing is left to do: old gone, N new healthy. */
  readonly done: boolean;
}

function checkCount(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${name} must be a non-negative integer, got ${value}`);
}

/**
 * Computes the plan of a restart of `oldRunning` instances (`oldHealthy` of them healthy) into
 * `target` new ones, `already` of which may exist (a deployment taking over an unfinished
 * restart). Unhealthy old instances serve nobody, so they are killed at once as well; when all
 * are healthy (the usual case) this is exactly Marathon's `healthy - minHealthy`, with the new
 * instances already ready among the healthy.
 * @throws RangeError for counts that are not non-negative integers or fractions outside [0, 1]
 */
export function computeRestartPlan(target: number, strategy: UpgradeStrategy, oldRunning: number, oldHealthy: number = oldRunning, already: AlreadyStarted = {}): RestartPlan {
  const newStarted = already.started ?? 0;
  const newReady = already.ready ?? 0;
  checkCount("target", target);
  checkCount("oldRunning", oldRunning);
  checkCount("oldHealthy", oldHealthy);
  checkCount("already.started", newStarted);
  checkCount("already.ready", newReady);
  if (oldHealthy > oldRunning) throw new RangeError(`oldHealthy (${oldHealthy}) exceeds oldRunning (${oldRunning})`);
  if (newReady > newStarted) throw new RangeError(`already.ready (${newReady}) exceeds already.started (${newStarted})`);
  const { minimumHealthCapacity: mhc, maximumOverCapacity: moc } = strategy;
  if (!(mhc >= 0 && mhc <= 1) || !(moc >= 0 && moc <= 1)) throw new RangeError(`upgrade strategy fractions must be in [0, 1], got ${mhc} and ${moc}`);
  const minHealthy = Math.ceil(target * mhc);
  let maxCapacity = Math.floor(target * (1 + moc));
  // New instances that already run take places too: without the allowance, old and new could
  // fill the capacity with no kill allowed, and the restart would never move.
  const overCapacityAllowance = minHealthy === maxCapacity && maxCapacity <= oldRunning + newStarted;
  if (overCapacityAllowance) maxCapacity += 1;
  const killImmediately = Math.min(oldRunning, oldRunning - oldHealthy + Math.max(0, oldHealthy + newReady - minHealthy));
  return { target, minHealthy, maxCapacity, killImmediately, overCapacityAllowance, ...(newReady > 0 ? { newReadyAtStart: newReady } : {}) };
}

/** The state at the start of a rollout, before anything was done. */
export function initialRolloutState(oldRunning: number, oldHealthy: number = oldRunning): RolloutState {
  return { oldRunning, oldHealthy, oldStopping: 0, oldKillsIssued: 0, newStarted: 0, newHealthy: 0 };
}

/** True when the rollout is finished: no old instance left, N new ones healthy. */
export function isRolloutComplete(plan: RestartPlan, state: RolloutState): boolean {
  return state.oldRunning === 0 && state.oldStopping === 0 && state.newHealthy >= plan.target;
}

/**
 * Decides the kills and launches for the observed state. Idempotent: calling it again on the
 * state that results from carrying out its answer asks for nothing more until something changes
 * (an old instance is gone, a new one turns healthy).
 */
export function rolloutStep(plan: RestartPlan, state: RolloutState): RolloutStep {
  if (isRolloutComplete(plan, state)) return { killOld: 0, killOldUnhealthy: 0, startNew: 0, done: true };
  // New instances ready at the start are in `killImmediately` already; count each once.
  const allowedKills = plan.killImmediately + Math.max(0, state.newHealthy - (plan.newReadyAtStart ?? 0));
  const killOld = Math.max(0, Math.min(state.oldRunning, allowedKills - state.oldKillsIssued));
  const killOldUnhealthy = Math.min(killOld, state.oldRunning - state.oldHealthy);
  // A killed instance still holds its resources until its end is confirmed, so it counts.
  const oldActive = state.oldRunning + state.oldStopping;
  const room = plan.maxCapacity - oldActive - state.newStarted;
  const startNew = Math.max(0, Math.min(plan.target - state.newStarted, room));
  return { killOld, killOldUnhealthy, startNew, done: false };
}

/** The state after the scheduler has carried out `step` (kills sent, launches queued). */
export function applyRolloutStep(state: RolloutState, step: RolloutStep): RolloutState {
  const killHealthy = step.killOld - step.killOldUnhealthy;
  return {
    oldRunning: state.oldRunning - step.killOld,
    oldHealthy: state.oldHealthy - killHealthy,
    oldStopping: state.oldStopping + step.killOld,
    oldKillsIssued: state.oldKillsIssued + step.killOld,
    newStarted: state.newStarted + step.startNew,
    newHealthy: state.newHealthy,
  };
}

/** Total instances that exist in `state` (old, stopping and new). */
export function totalInstances(state: RolloutState): number {
  return state.oldRunning + state.oldStopping + state.newStarted;
}

/** Healthy instances in `state`; an old instance told to stop no longer counts. */
export function healthyInstances(state: RolloutState): number {
  return state.oldHealthy + state.newHealthy;
}

/** How the cluster reacts between two steps of a simulated rollout. */
export type RolloutEnvironment = (state: RolloutState, tick: number) => RolloutState;

/** Everything happens by the next step: kills complete, launched instances turn healthy. */
export const instantEnvironment: RolloutEnvironment = (state) => ({
  ...state,
  oldStopping: 0,
  newHealthy: state.newStarted,
});

/** Knobs of {@link randomEnvironment}. */
export interface RandomEnvironmentOptions {
  /** Chance per tick that a stopping old instance is gone. @default 0.5 */
  stopProbability?: number;
  /** Chance per tick that a launched new instance turns healthy. @default 0.5 */
  healthyProbability?: number;
  /** Chance per tick that a launched, not yet healthy instance fails instead. @default 0.1 */
  failProbability?: number;
  /** Failures allowed in total, so a run always ends. @default 20 */
  maxFailures?: number;
}

/**
 * A cluster where kills complete, instances turn healthy and launches fail at random (driven by
 * `rng`, so a seed replays a run). Failed launches leave `newStarted`, and the next step starts
 * replacements, as Marathon's launch queue does.
 */
export function randomEnvironment(rng: Rng, options: RandomEnvironmentOptions = {}): RolloutEnvironment {
  const stop = options.stopProbability ?? 0.5;
  const heal = options.healthyProbability ?? 0.5;
  const fail = options.failProbability ?? 0.1;
  let failuresLeft = options.maxFailures ?? 20;
  return (state) => {
    let stopping = state.oldStopping;
    for (let i = state.oldStopping; i > 0; i--) if (rng.next() < stop) stopping--;
    let started = state.newStarted;
    let healthy = state.newHealthy;
    for (let i = state.newStarted - state.newHealthy; i > 0; i--) {
      const roll = rng.next();
      if (roll < fail && failuresLeft > 0) {
        failuresLeft--;
        started--;
      } else if (roll < fail + heal) healthy++;
    }
    return { ...state, oldStopping: stopping, newStarted: started, newHealthy: healthy };
  };
}

/** One step of a simulated rollout, as recorded. */
export interface RolloutTraceEntry {
  readonly tick: number;
  readonly killOld: number;
  readonly startNew: number;
  /** Instances existing right after the step was carried out. */
  readonly total: number;
  /** Healthy instances right after the step was carried out. */
  readonly healthy: number;
}

/** The outcome of {@link simulateRollout}. */
export interface RolloutSimulation {
  readonly plan: RestartPlan;
  readonly completed: boolean;
  /** Steps taken. */
  readonly ticks: number;
  /** Most instances that existed at once. */
  readonly peakTotal: number;
  /** Fewest healthy instances seen after any step. */
  readonly lowestHealthy: number;
  readonly trace: readonly RolloutTraceEntry[];
  readonly finalState: RolloutState;
}

/** Inputs of {@link simulateRollout}. */
export interface RolloutScenario {
  target: number;
  strategy: UpgradeStrategy;
  oldRunning: number;
  /** @default oldRunning (all healthy) */
  oldHealthy?: number;
  /** @default instantEnvironment */
  environment?: RolloutEnvironment;
  /** Steps before giving up. @default 10_000 */
  maxTicks?: number;
}

/** Runs a whole rollout against an environment model and records every step. */
export function simulateRollout(scenario: RolloutScenario): RolloutSimulation {
  const plan = computeRestartPlan(scenario.target, scenario.strategy, scenario.oldRunning, scenario.oldHealthy ?? scenario.oldRunning);
  const environment = scenario.environment ?? instantEnvironment;
  const maxTicks = scenario.maxTicks ?? 10_000;
  let state = initialRolloutState(scenario.oldRunning, scenario.oldHealthy ?? scenario.oldRunning);
  const trace: RolloutTraceEntry[] = [];
  let peakTotal = totalInstances(state);
  let lowestHealthy = healthyInstances(state);
  let tick = 0;
  for (; tick < maxTicks; tick++) {
    const step = rolloutStep(plan, state);
    if (step.done) break;
    state = applyRolloutStep(state, step);
    const total = totalInstances(state);
    const healthy = healthyInstances(state);
    peakTotal = Math.max(peakTotal, total);
    lowestHealthy = Math.min(lowestHealthy, healthy);
    trace.push({ tick, killOld: step.killOld, startNew: step.startNew, total, healthy });
    state = environment(state, tick);
  }
  return { plan, completed: isRolloutComplete(plan, state), ticks: tick, peakTotal, lowestHealthy, trace, finalState: state };
}
