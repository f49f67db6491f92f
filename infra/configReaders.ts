/**
 * Typed readers of the stack configuration (`chat-gateway:<key>`). Each one
 * applies its default and, instead of throwing, pushes a problem that names
 * the key, the allowed values and an example: infra/config.ts then reports
 * every problem of a broken `Pulumi.<stack>.yaml` in one error.
 */

/** Reads one raw config value (as Pulumi hands it over: a string, JSON for lists). */
export type ConfigSource = (key: string) => string | undefined;

export class StackConfigError extends Error {
  constructor(
    readonly stackName: string,
    readonly problems: readonly string[],
  ) {
    super(
      `Invalid configuration of stack "${stackName}" (${problems.length} problem${problems.length === 1 ? "" : "s"}):\n  - ${problems.join("\n  - ")}`,
    );
    this.name = "StackConfigError";
  }
}

export interface StackReaders {
  /** Stacks named `production` or `prod…` must be highly available and protected. */
  readonly production: boolean;
  /** Every problem found so far; the readers and the rules push here. */
  readonly problems: string[];
  str(key: string): string | undefined;
  required(key: string, what: string): string;
  matching(key: string, value: string, pattern: RegExp, what: string): string;
  int(key: string, def: number, min: number, max: number, unit: string): number;
  ratio(key: string, def: number): number;
  bool(key: string, def: boolean): boolean;
  oneOf<T extends string>(key: string, allowed: readonly T[], def: T): T;
  /** A YAML list (JSON from Pulumi) or a comma-separated string (`pulumi config set k "a,b"`). */
  list(key: string): string[];
}

export function stackReaders(get: ConfigSource, stack: string): StackReaders {
  const problems: string[] = [];
  const str = (key: string): string | undefined => {
    const v = get(key)?.trim();
    return v === undefined || v === "" ? undefined : v;
  };
  /** The raw text of an optional key, or undefined (with a problem) when `bad` says it is wrong. */
  const checked = (key: string, bad: (raw: string) => string | undefined): string | undefined => {
    const raw = str(key);
    const problem = raw === undefined ? undefined : bad(raw);
    if (problem !== undefined) problems.push(problem);
    return problem === undefined ? raw : undefined;
  };
  return {
    production: stack === "production" || stack.startsWith("prod"),
    problems,
    str,
    required(key, what) {
      const v = str(key);
      if (v === undefined) problems.push(`${key} is required (${what})`);
      return v ?? "";
    },
    matching(key, value, pattern, what) {
      if (value !== "" && !pattern.test(value)) problems.push(`${key} must be ${what}; got "${value}"`);
      return value;
    },
    int(key, def, min, max, unit) {
      const raw = checked(key, (r) => intProblem(key, r, def, min, max, unit));
      return raw === undefined ? def : Number(raw);
    },
    ratio(key, def) {
      const raw = checked(key, (r) => ratioProblem(key, r, def));
      return raw === undefined ? def : Number(raw);
    },
    bool(key, def) {
      const raw = checked(key, (r) => (r === "true" || r === "false" ? undefined : `${key} must be true or false, e.g. ${def}; got "${r}"`));
      return raw === undefined ? def : raw === "true";
    },
    oneOf(key, allowed, def) {
      const raw = checked(key, (r) => ((allowed as readonly string[]).includes(r) ? undefined : `${key} must be one of ${allowed.join(", ")}, e.g. ${def}; got "${r}"`));
      return (raw ?? def) as typeof def;
    },
    list(key) {
      const raw = str(key);
      return raw === undefined ? [] : parseList(key, raw, problems);
    },
  };
}

function intProblem(key: string, r: string, def: number, min: number, max: number, unit: string): string | undefined {
  const n = Number(r);
  if (/^-?\d+$/.test(r) && Number.isSafeInteger(n) && n >= min && n <= max) return undefined;
  return `${key} must be an integer from ${min} to ${max} (${unit}), e.g. ${def}; got "${r}"`;
}

function ratioProblem(key: string, r: string, def: number): string | undefined {
  const n = Number(r);
  if (Number.isFinite(n) && n > 0 && n < 1) return undefined;
  return `${key} must be a ratio between 0 and 1 exclusive, e.g. ${def} (0.01 is 1%); got "${r}"`;
}

/** A JSON list of strings, or a comma-separated string; anything else is a problem and an empty list. */
function parseList(key: string, raw: string, problems: string[]): string[] {
  if (!raw.startsWith("[")) return raw.split(",").map((x) => x.trim()).filter(Boolean);
  try {
    const parsed: unknown = JSON.parse(raw);
    if (Array.isArray(parsed) && parsed.every((x) => typeof x === "string")) return parsed.map((x) => x.trim()).filter(Boolean);
  } catch {
    /* reported below */
  }
  problems.push(`${key} must be a list of strings, e.g. ["a@example.com"]`);
  return [];
}
