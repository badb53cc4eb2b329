/**
 * Role names, as Mesos defines them: hierarchical paths such as `eng/web`, with `*` standing for
 * "unreserved" (the default role). Reservations made for a role are usable by that role and every
 * role below it in the tree.
 */

/** The pseudo-role of unreserved resources. */
export const UNRESERVED_ROLE = "*";

/**
 * Checks a role name. Returns `null` when valid, otherwise the rule it breaks (used in error
 * messages). `*` is valid only when `allowStar` is set, because it names no real role.
 */
export function roleNameError(role: string, allowStar = false): string | null {
  if (typeof role !== "string") return "role must be a string";
  if (role === UNRESERVED_ROLE) return allowStar ? null : "'*' is not a role name";
  if (role.length === 0) return "role must not be empty";
  if (role.length > 256) return "role must be at most 256 characters";
  if (role.startsWith("/") || role.endsWith("/")) return "role must not start or end with '/'";
  if (role.includes("//")) return "role must not contain '//'";
  if (/[\s\u0000-\u001f\u007f]/.test(role)) return "role must not contain whitespace or control characters";
  for (const part of role.split("/")) {
    if (part === ".") return "role path components must not be '.'";
    if (part === "..") return "role path components must not be '..'";
    if (part.startsWith("-")) return "role path components must not start with '-'";
    if (part === "*") return "'*' is not allowed inside a role path";
  }
  return null;
}

/** True when `role` is a valid role name (`*` counts only if `allowStar`). */
export function isValidRole(role: string, allowStar = false): boolean {
  return roleNameError(role, allowStar) === null;
}

/** True when `ancestor` is `role` itself or one of its ancestors (`eng` for `eng/web/api`). */
export function isSelfOrAncestor(ancestor: string, role: string): boolean {
  return role === ancestor || (role.length > ancestor.length && role.startsWith(ancestor) && role[ancestor.length] === "/");
}

/** `role` and its ancestors, nearest first: `eng/web` gives `["eng/web", "eng"]`. */
export function selfAndAncestors(role: string): string[] {
  const result = [role];
  let cut = role.lastIndexOf("/");
  while (cut > 0) {
    result.push(role.slice(0, cut));
    cut = role.lastIndexOf("/", cut - 1);
  }
  return result;
}

/** The first path component: `eng` for `eng/web`. Quota is set per top-level role. */
export function topLevelRole(role: string): string {
  const cut = role.indexOf("/");
  return cut < 0 ? role : role.slice(0, cut);
}
