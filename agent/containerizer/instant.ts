/**
 * A containerizer whose tasks start instantly and "run" in memory: no process, no sandbox files.
 * For emulated agents in benchmarks (thousands per process) and for the simulator, where a task
 * runs for a given (virtual) duration and uses given resources.
 */
import { systemClock, systemTimers, type Clock, type TimerHandle, type Timers } from "../../sdk/clock.ts";
import { nonNegative } from "./common.ts";
import {
  ContainerizerError,
  DEFAULT_MAX_REMEMBERED_TERMINATIONS,
  type ContainerHandle,
  type ContainerSpec,
  type ContainerUsage,
  type Containerizer,
  type Termination,
} from "./types.ts";

/** Options of {@link InstantContainerizer}. */
export interface InstantContainerizerOptions {
  /** @default systemClock */
  clock?: Clock;
  /** Where task durations are scheduled (the simulator passes its virtual timers). @default systemTimers */
  timers?: Timers;
  /** How long a task runs before it exits by itself; `undefined` runs until killed. @default () => undefined */
  durationMs?: (spec: ContainerSpec) => number | undefined;
  /** Exit code of a task that ends by itself; asked at launch. @default () => 0 */
  exitCode?: (spec: ContainerSpec) => number;
  /** Terminations remembered for late `wait`/`kill` calls; the oldest are forgotten first. @default 1000 ({@link DEFAULT_MAX_REMEMBERED_TERMINATIONS}) */
  maxRememberedTerminations?: number;
}

interface Running {
  handle: ContainerHandle;
  timer: TimerHandle | undefined;
  done: Promise<Termination>;
  finish: (termination: Termination) => void;
}

/** The termination of a killed container; one object shared by all (terminations are read-only). */
const KILLED: Termination = Object.freeze({ exitCode: null, signal: "SIGKILL", killed: true, message: "Command terminated with signal SIGKILL" });

/** Terminations of containers that exited by themselves, by exit code (a handful of codes in practice). */
const EXITED = new Map<number, Termination>();

function exited(code: number): Termination {
  let termination = EXITED.get(code);
  if (termination === undefined) {
    termination = Object.freeze({ exitCode: code, signal: null, killed: false, message: `Command exited with status ${code}` });
    // Shared only for the usual codes (0-255); anything else gets its own object.
    if (Number.isInteger(code) && code >= 0 && code <= 255) EXITED.set(code, termination);
  }
  return termination;
}

/** See the module comment. Cheap enough to run thousands in one process. */
export class InstantContainerizer implements Containerizer {
  private readonly clock: Clock;
  private readonly timers: Timers;
  private readonly durationMs: (spec: ContainerSpec) => number | undefined;
  private readonly exitCode: (spec: ContainerSpec) => number;
  private readonly running = new Map<string, Running>();
  /**
   * Ended containers, oldest first. A plain Map grows with use: an LRU cache would allocate room
   * for all `maxRememberedTerminations` up front, in each of the thousands of agents of a
   * simulation, most of which end few tasks.
   */
  private readonly ended = new Map<string, Termination>();
  private readonly maxRememberedTerminations: number;
  private closed = false;

  /** @param options see {@link InstantContainerizerOptions} */
  constructor(options: InstantContainerizerOptions = {}) {
    this.clock = options.clock ?? systemClock;
    this.timers = options.timers ?? systemTimers;
    this.durationMs = options.durationMs ?? (() => undefined);
    this.exitCode = options.exitCode ?? (() => 0);
    this.maxRememberedTerminations = nonNegative(options.maxRememberedTerminations ?? DEFAULT_MAX_REMEMBERED_TERMINATIONS, "maxRememberedTerminations");
  }

  async launch(spec: ContainerSpec): Promise<ContainerHandle> {
    if (this.closed) throw new ContainerizerError("CORRAL_ERR_CONTAINERIZER_CLOSED", "containerizer is closed", { containerId: spec.containerId });
    if (this.running.has(spec.containerId) || this.ended.has(spec.containerId)) {
      throw new ContainerizerError("CORRAL_ERR_CONTAINER_EXISTS", `container ${spec.containerId} exists`, { containerId: spec.containerId });
    }
    const handle: ContainerHandle = { containerId: spec.containerId, sandboxDir: spec.sandboxDir, startedAtMs: this.clock.now() };
    let finish: (termination: Termination) => void = () => {};
    const done = new Promise<Termination>((resolve) => (finish = resolve));
    const entry: Running = { handle, timer: undefined, done, finish };
    this.running.set(spec.containerId, entry);
    const duration = this.durationMs(spec);
    if (duration !== undefined) {
      // The timer keeps only the id and the outcome, not the spec, for the task's whole run.
      const containerId = spec.containerId;
      const termination = exited(this.exitCode(spec));
      entry.timer = this.timers.set(duration, () => this.end(containerId, termination));
    }
    return handle;
  }

  async kill(containerId: string): Promise<Termination> {
    const entry = this.running.get(containerId);
    if (!entry) return this.recorded(containerId);
    this.end(containerId, KILLED);
    return entry.done;
  }

  wait(containerId: string): Promise<Termination> {
    const entry = this.running.get(containerId);
    return entry ? entry.done : this.recorded(containerId);
  }

  async usage(containerId: string): Promise<ContainerUsage> {
    if (!this.running.has(containerId)) throw new ContainerizerError("CORRAL_ERR_CONTAINER_NOT_FOUND", `no running container ${containerId}`, { containerId });
    return { containerId, timestampMs: this.clock.now(), cpusUserTimeSecs: 0, cpusSystemTimeSecs: 0, memRssBytes: 0, processes: 0 };
  }

  containers(): string[] {
    return [...this.running.keys()];
  }

  async destroyAll(): Promise<void> {
    this.closed = true;
    for (const containerId of [...this.running.keys()]) await this.kill(containerId);
  }

  private end(containerId: string, termination: Termination): void {
    const entry = this.running.get(containerId);
    if (!entry) return;
    entry.timer?.cancel();
    this.running.delete(containerId);
    this.ended.set(containerId, termination);
    if (this.ended.size > this.maxRememberedTerminations) this.ended.delete(this.ended.keys().next().value!);
    entry.finish(termination);
  }

  private recorded(containerId: string): Promise<Termination> {
    const termination = this.ended.get(containerId);
    if (termination) return Promise.resolve(termination);
    return Promise.reject(new ContainerizerError("CORRAL_ERR_CONTAINER_NOT_FOUND", `unknown container ${containerId}`, { containerId }));
  }
}
