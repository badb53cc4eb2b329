/**
 * Naming the component a log line comes from, once. A pino child's bindings are appended to its
 * parent's as they are, so a library that binds `component` under a caller that already bound it
 * wrote the key twice on every line (`"component":"agent",...,"component":"agent"`), which JSON
 * readers resolve differently (the first or the last wins, or the line is refused).
 */

/** The part of a pino logger this needs. */
export interface BindableLogger {
  bindings(): Record<string, unknown>;
  child(bindings: Record<string, unknown>): unknown;
}

/**
 * A child of `log` whose lines say `component`, and `extra`. When `log` already names that
 * component, only `extra` is bound; when it names another (a part of the caller's component, such
 * as the agent's HTTP API under the agent), this one is bound as `subcomponent`.
 */
export function componentLogger<L extends BindableLogger>(log: L, component: string, extra: Record<string, unknown> = {}): L {
  const existing = log.bindings().component;
  // A pino child is a logger of its parent's kind.
  if (existing === undefined) return log.child({ component, ...extra }) as L;
  if (existing === component) return log.child(extra) as L;
  return log.child({ subcomponent: component, ...extra }) as L;
}

/**
 * The field naming `component` in a log call's own object, for code that logs through a logger it
 * was given (the SDK's {@link Logger} has no `child`): `{ component }` when the logger names none,
 * nothing when it names this one, `{ subcomponent: component }` when it names another (the
 * scheduler driver inside Marathon). Read once: a logger's bindings do not change.
 */
export function componentField(log: object, component: string): { component?: string; subcomponent?: string } {
  const bindings = (log as { bindings?: () => Record<string, unknown> }).bindings;
  const existing = typeof bindings === "function" ? bindings.call(log).component : undefined;
  if (existing === undefined) return { component };
  if (existing === component) return {};
  return { subcomponent: component };
}
