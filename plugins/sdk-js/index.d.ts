// Types of plugins/sdk-js/index.js.

export type Capability = 'http' | 'kube' | 'aws' | 'secrets' | 'fs' | 'command';
export type ErrorKind = 'invalid-params' | 'denied' | 'failed' | 'transient' | 'timeout' | 'cancelled';

/** A failure, by kind: the host retries only `transient`. Host call errors are StepErrors too. */
export class StepError extends Error {
  constructor(kind: ErrorKind, message: string, detail?: { path?: string; capability?: string; requested?: string; hint?: string });
  kind: ErrorKind;
  /** invalid-params: where (`checks[1].url`). */
  path?: string;
  /** denied: the capability, what was asked, how to grant it. */
  capability?: string;
  requested?: string;
  hint?: string;
}
export function invalidParam(path: string, message: string): StepError;
export function failed(message: string): StepError;
export function transient(message: string): StepError;
export function timeout(message: string): StepError;

export interface PlannedAction { description: string; mutates: boolean }
export function read(description: string): PlannedAction;
export function write(description: string): PlannedAction;

export interface Outcome { summary: string; outputs?: Record<string, unknown> }
export interface Wait { afterMs: number; state: unknown; status?: string }
declare const WAIT: unique symbol;
export type Waiting = { readonly [WAIT]: true };
export function wait(wait: Wait): Waiting;

export interface NeededWhen { capability: Capability; param: string; values: string[]; or_absent: boolean; grant: string }

/** JSON Schema, the subset the SDK checks (other keywords are kept for the host and ignored). */
export interface Schema {
  type?: 'object' | 'array' | 'string' | 'number' | 'integer' | 'boolean' | 'null' | Array<'object' | 'array' | 'string' | 'number' | 'integer' | 'boolean' | 'null'>;
  description?: string;
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: boolean | Schema;
  items?: Schema;
  enum?: unknown[];
  const?: unknown;
  minimum?: number; maximum?: number; exclusiveMinimum?: number; exclusiveMaximum?: number;
  minLength?: number; maxLength?: number; pattern?: string;
  minItems?: number; maxItems?: number;
  anyOf?: Schema[]; oneOf?: Schema[];
  default?: unknown;
  [key: string]: unknown;
}

export interface StepDefinition<P = any> {
  name: string;
  version: string;
  description?: string;
  /** The `with` table's JSON Schema; parameters are checked against it before every call. */
  params?: Schema;
  capabilities?: Capability[];
  optionalCapabilities?: Capability[];
  /** Import the `secrets` interface to look up handles by name (`secretHandle`). */
  secretsByName?: boolean;
  idempotent?: boolean;
  /** Which failures are transient, in a phrase ("" when none are). */
  transient?: string;
  neededWhen?: NeededWhen[];
  /** What the schema cannot say; throw invalidParam(path, message). Skip `unresolved` values. */
  check?(params: P): void;
  plan?(params: P): Array<PlannedAction | string>;
  /** `state` is undefined on the first call, else what `wait` returned. */
  run?(params: P, state?: string): Outcome | Waiting | string | void;
  rollback?(params: P, outputs: Record<string, string>): string | void;
}

export interface Step<P = any> {
  definition: StepDefinition<P>;
  descriptor: unknown;
  interfaces(): string[];
  exports: {
    describe(): unknown;
    check(params: string): void;
    plan(params: string): PlannedAction[];
    run(params: string, state?: string): unknown;
    rollback(params: string, outputs: [string, string][]): string;
  };
}
export function defineStep<P = any>(definition: StepDefinition<P>): Step<P>;

export function unresolved(value: unknown): boolean;
export function validate(schema: Schema | boolean, value: unknown, path?: string): { path: string; message: string } | null;

export const log: Record<'trace' | 'debug' | 'info' | 'warn' | 'error', (...args: unknown[]) => void>;
export function progress(message: string, fraction?: number): void;
export function milestone(message: string): void;
export function checkpoint(key: string, value: unknown): void;
export function sleep(milliseconds: number): void;
export function remaining(): number;

export class Response {
  status: number;
  headers: [string, string][];
  body: Uint8Array;
  elapsedMs: number;
  finalUrl: string;
  readonly ok: boolean;
  header(name: string): string | undefined;
  text(): string;
  json(): any;
}
export interface RequestOptions {
  method?: string;
  url: string;
  headers?: Record<string, string> | [string, string][];
  body?: string | Uint8Array;
  json?: unknown;
  basicAuth?: [string, string];
  timeoutMs?: number;
  followRedirects?: boolean;
}
type Verb = (url: string, options?: Omit<RequestOptions, 'url' | 'method'>) => Response;
export const http: { request(options: RequestOptions): Response; get: Verb; head: Verb; post: Verb; put: Verb; patch: Verb; delete: Verb };

export function secretHandle(name: string): string;
export function isSecretHandle(value: unknown): boolean;
export function capability(name: 'kube' | 'aws' | 'command'): any;
export const HOST_TRANSIENT: string;
