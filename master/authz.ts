/**
 * Which roles a framework may subscribe with, by principal: Corral's form of Mesos's
 * `register_frameworks` ACL. Pure: the master core consults it on every SUBSCRIBE (a change of
 * roles is a SUBSCRIBE too), `corral master --role-acl` loads it from a JSON file.
 *
 * The principal it is checked against is the one the bus vouches for: the `<principal>` token of
 * the subject the call came on (`corral.<cluster>.master.scheduler.<principal>`), which NATS
 * permissions tie to a NATS user. A framework calling on the shared subject has no principal.
 *
 * @module
 */

import { roleNameError } from "../sdk/roles.ts";
import { tokenProblem } from "../sdk/wire/subjects.ts";

/** The role list value that allows every role (Mesos's `type: ANY`). */
export const ANY_ROLE = "ANY";

/**
 * Which roles each principal's frameworks may use. Example: `{ "principals": { "marathon": ["web",
 * "batch"], "ops": "ANY" }, "permissive": false }` lets marathon's frameworks use web and batch,
 * ops's frameworks any role, and refuses every other framework.
 */
export interface FrameworkRoleAcl {
  /**
   * Principal -> the roles its frameworks may subscribe with, by exact name (`*`, the role of a
   * framework that names none, must be listed to be allowed), or `"ANY"`. A listed principal may
   * use no other role, whatever {@link permissive} says.
   */
  principals: Readonly<Record<string, readonly string[] | typeof ANY_ROLE>>;
  /**
   * Whether a principal not listed, and a framework without a principal, may use any role. As
   * Mesos's ACLs' `permissive`, whose default is also true.
   * @default true
   */
  permissive?: boolean;
}

/**
 * Why `value` is not a {@link FrameworkRoleAcl}, naming the field (`principals.marathon[1]`) and the
 * rule; `undefined` when it is one. For an ACL read from a file or handed to the master.
 */
export function roleAclProblem(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "must be an object such as {\"principals\": {\"marathon\": [\"web\"]}}";
  for (const key of Object.keys(value)) {
    if (key !== "principals" && key !== "permissive") return `${key}: unknown field (expected principals, permissive)`;
  }
  const acl = value as { principals?: unknown; permissive?: unknown };
  if (acl.permissive !== undefined && typeof acl.permissive !== "boolean") return `permissive: must be true or false, got ${JSON.stringify(acl.permissive)}`;
  const principals = acl.principals;
  if (typeof principals !== "object" || principals === null || Array.isArray(principals)) return "principals: must be an object mapping principals to role lists";
  for (const [principal, roles] of Object.entries(principals)) {
    // A principal is a subject token: one that cannot be could never call, so its entry is a typo.
    const principalProblem = tokenProblem(principal);
    if (principalProblem) return `principals[${JSON.stringify(principal)}]: a principal ${principalProblem}`;
    if (roles === ANY_ROLE) continue;
    if (!Array.isArray(roles)) return `principals.${principal}: must be a list of roles or "${ANY_ROLE}", got ${JSON.stringify(roles)}`;
    for (const [i, role] of roles.entries()) {
      const problem = typeof role === "string" ? roleNameError(role, true) : `must be a role name, got ${JSON.stringify(role)}`;
      if (problem) return `principals.${principal}[${i}]: ${problem}`;
    }
  }
  return undefined;
}

/**
 * Why the frameworks of `principal` (`""`: none) may not subscribe with `roles` under `acl`, naming
 * the principal and the first role refused; `undefined` when they may. No ACL allows everything.
 */
export function roleAuthorizationProblem(acl: FrameworkRoleAcl | undefined, principal: string, roles: readonly string[]): string | undefined {
  if (acl === undefined) return undefined;
  const who = principal === "" ? "a framework without a principal" : `principal '${principal}'`;
  const allowed = principal !== "" && Object.hasOwn(acl.principals, principal) ? acl.principals[principal] : undefined;
  if (allowed === undefined) {
    if (acl.permissive ?? true) return undefined;
    return `${who} may not subscribe with role '${roles[0] ?? "*"}': the role ACL does not list it and is not permissive`;
  }
  if (allowed === ANY_ROLE) return undefined;
  const refused = roles.find((role) => !allowed.includes(role));
  if (refused === undefined) return undefined;
  return `${who} may not subscribe with role '${refused}' (the role ACL allows it ${allowed.length === 0 ? "no role" : allowed.map((r) => `'${r}'`).join(", ")})`;
}
