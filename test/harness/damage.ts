/**
 * Random damage to valid inputs, for property tests of parsers and codecs: pick a place inside a
 * JSON-like value and put an arbitrary value there. A parser must then either accept the result
 * or refuse it with its own structured error, never crash.
 */
import fc from "fast-check";

export type Path = ReadonlyArray<string | number>;

/** Every place inside `value` where a value could be put: object keys and array indexes, at any depth. */
export function placesIn(value: unknown, prefix: Path = []): Path[] {
  if (value === null || typeof value !== "object" || value instanceof Uint8Array) return [];
  const keys: Array<string | number> = Array.isArray(value) ? value.map((_, i) => i) : Object.keys(value);
  return keys.flatMap((key) => [[...prefix, key], ...placesIn((value as Record<string | number, unknown>)[key], [...prefix, key])]);
}

/** A copy of `value` with `replacement` at `path`; what is off the path is shared, not copied. */
export function withValueAt(value: unknown, path: Path, replacement: unknown): unknown {
  if (path.length === 0) return replacement;
  const copy = (Array.isArray(value) ? [...value] : { ...(value as object) }) as Record<string | number, unknown>;
  copy[path[0]!] = withValueAt(copy[path[0]!], path.slice(1), replacement);
  return copy;
}

/** Values that break types and rules: odd strings, edge numbers, null, containers, bytes, objects without a prototype. */
export const anyDamage: fc.Arbitrary<unknown> = fc.oneof(
  fc.string({ maxLength: 8 }),
  fc.constantFrom("", "TASK_RUNNING", "TASK_STATE_UNSPECIFIED", "scalar", "accept", "kill", "*", "cpus:1;mem:x", "../x"),
  fc.integer(),
  fc.constantFrom(2 ** 31, -(2 ** 31) - 1, 2 ** 32, 2 ** 53, -1, 0, 0.5, Number.NaN, Infinity),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
  fc.array(fc.string({ maxLength: 4 }), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 4 }), fc.string({ maxLength: 4 }), { maxKeys: 3 }),
  fc.uint8Array({ maxLength: 4 }),
  fc.constant(Object.create(null) as object),
);

/** One of `inputs`, damaged at one random place with one of {@link anyDamage}. */
export function damaged(inputs: readonly unknown[]): fc.Arbitrary<{ index: number; path: Path; value: unknown }> {
  const places = inputs.map((input) => placesIn(input));
  const usable = inputs.map((_, i) => i).filter((i) => places[i]!.length > 0);
  return fc
    .constantFrom(...usable)
    .chain((index) => fc.record({ index: fc.constant(index), path: fc.constantFrom(...places[index]!), value: anyDamage }));
}
