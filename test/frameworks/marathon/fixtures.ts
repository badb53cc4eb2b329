/** Loads the Marathon example definitions kept under ./fixtures (see fixtures/README.md). */
import { readFileSync } from "node:fs";

/** Parsed JSON of `fixtures/<name>`; a fresh copy on every call, so tests may mutate it. */
export function fixture(name: string): unknown {
  return JSON.parse(readFileSync(new URL(`./fixtures/${name}`, import.meta.url), "utf8")) as unknown;
}

/** A fixture known to be a JSON object. */
export function fixtureObject(name: string): Record<string, unknown> {
  const value = fixture(name);
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new TypeError(`${name} is not a JSON object`);
  return value as Record<string, unknown>;
}

/** A fixture known to be a JSON array of objects. */
export function fixtureArray(name: string): Array<Record<string, unknown>> {
  const value = fixture(name);
  if (!Array.isArray(value)) throw new TypeError(`${name} is not a JSON array`);
  return value as Array<Record<string, unknown>>;
}
