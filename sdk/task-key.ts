/**
 * The key of a task in tables that hold the tasks of several frameworks (the master's registry, an
 * agent's tasks and status-update streams).
 *
 * A task id is unique only within its framework, as in Mesos: two frameworks may both run a task
 * named `j1.0.0` on one agent. Every such table is therefore keyed by the pair, and this module is
 * the one place that says how the pair becomes a string.
 *
 * @module
 */

/** A task named the only unambiguous way: by its framework and its id within that framework. */
export interface TaskRef {
  frameworkId: string;
  taskId: string;
}

/**
 * `<frameworkId>/<taskId>`. Framework ids never contain `/`, so the first `/` splits the key again
 * (see {@link splitTaskKey}) whatever the task id holds.
 */
export function taskKey(frameworkId: string, taskId: string): string {
  return [frameworkId, taskId].join("/"); // one flat string (see SeededRng.uuid)
}

/** The two halves of a {@link taskKey}. */
export function splitTaskKey(key: string): TaskRef {
  const cut = key.indexOf("/");
  return { frameworkId: key.slice(0, cut), taskId: key.slice(cut + 1) };
}
