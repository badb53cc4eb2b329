/**
 * `GET /openapi.json`: an OpenAPI 3 document that describes exactly the routes the fastify server
 * registers (as its onRoute hook reports them), with a structure OpenAPI tools accept.
 */
import { Ajv } from "ajv";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SeededRng } from "../../../sdk/rng.ts";
import { MarathonCore } from "../../../frameworks/marathon/core.ts";
import { registeredRoutes } from "../../../frameworks/marathon/http.ts";
import { documentedRoutes, ROUTE_FIELD, toOpenApiSchema, type OpenApiDocument, type OpenApiObject } from "../../../frameworks/marathon/openapi.ts";
import { standaloneHttp } from "./standalone-http.ts";

let app: FastifyInstance;
let doc: OpenApiDocument;

beforeAll(async () => {
  const core = new MarathonCore(new SeededRng(1));
  app = standaloneHttp(core);

  await app.ready();
  const answer = await app.inject({ method: "GET", url: "/openapi.json" });
  expect(answer.statusCode).toBe(200);
  expect(answer.headers["content-type"]).toContain("application/json");
  doc = answer.json() as OpenApiDocument;
});
afterAll(async () => {
  await app?.close();
});

const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/** Every value of `node` and below, with where it is. */
function* walk(node: unknown, where = "#"): Generator<[unknown, string]> {
  yield [node, where];
  if (Array.isArray(node)) for (const [i, v] of node.entries()) yield* walk(v, `${where}/${i}`);
  else if (typeof node === "object" && node !== null) for (const [k, v] of Object.entries(node)) yield* walk(v, `${where}/${k}`);
}

describe("GET /openapi.json", () => {
  it("is an OpenAPI 3 document with info and paths", () => {
    expect(doc.openapi).toMatch(/^3\.0\.\d+$/);
    expect(typeof doc.info.title).toBe("string");
    expect(doc.info.version).toMatch(/corral/);
    expect(Object.keys(doc.paths).length).toBeGreaterThan(10);
    for (const path of Object.keys(doc.paths)) expect(path.startsWith("/")).toBe(true);
  });

  it("documents every route fastify registered, and no other", () => {
    const registered = new Set(registeredRoutes(app));
    expect(registered.size).toBeGreaterThan(20);
    expect(registered).toContain("GET /openapi.json");
    expect([...registered].filter((r) => !documentedRoutes(doc).has(r)), "routes without documentation").toEqual([]);
    expect([...documentedRoutes(doc)].filter((r) => !registered.has(r)), "documentation without a route").toEqual([]);
  });

  it("has a valid structure: operations with unique ids and responses, declared path parameters, resolvable $refs", () => {
    const ids = new Set<string>();
    for (const [path, item] of Object.entries(doc.paths)) {
      const templated = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
      for (const [method, op] of Object.entries(item)) {
        expect(METHODS, `${method} ${path}`).toContain(method);
        expect(typeof op.operationId).toBe("string");
        expect(ids.has(op.operationId as string), `duplicate operationId ${String(op.operationId)}`).toBe(false);
        ids.add(op.operationId as string);
        expect(typeof op[ROUTE_FIELD]).toBe("string");
        const responses = op.responses as Record<string, OpenApiObject>;
        expect(Object.keys(responses).length).toBeGreaterThan(0);
        for (const [code, response] of Object.entries(responses)) {
          expect(code).toMatch(/^[1-5]\d\d$/);
          expect(typeof response.description).toBe("string");
        }
        const params = (op.parameters ?? []) as OpenApiObject[];
        for (const p of params) {
          expect(["query", "path", "header", "cookie"]).toContain(p.in);
          expect(typeof p.name).toBe("string");
          expect(p.schema).toBeDefined();
        }
        const inPath = params.filter((p) => p.in === "path");
        expect(inPath.map((p) => p.name).sort(), `${method} ${path}`).toEqual([...templated].sort());
        for (const p of inPath) expect(p.required).toBe(true);
        if (op.requestBody) expect(Object.keys((op.requestBody as { content: object }).content)).toContain("application/json");
      }
    }
    for (const [value, where] of walk(doc)) {
      if (typeof value !== "object" || value === null || Array.isArray(value)) continue;
      const node = value as Record<string, unknown>;
      if (typeof node.$ref === "string") {
        const name = node.$ref.replace(/^#\/components\/schemas\//, "");
        expect(doc.components.schemas[name], `${where}: ${node.$ref}`).toBeDefined();
      }
      // OpenAPI 3.0 schemas name one type, never a list.
      if (where.includes("/schema") || where.includes("/schemas/")) {
        if ("type" in node && !where.endsWith("/properties")) expect(typeof node.type, `${where}.type`).toBe("string");
      }
    }
  });

  it("has schemas that a JSON-schema validator compiles, and that accept the bodies the API accepts", () => {
    const ajv = new Ajv({ strict: false, allErrors: true });
    ajv.addSchema({ $id: "openapi", components: doc.components });
    const validate = (name: string) => ajv.compile({ $ref: `openapi#/components/schemas/${name}` });
    for (const name of Object.keys(doc.components.schemas)) expect(() => validate(name), name).not.toThrow();
    const appDef = validate("AppDefinition");
    expect(appDef({ id: "/web", cmd: "sleep 1", env: { A: "1", S: { secret: "s" } }, unreachableStrategy: "disabled", resourceLimits: { cpus: "unlimited", mem: 64 } })).toBe(true);
    expect(appDef({ id: "/web", instances: "three" })).toBe(false);
    const group = validate("Group");
    expect(group({ id: "/shop", apps: [{ id: "web", cmd: "x" }], groups: [{ id: "/shop/db", apps: [] }] })).toBe(true);
    expect(group({ id: "/shop", groups: [{ apps: [] }] })).toBe(false); // a nested group names itself
  });

  it("rewrites lists of types into anyOf, as OpenAPI 3.0 requires", () => {
    expect(toOpenApiSchema({ type: ["string", "object"], nullable: true, properties: { a: { type: "integer" } } })).toEqual({
      anyOf: [{ type: "string", nullable: true }, { type: "object", nullable: true, properties: { a: { type: "integer" } } }],
    });
    expect(toOpenApiSchema({ $id: "x", definitions: { g: {} }, items: { $ref: "#/definitions/g" } }, { g: "Group" })).toEqual({ items: { $ref: "#/components/schemas/Group" } });
  });

  it("describes paths the server really serves (none answers 'Unknown resource')", async () => {
    const sample: Record<string, string> = { appId: "some/app", groupId: "some/group", taskId: "some_app.1", version: "2020-01-01T00:00:00.000Z", deploymentId: "d1" };
    for (const [path, item] of Object.entries(doc.paths)) {
      if (path === "/v2/events") continue; // an endless stream
      const url = path.replace(/\{([^}]+)\}/g, (_m, name: string) => sample[name]!);
      for (const method of Object.keys(item)) {
        const answer = await app.inject({ method: method.toUpperCase() as "GET", url, payload: "{", headers: { "content-type": "application/json" } });
        expect(answer.statusCode, `${method} ${url}`).toBeLessThan(500);
        if (method !== "head") expect(answer.body, `${method} ${url}`).not.toMatch(/Unknown resource/);
      }
    }
  });
});
