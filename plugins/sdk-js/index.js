// runbook plugin SDK for JavaScript: `defineStep({...})` and the helpers a
// step uses to reach the world through the host.
//
// This module imports no WIT interface itself. The build (`build.mjs`)
// generates the component's entry module, which imports exactly the
// interfaces of the world it targets and hands them to the SDK through
// `globalThis.__runbookHost`; so the SDK links in every world, and a
// plugin can be imported by Node (the build reads its descriptor that way,
// and tests run it against a fake host).

import { joinPath, unresolved, validate } from './schema.js';

export { unresolved, validate };

const HOST = '__runbookHost';

/** The interfaces the component was built with. */
function host() {
  const bound = globalThis[HOST];
  if (!bound) {
    throw new Error('the runbook host is not bound: build the plugin with plugins/sdk-js/build.mjs (or set globalThis.__runbookHost in a test)');
  }
  return bound;
}

function iface(name, why) {
  const bound = host()[name];
  if (!bound) {
    throw new StepError('failed', `this plugin was built without the \`${name}\` interface, so it cannot ${why}: declare the \`${name}\` capability in defineStep (${name === 'secrets' ? '`secretsByName: true` too' : 'capabilities or optionalCapabilities'}) and build again`);
  }
  return bound;
}

// ---------------------------------------------------------------------------
// Errors

/**
 * A failure a step returns, by kind: the host retries only `transient`.
 * Errors from host calls (a denial, a refused connection, a timeout) are
 * StepErrors too; rethrow them to pass them on.
 */
export class StepError extends Error {
  /**
   * @param {'invalid-params'|'denied'|'failed'|'transient'|'timeout'|'cancelled'} kind
   * @param {string} message
   * @param {object} [detail] `{path}` for invalid-params, `{capability, requested, hint}` for denied
   */
  constructor(kind, message, detail = {}) {
    super(message);
    this.name = 'StepError';
    this.kind = kind;
    Object.assign(this, detail);
  }

  /** The WIT `error` variant. */
  toVariant() {
    switch (this.kind) {
      case 'invalid-params':
        return { tag: 'invalid-params', val: { path: this.path || '', message: this.message } };
      case 'denied':
        return { tag: 'denied', val: { capability: this.capability || '', requested: this.requested || '', hint: this.hint || '' } };
      case 'cancelled':
        return { tag: 'cancelled' };
      case 'failed':
      case 'transient':
      case 'timeout':
        return { tag: this.kind, val: this.message };
      default:
        return { tag: 'failed', val: this.message };
    }
  }

  /** From the WIT `error` variant a host call returned. */
  static fromVariant(variant) {
    const { tag, val } = variant;
    switch (tag) {
      case 'invalid-params':
        return new StepError(tag, val.message, { path: val.path });
      case 'denied':
        return new StepError(tag, `denied: ${val.requested}: ${val.hint}`, { capability: val.capability, requested: val.requested, hint: val.hint });
      case 'cancelled':
        return new StepError(tag, 'cancelled');
      default:
        return new StepError(tag, String(val));
    }
  }
}

/** The parameters are wrong; `path` is where (`checks[1].url`). */
export const invalidParam = (path, message) => new StepError('invalid-params', message, { path });
/** The work failed: say what differed. */
export const failed = (message) => new StepError('failed', message);
/** May pass if tried again (a 503, a refused connection). */
export const transient = (message) => new StepError('transient', message);
/** A deadline passed. */
export const timeout = (message) => new StepError('timeout', message);

/** Host results: a `ComponentError` whose payload is the `error` variant. */
function hostCall(call) {
  try {
    return call();
  } catch (error) {
    if (error && error.payload && typeof error.payload.tag === 'string') {
      throw StepError.fromVariant(error.payload);
    }
    throw error;
  }
}

/** What a thrown value becomes for the host. */
function toVariant(error) {
  if (error instanceof StepError) return error.toVariant();
  if (error && error.payload && typeof error.payload.tag === 'string') return error.payload;
  // A bug in the plugin: say so, with where, and fail the step.
  const text = error instanceof Error ? `${error.name}: ${error.message}` : `thrown: ${show(error)}`;
  try {
    if (error instanceof Error && error.stack) host().log.log('error', `${text}\n${error.stack}`);
  } catch {
    // No host (a test): the message is enough.
  }
  return { tag: 'failed', val: `plugin error: ${text}` };
}

// ---------------------------------------------------------------------------
// Logs, progress, checkpoints, time

function show(value) {
  if (typeof value === 'string') return value;
  if (value instanceof Error) return value.stack || `${value.name}: ${value.message}`;
  if (typeof value === 'bigint') return `${value}n`;
  if (value === undefined) return 'undefined';
  try {
    const text = JSON.stringify(value, (_, item) => (typeof item === 'bigint' ? `${item}` : item instanceof Uint8Array ? `<${item.length} bytes>` : item));
    return text === undefined ? String(value) : text;
  } catch {
    return String(value);
  }
}

function line(level, args) {
  host().log.log(level, args.map(show).join(' '));
}

/** One log line per call, at its level; the operator sees it live. */
export const log = {
  trace: (...args) => line('trace', args),
  debug: (...args) => line('debug', args),
  info: (...args) => line('info', args),
  warn: (...args) => line('warn', args),
  error: (...args) => line('error', args),
};

/** Progress on long work; `fraction` between 0 and 1 when known. */
export function progress(message, fraction) {
  host().log.progress(message, fraction === undefined || fraction === null ? undefined : Math.min(1, Math.max(0, fraction)));
}

/** A moment the run's notifications send (a canary reached a stage). */
export function milestone(message) {
  host().log.milestone(message);
}

/**
 * Record, before changing anything, a value `rollback` will need; it comes
 * back among the outputs under `key`. Throws when the run can no longer be
 * recorded: then change nothing.
 */
export function checkpoint(key, value) {
  hostCall(() => host().log.checkpoint(key, typeof value === 'string' ? value : JSON.stringify(value)));
}

/** Sleep on the host; throws a `cancelled`/`timeout` StepError when the run stops. */
export function sleep(milliseconds) {
  hostCall(() => host().clock.sleep(BigInt(Math.max(0, Math.round(milliseconds)))));
}

/** Milliseconds left before the step's timeout. */
export function remaining() {
  return Number(host().clock.remaining());
}

// `console.*` goes to the log import, at its level, so nothing a plugin
// prints vanishes (and it works with or without WASI stdio). Outside a
// component (Node, the build) the original console is used.
const original = {};
for (const [method, level] of [['log', 'info'], ['info', 'info'], ['debug', 'debug'], ['trace', 'trace'], ['warn', 'warn'], ['error', 'error']]) {
  original[method] = console[method];
  console[method] = (...args) => {
    const bound = globalThis[HOST];
    if (bound && bound.log) bound.log.log(level, args.map(show).join(' '));
    else original[method].apply(console, args);
  };
}

// ---------------------------------------------------------------------------
// HTTP

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** An HTTP answer. */
export class Response {
  constructor(raw) {
    /** @type {number} */
    this.status = raw.status;
    /** @type {[string, string][]} names in lower case */
    this.headers = raw.headers;
    /** @type {Uint8Array} */
    this.body = raw.body;
    /** Milliseconds from sending to the end of the body. */
    this.elapsedMs = Number(raw.elapsedUs) / 1000;
    /** The URL that answered, after redirects. */
    this.finalUrl = raw.finalUrl;
  }

  /** The first value of a header, or undefined. */
  header(name) {
    const wanted = name.toLowerCase();
    const found = this.headers.find(([key]) => key.toLowerCase() === wanted);
    return found ? found[1] : undefined;
  }

  text() {
    return decoder.decode(this.body);
  }

  /** The body as JSON; a body that is not JSON is a `failed` StepError naming it. */
  json() {
    const text = this.text();
    try {
      return JSON.parse(text);
    } catch (error) {
      const excerpt = text.length > 200 ? `${text.slice(0, 200)}...` : text;
      throw failed(`the answer from ${this.finalUrl} (status ${this.status}) is not JSON (${error.message}): ${JSON.stringify(excerpt)}`);
    }
  }

  /** 200 to 299. */
  get ok() {
    return this.status >= 200 && this.status < 300;
  }
}

function headerList(headers) {
  if (!headers) return [];
  const entries = Array.isArray(headers) ? headers : Object.entries(headers);
  return entries.map(([name, value]) => [String(name), String(value)]);
}

/**
 * Send a request through the host, within the step's `grants.http`.
 * Header values and the body may hold sealed secret handles.
 * @param {object} options
 * @param {string} [options.method] default GET
 * @param {string} options.url
 * @param {Record<string,string>|[string,string][]} [options.headers]
 * @param {string|Uint8Array} [options.body]
 * @param {unknown} [options.json] a body sent as JSON (sets content-type)
 * @param {[string, string]} [options.basicAuth] user and password (the password may be a handle)
 * @param {number} [options.timeoutMs]
 * @param {boolean} [options.followRedirects] each redirect is checked against the grants
 * @returns {Response}
 */
function request(options) {
  const headers = headerList(options.headers);
  let body;
  if (options.json !== undefined) {
    body = encoder.encode(JSON.stringify(options.json));
    if (!headers.some(([name]) => name.toLowerCase() === 'content-type')) headers.push(['content-type', 'application/json']);
  } else if (typeof options.body === 'string') {
    body = encoder.encode(options.body);
  } else if (options.body !== undefined) {
    body = options.body;
  }
  const send = iface('http', 'send HTTP requests').send;
  const raw = hostCall(() =>
    send({
      method: (options.method || 'GET').toUpperCase(),
      url: options.url,
      headers,
      body,
      bodyFile: undefined,
      basicAuth: options.basicAuth,
      timeoutMs: options.timeoutMs === undefined ? undefined : BigInt(Math.round(options.timeoutMs)),
      followRedirects: Boolean(options.followRedirects),
    }),
  );
  return new Response(raw);
}

/** HTTP through the host: `http.get(url, {headers})`, `http.post(url, {json})`, `http.request({...})`. */
export const http = {
  request,
  get: (url, options = {}) => request({ ...options, method: 'GET', url }),
  head: (url, options = {}) => request({ ...options, method: 'HEAD', url }),
  post: (url, options = {}) => request({ ...options, method: 'POST', url }),
  put: (url, options = {}) => request({ ...options, method: 'PUT', url }),
  patch: (url, options = {}) => request({ ...options, method: 'PATCH', url }),
  delete: (url, options = {}) => request({ ...options, method: 'DELETE', url }),
};

// ---------------------------------------------------------------------------
// Secrets, and the other capabilities as raw interfaces

/**
 * The sealed handle of a granted secret, looked up by name (needs the
 * `secrets` capability and `secretsByName: true`). A parameter written
 * `${{ secrets.NAME }}` already holds a handle: use it as it is.
 */
export function secretHandle(name) {
  const secrets = iface('secrets', 'look up secrets by name');
  return hostCall(() => secrets.handle(name));
}

/** Whether a string holds a sealed secret handle. */
export function isSecretHandle(value) {
  return typeof value === 'string' && value.includes('@@runbook-secret/');
}

/**
 * The `kube`, `aws` and `command` interfaces as jco binds them (records
 * as objects with camelCase fields, u64 as BigInt), their errors turned
 * into StepErrors: `capability('aws').call({...})`.
 */
export function capability(name) {
  const bound = iface(name, `call \`${name}\``);
  return new Proxy(bound, {
    get(target, key) {
      const value = target[key];
      return typeof value === 'function' ? (...args) => hostCall(() => value(...args)) : value;
    },
  });
}

// ---------------------------------------------------------------------------
// Plans and results

/** A planned action that changes nothing. */
export const read = (description) => ({ description, mutates: false });
/** A planned action that changes something outside the runner. */
export const write = (description) => ({ description, mutates: true });

const WAIT = Symbol('runbook.wait');

/**
 * Not done yet: return `wait({afterMs, state, status})` from `run` to be
 * called again after `afterMs` with `state` (JSON-encoded when not a string).
 */
export function wait({ afterMs, state, status = '' }) {
  return { [WAIT]: true, afterMs, state: typeof state === 'string' ? state : JSON.stringify(state ?? null), status };
}

function runResult(result) {
  if (result && result[WAIT]) {
    return { tag: 'wait', val: { afterMs: BigInt(Math.max(0, Math.round(result.afterMs))), state: result.state, status: result.status } };
  }
  if (typeof result === 'string' || result === undefined) {
    return { tag: 'done', val: { outputs: [], summary: result || 'done' } };
  }
  const outputs = Object.entries(result.outputs || {}).map(([key, value]) => [key, typeof value === 'string' ? value : JSON.stringify(value)]);
  return { tag: 'done', val: { outputs, summary: result.summary || 'done' } };
}

// ---------------------------------------------------------------------------
// defineStep

const CAPABILITIES = ['http', 'kube', 'aws', 'secrets', 'fs', 'command'];

/** What the host retries unless a plugin says otherwise (as the Rust SDK). */
export const HOST_TRANSIENT = 'a lost or refused connection, and 429 or 5xx answers (AWS throttling included) from the services the host reaches for it';

function parse(params, schema) {
  let value;
  try {
    value = JSON.parse(params);
  } catch (error) {
    throw invalidParam('', `the parameters are not JSON: ${error.message}`);
  }
  const problem = validate(schema, value);
  if (problem) throw invalidParam(problem.path, problem.message);
  return value;
}

/**
 * Define a step plugin. The object returned is the plugin's default
 * export; the build turns it into the component's exports.
 * @template P
 * @param {import('./index.js').StepDefinition<P>} definition
 */
export function defineStep(definition) {
  for (const key of ['name', 'version']) {
    if (typeof definition[key] !== 'string' || definition[key] === '') throw new Error(`defineStep: \`${key}\` is required`);
  }
  const required = definition.capabilities || [];
  const optional = definition.optionalCapabilities || [];
  for (const name of [...required, ...optional]) {
    if (!CAPABILITIES.includes(name)) throw new Error(`defineStep: unknown capability \`${name}\`; one of ${CAPABILITIES.join(', ')}`);
  }
  if (definition.secretsByName && ![...required, ...optional].includes('secrets')) {
    throw new Error('defineStep: `secretsByName: true` needs the `secrets` capability (in capabilities or optionalCapabilities)');
  }
  const params = definition.params || { type: 'object', additionalProperties: false };
  const schema = { ...params };
  if (definition.neededWhen && definition.neededWhen.length) schema['x-runbook-needed-when'] = definition.neededWhen;
  schema['x-runbook-transient'] = definition.transient ?? HOST_TRANSIENT;
  const descriptor = {
    name: definition.name,
    version: definition.version,
    description: definition.description || '',
    paramsSchema: JSON.stringify(schema),
    capabilities: required,
    optionalCapabilities: optional,
    idempotent: Boolean(definition.idempotent),
  };

  const checked = (text) => {
    const value = parse(text, params);
    if (definition.check) definition.check(value);
    return value;
  };
  const guard = (body) => {
    try {
      return body();
    } catch (error) {
      throw toVariant(error);
    }
  };

  return {
    definition,
    descriptor,
    /** What the build reads to pick the world. */
    interfaces() {
      const names = [...required, ...optional].filter((name) => ['http', 'kube', 'aws', 'command'].includes(name));
      if (definition.secretsByName) names.push('secrets');
      return [...new Set(names)];
    },
    exports: {
      describe: () => descriptor,
      check: (text) =>
        guard(() => {
          checked(text);
        }),
      plan: (text) =>
        guard(() => {
          const value = checked(text);
          const actions = definition.plan ? definition.plan(value) || [] : [];
          return actions.map((action) => (typeof action === 'string' ? read(action) : { description: action.description, mutates: Boolean(action.mutates) }));
        }),
      run: (text, state) =>
        guard(() => {
          const value = checked(text);
          if (!definition.run) throw failed('this plugin has no `run`');
          return runResult(definition.run(value, state === undefined || state === null ? undefined : state));
        }),
      rollback: (text, outputs) =>
        guard(() => {
          const value = parse(text, params);
          if (!definition.rollback) return 'nothing to undo';
          const result = definition.rollback(value, Object.fromEntries(outputs));
          return typeof result === 'string' ? result : 'rolled back';
        }),
    },
  };
}

export { joinPath };
