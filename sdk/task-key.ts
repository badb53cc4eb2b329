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

/** Longest framework or task id: agents use both as directory names. */
export const MAX_PATH_ID_LENGTH = 200;

const PATH_SAFE_ID = /^[A-Za-z0-9_.@+-]+$/u;

/**
 * Why a framework or task `id` cannot name a sandbox directory on an agent, or `undefined` when it
 * can: 1-{@link MAX_PATH_ID_LENGTH} characters from `A-Z a-z 0-9 _ . @ + -`, and not `.` or `..`.
 * Dots are allowed because Marathon task ids contain them (`app.instance-1`). The master checks
 * ids by this rule too (framework ids at SUBSCRIBE, task ids at ACCEPT), so no id reaches an
 * agent that would refuse it, and no framework id holds the `/` that {@link taskKey} splits on.
 */
export function pathIdProblem(id: unknown): string | undefined {
  if (typeof id !== "string") return `must be a string, got ${typeof id}`;
  if (id.length === 0) return "must not be empty";
  if (id.length > MAX_PATH_ID_LENGTH) return `must be at most ${MAX_PATH_ID_LENGTH} characters, got ${id.length}`;
  if (id === "." || id === "..") return `must not be ${JSON.stringify(id)}`;
  if (!PATH_SAFE_ID.test(id)) return "use only letters, digits, '_', '.', '@', '+' or '-'";
  return undefined;
}
