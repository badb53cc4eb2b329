/**
 * What a framework author imports: `import { createSchedulerDriver, connectNats, Resources } from "corral/sdk"`.
 *
 * - the {@link createSchedulerDriver | SchedulerDriver} and its types;
 * - the {@link Resources} algebra, role names and the id rule of tasks and frameworks
 *   ({@link pathIdProblem}: check a task id before the master answers TASK_ERROR);
 * - the {@link Transport} interface and its NATS implementation ({@link connectNats});
 * - {@link Clock}, {@link Timers} and {@link Rng}, for deterministic tests and the simulator;
 * - the wire contract (message shapes, codec, subject table) under the `wire` namespace, plus the
 *   task-state tables at top level.
 *
 * @module
 */

export * from "./scheduler.ts";
export * from "./resources.ts";
export * from "./roles.ts";
export { MAX_PATH_ID_LENGTH, pathIdProblem } from "./task-key.ts";
export * from "./clock.ts";
export * from "./rng.ts";
export * from "./transport.ts";
export * from "./nats-transport.ts";
export { resourcesFromWire, resourcesToWire } from "./wire/resources.ts";
export { DropCounter, type DropCount, type DropReason } from "./wire/codec.ts";
export { TASK_STATES, TASK_STATUS_REASONS, TERMINAL_TASK_STATES } from "./wire/types.ts";
export type { Attribute, CommandInfo, FrameworkInfo, Offer, TaskInfo, TaskStatusReason, TaskStatusSource } from "./wire/types.ts";
export * as wire from "./wire/codec.ts";
export * as subjects from "./wire/subjects.ts";
