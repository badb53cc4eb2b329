import { describe, expect, it } from "vitest";
import { roleAclProblem, roleAuthorizationProblem } from "../../master/authz.ts";

describe("the role ACL", () => {
  it("is checked field by field, naming the field and the rule", () => {
    expect(roleAclProblem({ principals: { marathon: ["web", "eng/api", "*"], ops: "ANY" }, permissive: false })).toBeUndefined();
    expect(roleAclProblem({ principals: {} })).toBeUndefined();
    for (const [acl, problem] of [
      [null, "must be an object"],
      [[], "must be an object"],
      [{}, "principals: must be an object mapping principals to role lists"],
      [{ principals: [] }, "principals: must be an object mapping principals to role lists"],
      [{ principals: {}, permissive: "no" }, 'permissive: must be true or false, got "no"'],
      [{ principals: {}, roles: {} }, "roles: unknown field (expected principals, permissive)"],
      [{ principals: { marathon: "web" } }, 'principals.marathon: must be a list of roles or "ANY", got "web"'],
      [{ principals: { marathon: [7] } }, "principals.marathon[0]: must be a role name, got 7"],
      [{ principals: { marathon: ["web/"] } }, "principals.marathon[0]: role must not start or end with '/'"],
      [{ principals: { "": ["web"] } }, 'principals[""]: a principal must not be empty'],
      [{ principals: { "a b": ["web"] } }, 'principals["a b"]: a principal must not contain " "'],
    ] as const) {
      expect({ acl, problem: roleAclProblem(acl) }).toEqual({ acl, problem: expect.stringContaining(problem) });
    }
  });

  it("gives a listed principal its roles only, and the others every role unless it is not permissive", () => {
    const acl = { principals: { marathon: ["web", "batch"], ops: "ANY" as const, none: [] } };
    expect(roleAuthorizationProblem(undefined, "anyone", ["any"])).toBeUndefined();
    expect(roleAuthorizationProblem(acl, "marathon", ["batch", "web"])).toBeUndefined();
    expect(roleAuthorizationProblem(acl, "marathon", ["web", "eng/web"])).toBe("principal 'marathon' may not subscribe with role 'eng/web' (the role ACL allows it 'web', 'batch')");
    expect(roleAuthorizationProblem(acl, "none", ["web"])).toBe("principal 'none' may not subscribe with role 'web' (the role ACL allows it no role)");
    expect(roleAuthorizationProblem(acl, "ops", ["anything"])).toBeUndefined();
    expect(roleAuthorizationProblem(acl, "stranger", ["web"])).toBeUndefined();
    expect(roleAuthorizationProblem(acl, "", ["web"])).toBeUndefined();
    const strict = { ...acl, permissive: false };
    expect(roleAuthorizationProblem(strict, "stranger", ["web"])).toBe("principal 'stranger' may not subscribe with role 'web': the role ACL does not list it and is not permissive");
    expect(roleAuthorizationProblem(strict, "", ["*"])).toBe("a framework without a principal may not subscribe with role '*': the role ACL does not list it and is not permissive");
    // Only a principal's own entry counts, not what objects inherit.
    expect(roleAuthorizationProblem(strict, "constructor", ["web"])).toContain("does not list it");
  });
});
