// http-json-js: GETs a JSON document from a granted URL and exposes the
// fields that JSON pointers (RFC 6901) select as the step's outputs, for
// later steps to read as `${{ steps.ID.outputs.KEY }}`: the version a
// service reports, a build's commit, a feature's state. Written in
// JavaScript with plugins/sdk-js.

import { defineStep, failed, http, invalidParam, read, transient, unresolved } from '../sdk-js/index.js';

const DURATION = '^\\s*\\d+\\s*(ms|s|m|h)(\\s*\\d+\\s*(ms|s|m|h))*\\s*$';
const OUTPUT_NAME = /^[A-Za-z_][A-Za-z0-9_-]*$/;
const status = { type: 'integer', minimum: 100, maximum: 599 };

/** "1m 30s" in milliseconds. */
function duration(text) {
  const units = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  for (const [, amount, unit] of text.matchAll(/(\d+)\s*(ms|s|m|h)/g)) total += Number(amount) * units[unit];
  return total;
}

/** Why `pointer` is not a JSON pointer, or null. */
function pointerProblem(pointer) {
  if (pointer !== '' && !pointer.startsWith('/')) return `\`${pointer}\` is not a JSON pointer: it must be empty (the whole document) or start with \`/\` (\`/checks/database\`, \`/items/0/id\`)`;
  if (/~(?![01])/.test(pointer)) return `\`${pointer}\` is not a JSON pointer: \`~\` must be followed by 0 (for \`~\`) or 1 (for \`/\`)`;
  return null;
}

/** The value at `pointer` in `document`, or `{missing}` saying where it stops. */
function resolve(document, pointer) {
  if (pointer === '') return { value: document };
  const tokens = pointer.slice(1).split('/').map((token) => token.replace(/~1/g, '/').replace(/~0/g, '~'));
  let value = document;
  let at = '';
  for (const token of tokens) {
    const where = at === '' ? 'the document' : `\`${at}\``;
    if (Array.isArray(value)) {
      if (!/^(0|[1-9]\d*)$/.test(token) || Number(token) >= value.length) {
        return { missing: `${where} is an array of ${value.length} item${value.length === 1 ? '' : 's'}, with no index \`${token}\`` };
      }
      value = value[Number(token)];
    } else if (value !== null && typeof value === 'object') {
      if (!Object.prototype.hasOwnProperty.call(value, token)) {
        const keys = Object.keys(value);
        const has = keys.length ? `it has ${keys.slice(0, 10).map((key) => `\`${key}\``).join(', ')}${keys.length > 10 ? ', ...' : ''}` : 'it is empty';
        return { missing: `${where} has no member \`${token}\` (${has})` };
      }
      value = value[token];
    } else {
      return { missing: `${where} is ${value === null ? 'null' : `a ${typeof value}`} (${JSON.stringify(value)}), not an object or an array` };
    }
    at += `/${token.replace(/~/g, '~0').replace(/\//g, '~1')}`;
  }
  return { value };
}

/** An output's text: strings as they are, anything else as JSON. */
const text = (value) => (typeof value === 'string' ? value : JSON.stringify(value));

function expected(params) {
  const given = params.expect_status;
  return given === undefined ? null : Array.isArray(given) ? given : [given];
}

function describeRequest(params) {
  const fields = Object.entries(params.outputs).map(([name, pointer]) => `${name} ← ${pointer === '' ? '(whole document)' : pointer}`);
  const wanted = expected(params);
  return `GET ${params.url}${wanted ? `, expect ${wanted.join(' or ')}` : ''}, read ${fields.join(', ')}`;
}

export default defineStep({
  name: 'http-json-js',
  version: '0.1.0',
  description: 'Reads fields of a JSON document at a granted URL (JSON pointers) into outputs',
  capabilities: ['http'],
  // A header may hold `${{ secrets.NAME }}` (an API key): the host puts the
  // value in on the way to a granted URL.
  optionalCapabilities: ['secrets'],
  idempotent: true,
  transient: 'a lost or refused connection, a timeout, and 429 or 5xx answers',
  params: {
    type: 'object',
    additionalProperties: false,
    required: ['url', 'outputs'],
    properties: {
      url: { type: 'string', pattern: '^https?://', description: 'The JSON document; it must be within `grants.http`' },
      outputs: {
        type: 'object',
        additionalProperties: { type: 'string' },
        description: 'Output name → JSON pointer (RFC 6901) into the answer: `{ version = "/version", database = "/checks/database" }`',
      },
      defaults: {
        type: 'object',
        additionalProperties: { type: 'string' },
        description: 'Output name → value to use when its pointer is not in the answer (else a missing pointer fails the step)',
      },
      headers: { type: 'object', additionalProperties: { type: 'string' }, description: 'Request headers; values may hold `${{ secrets.NAME }}`' },
      expect_status: {
        anyOf: [status, { type: 'array', items: status, minItems: 1 }],
        description: 'Status or statuses to accept (default any 2xx): `[200, 503]` reads a degraded answer too',
      },
      request_timeout: { type: 'string', pattern: DURATION, description: 'Timeout of the request (default "10s")' },
      follow_redirects: { type: 'boolean', description: 'Follow redirects, each within `grants.http` (default false)' },
    },
  },

  check(params) {
    const names = Object.keys(params.outputs);
    if (names.length === 0) throw invalidParam('outputs', 'name at least one output: `outputs = { version = "/version" }`');
    for (const [name, pointer] of Object.entries(params.outputs)) {
      if (!OUTPUT_NAME.test(name)) throw invalidParam(`outputs.${name}`, `\`${name}\` is not an output name: letters, digits, \`_\` and \`-\`, not starting with a digit`);
      if (unresolved(pointer)) continue;
      const problem = pointerProblem(pointer);
      if (problem) throw invalidParam(`outputs.${name}`, problem);
    }
    for (const name of Object.keys(params.defaults || {})) {
      if (!names.includes(name)) throw invalidParam(`defaults.${name}`, `\`${name}\` is not one of the outputs (${names.map((item) => `\`${item}\``).join(', ')})`);
    }
  },

  plan(params) {
    return [read(describeRequest(params))];
  },

  run(params) {
    const response = http.get(params.url, {
      headers: { accept: 'application/json', ...(params.headers || {}) },
      timeoutMs: duration(params.request_timeout || '10s'),
      followRedirects: params.follow_redirects,
    });
    const took = `${response.status} in ${response.elapsedMs.toFixed(1)} ms`;
    console.log(`GET ${params.url}: ${took}`);
    const wanted = expected(params);
    const accepted = wanted ? wanted.includes(response.status) : response.ok;
    if (!accepted) {
      const body = response.text();
      const excerpt = body.length > 200 ? `${body.slice(0, 200)}...` : body;
      const message = `GET ${params.url} answered ${response.status}, expected ${wanted ? wanted.join(' or ') : '2xx'}: ${excerpt}`;
      // An overloaded or failing service may answer next time.
      throw response.status >= 500 || response.status === 429 ? transient(message) : failed(message);
    }
    const document = response.json();
    const outputs = {};
    const missing = [];
    for (const [name, pointer] of Object.entries(params.outputs)) {
      const found = resolve(document, pointer);
      if ('value' in found) {
        outputs[name] = text(found.value);
        console.debug(`${name} = ${outputs[name]}`);
      } else if (params.defaults && name in params.defaults) {
        outputs[name] = params.defaults[name];
        console.warn(`output \`${name}\`: JSON pointer \`${pointer}\` is not in the answer (${found.missing}); using its default ${JSON.stringify(outputs[name])}`);
      } else {
        missing.push(`output \`${name}\`: JSON pointer \`${pointer}\` is not in the answer: ${found.missing}`);
      }
    }
    if (missing.length) {
      throw failed(`${missing.length} of ${Object.keys(params.outputs).length} pointers not found in the JSON from GET ${params.url}: ${missing.join('; ')}`);
    }
    const names = Object.keys(outputs);
    return {
      summary: `read ${names.join(', ')} from GET ${params.url} (${took})`,
      outputs,
    };
  },

  rollback() {
    return 'nothing to undo: http-json-js only reads';
  },
});
