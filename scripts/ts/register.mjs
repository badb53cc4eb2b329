/**
 * `node --import ./scripts/ts/register.mjs file.ts` runs a TypeScript file (see ./hooks.mjs), with
 * stack traces pointing into the TypeScript sources.
 */
import { register } from "node:module";

process.setSourceMapsEnabled(true);
register("./hooks.mjs", import.meta.url);
