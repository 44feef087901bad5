// The SDK against a fake host, in Node: `npm test` in plugins/sdk-js.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defineStep, failed, http, validate } from '../index.js';

const logged = [];
globalThis.__runbookHost = {
  log: { log: (level, message) => logged.push([level, message]), progress() {}, milestone() {}, checkpoint() {} },
  clock: { sleep() {}, remaining: () => 1000n },
  http: {
    send(request) {
      if (request.url.startsWith('http://denied')) {
        const error = new Error('denied');
        error.payload = { tag: 'denied', val: { capability: 'http', requested: `GET ${request.url}`, hint: 'grant it' } };
        throw error;
      }
      return { status: 200, headers: [['content-type', 'application/json']], body: new TextEncoder().encode('{"a":1}'), elapsedUs: 1500n, finalUrl: request.url };
    },
  },
};

const step = defineStep({
  name: 't',
  version: '1.0.0',
  capabilities: ['http'],
  params: { type: 'object', required: ['url'], additionalProperties: false, properties: { url: { type: 'string' }, n: { type: 'integer', minimum: 1 }, list: { type: 'array', items: { enum: ['a', 'b'] } } } },
  run(params) {
    console.log('fetching', params.url);
    const answer = http.get(params.url).json();
    if (answer.a !== 1) throw failed('no');
    return { summary: 'ok', outputs: { a: answer.a, url: params.url } };
  },
});

test('parameters are checked with the path of the first problem', () => {
  assert.deepEqual(validate(step.definition.params, { url: 'x', list: ['a', 'c'] }), { path: 'list[1]', message: 'expected one of "a", "b", got "c"' });
  assert.throws(() => step.exports.check('{"url": "x", "n": 0}'), { tag: 'invalid-params', val: { path: 'n', message: 'must be at least 1, got 0' } });
  assert.throws(() => step.exports.check('{}'), { tag: 'invalid-params', val: { path: 'url', message: 'is required' } });
  // A placeholder is not checked.
  step.exports.check('{"url": "x", "n": "<params.n>"}');
});

test('run returns outputs as strings and console.log is a log line', () => {
  const result = step.exports.run('{"url": "http://ok/x"}');
  assert.deepEqual(result, { tag: 'done', val: { outputs: [['a', '1'], ['url', 'http://ok/x']], summary: 'ok' } });
  assert.deepEqual(logged.at(-1), ['info', 'fetching http://ok/x']);
});

test('a denial from the host is passed on typed', () => {
  assert.throws(() => step.exports.run('{"url": "http://denied/x"}'), { tag: 'denied', val: { capability: 'http', requested: 'GET http://denied/x', hint: 'grant it' } });
});

test('the descriptor carries the schema and what is transient', () => {
  const descriptor = step.exports.describe();
  assert.equal(descriptor.name, 't');
  assert.deepEqual(descriptor.capabilities, ['http']);
  assert.ok(JSON.parse(descriptor.paramsSchema)['x-runbook-transient'].includes('5xx'));
  assert.deepEqual(step.interfaces(), ['http']);
});
