#!/usr/bin/env node
// Builds a JavaScript step plugin into a sealed component:
//
//   node plugins/sdk-js/build.mjs SRC.js -o OUT.wasm [--world W] [--wit DIR] [--no-seal]
//   npm run build --prefix plugins/sdk-js -- SRC.js -o OUT.wasm
//
// 1. Imports SRC in Node and reads its `defineStep` descriptor: the
//    capabilities it declares decide which interfaces it imports.
// 2. Picks the narrowest world of the WIT package with exactly those
//    interfaces (`step-base`, `step-http`, `step-http-secrets`, ...); when
//    the package has no world with exactly them, writes one into a copy of
//    the WIT, so the import list is always what the plugin declares.
// 3. Generates the component's entry module (the interfaces of that world,
//    handed to the SDK; the five exports) and runs componentize-js (the
//    version pinned in package-lock.json) without `wasi:http` and the
//    fetch event, which the host does not provide.
// 4. Seals it with `runbook plugin seal` (the host binary in $RUNBOOK or on
//    PATH), which writes the `runbook:capabilities` section from
//    `describe`.

import { componentize } from '@bytecodealliance/componentize-js';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, delimiter, dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const SDK = dirname(fileURLToPath(import.meta.url));

function usage(message) {
  if (message) console.error(`build: ${message}`);
  console.error('usage: node plugins/sdk-js/build.mjs SRC.js -o OUT.wasm [--world WORLD] [--wit DIR] [--no-seal]');
  process.exit(2);
}

function parseArgs(argv) {
  const options = { wit: join(SDK, 'wit'), seal: true };
  for (let index = 0; index < argv.length; index++) {
    const arg = argv[index];
    const value = () => argv[++index] ?? usage(`${arg} needs a value`);
    if (arg === '-o' || arg === '--out') options.out = value();
    else if (arg === '--world') options.world = value();
    else if (arg === '--wit') options.wit = value();
    else if (arg === '--no-seal') options.seal = false;
    else if (arg === '-h' || arg === '--help') usage();
    else if (arg.startsWith('-')) usage(`unknown option ${arg}`);
    else if (!options.source) options.source = arg;
    else if (!options.out) options.out = arg;
    else usage(`unexpected argument ${arg}`);
  }
  if (!options.source) usage('SRC is required');
  // `npm run build -- SRC` runs in this folder: paths are the caller's.
  const base = process.env.npm_lifecycle_event === 'build' && process.env.INIT_CWD ? process.env.INIT_CWD : process.cwd();
  options.source = resolve(base, options.source);
  options.wit = resolve(base, options.wit);
  options.out = resolve(base, options.out ?? join(dirname(options.source), 'dist', `${basename(dirname(options.source))}.wasm`));
  return options;
}

// --- The WIT package: its version and what each world imports -------------

function witFiles(dir) {
  return readdirSync(dir)
    .filter((name) => name.endsWith('.wit'))
    .map((name) => join(dir, name));
}

function readPackage(dir) {
  const text = witFiles(dir)
    .map((file) => readFileSync(file, 'utf8'))
    .join('\n')
    .replace(/\/\/[^\n]*/g, '');
  const pkg = /package\s+([\w:-]+)@([\w.-]+)\s*;/.exec(text);
  if (!pkg) throw new Error(`no \`package ...@VERSION;\` in ${dir}`);
  const worlds = new Map();
  for (const match of text.matchAll(/world\s+([\w-]+)\s*\{([^}]*)\}/g)) {
    const body = match[2];
    worlds.set(match[1], {
      includes: [...body.matchAll(/include\s+([\w-]+)\s*;/g)].map((m) => m[1]),
      imports: [...body.matchAll(/import\s+([\w-]+)\s*;/g)].map((m) => m[1]),
    });
  }
  const importsOf = (name, seen = new Set()) => {
    if (seen.has(name)) return new Set();
    seen.add(name);
    const world = worlds.get(name);
    if (!world) throw new Error(`world \`${name}\` is not in ${dir}`);
    const all = new Set(world.imports);
    for (const included of world.includes) for (const item of importsOf(included, seen)) all.add(item);
    return all;
  };
  return { name: pkg[1], version: pkg[2], worlds: [...worlds.keys()].map((world) => ({ world, imports: importsOf(world) })) };
}

const BASE = ['log', 'clock'];

/** The world with exactly `wanted` (besides log and clock), or null. */
function exactWorld(pkg, wanted) {
  const target = new Set([...BASE, ...wanted]);
  const found = pkg.worlds.find(({ imports }) => imports.size === target.size && [...target].every((name) => imports.has(name)));
  return found ? found.world : null;
}

// --- The host binary ---------------------------------------------------------

function findRunbook() {
  if (process.env.RUNBOOK) return process.env.RUNBOOK;
  for (const dir of (process.env.PATH || '').split(delimiter)) {
    const candidate = join(dir, 'runbook');
    if (dir && existsSync(candidate) && statSync(candidate).isFile()) return candidate;
  }
  return null;
}

// --- Build -------------------------------------------------------------------

function commonAncestor(a, b) {
  const left = a.split(sep);
  const right = b.split(sep);
  let index = 0;
  while (index < left.length && index < right.length && left[index] === right[index]) index++;
  return left.slice(0, index).join(sep) || sep;
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const started = Date.now();

  // What the plugin declares, read by running its module in Node.
  let step;
  try {
    step = (await import(pathToFileURL(options.source).href)).default;
  } catch (error) {
    if (!options.world) {
      throw new Error(`could not import ${options.source} in Node to read what it declares (${error.message}); pass --world`);
    }
  }
  if (step && (!step.exports || !step.descriptor)) {
    throw new Error(`${options.source} must \`export default defineStep({...})\``);
  }
  const pkg = readPackage(options.wit);
  let wit = options.wit;
  let world = options.world;
  let scratch = null;
  let wanted;
  if (world) {
    const chosen = pkg.worlds.find((item) => item.world === world);
    if (!chosen) throw new Error(`world \`${world}\` is not in ${options.wit}; worlds: ${pkg.worlds.map((item) => item.world).join(', ')}`);
    wanted = [...chosen.imports].filter((name) => !BASE.includes(name));
  } else {
    wanted = step.interfaces();
    world = exactWorld(pkg, wanted);
    if (!world) {
      // No world of the package has exactly these: add one to a copy.
      scratch = mkdtempSync(join(tmpdir(), 'runbook-js-wit-'));
      cpSync(options.wit, scratch, { recursive: true, dereference: true });
      wit = scratch;
      world = `step-${wanted.slice().sort().join('-')}`;
      const extra = `\nworld ${world} {\n    include step-base;\n${wanted.map((name) => `    import ${name};\n`).join('')}}\n`;
      const main = witFiles(scratch).find((file) => readFileSync(file, 'utf8').includes('world step-base'));
      writeFileSync(main, readFileSync(main, 'utf8') + extra);
    }
  }

  // The entry module: next to the source, so that its relative imports
  // resolve; componentize-js maps the common folder of the source and the
  // SDK as the component's root while it pre-initializes.
  const entry = join(dirname(options.source), `.runbook-entry-${process.pid}.js`);
  const interfaces = [...BASE, ...wanted];
  const ident = (name) => name.replace(/-/g, '_');
  const sourceImport = `./${basename(options.source)}`;
  writeFileSync(
    entry,
    [
      '// Generated by plugins/sdk-js/build.mjs: the interfaces of the world, handed to the SDK.',
      ...interfaces.map((name) => `import * as ${ident(name)} from '${pkg.name}/${name}@${pkg.version}';`),
      `import step from '${sourceImport}';`,
      `globalThis.__runbookHost = { ${interfaces.map((name) => `${JSON.stringify(name)}: ${ident(name)}`).join(', ')} };`,
      'export function describe() { return step.exports.describe(); }',
      'export function check(params) { return step.exports.check(params); }',
      'export function plan(params) { return step.exports.plan(params); }',
      'export function run(params, state) { return step.exports.run(params, state); }',
      'export function rollback(params, outputs) { return step.exports.rollback(params, outputs); }',
      '',
    ].join('\n'),
  );

  const root = commonAncestor(dirname(options.source), SDK);
  const cwd = process.cwd();
  let component;
  const componentizeStarted = Date.now();
  try {
    process.chdir(root);
    ({ component } = await componentize({
      sourcePath: entry,
      witPath: wit,
      worldName: world,
      // `wasi:http` would bypass the host's grants: HTTP goes through
      // `runbook:plugin/http`. stdio, clocks and random stay (the host
      // provides them, with nothing ambient).
      disableFeatures: ['http', 'fetch-event'],
    }));
  } finally {
    process.chdir(cwd);
    rmSync(entry, { force: true });
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  }
  const componentizeMs = Date.now() - componentizeStarted;

  mkdirSync(dirname(options.out), { recursive: true });
  const name = step ? step.descriptor.name : basename(options.out, '.wasm');
  const said = [];
  if (options.seal) {
    const runbook = findRunbook();
    if (!runbook) {
      throw new Error('`runbook` is not on PATH and $RUNBOOK is not set: it seals the component (`runbook plugin seal`); build the host (`cargo build -p runbook`) and set RUNBOOK=target/debug/runbook, or pass --no-seal');
    }
    const work = mkdtempSync(join(tmpdir(), 'runbook-js-'));
    const unsealed = join(work, `${basename(options.out, '.wasm')}.unsealed.wasm`);
    writeFileSync(unsealed, component);
    try {
      // A cache of its own: the unsealed component is compiled once, to
      // call `describe`, and never run again.
      const args = ['--cache-dir', join(work, 'cache'), 'plugin', 'seal', unsealed, '-o', options.out];
      said.push(execFileSync(runbook, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim());
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  } else {
    writeFileSync(options.out, component);
  }
  chmodSync(options.out, 0o644);
  const size = statSync(options.out).size;
  const seconds = (ms) => `${(ms / 1000).toFixed(1)}s`;
  console.log(`built ${name} (world ${world}${scratch ? ', written for it' : ''}) into ${relative(cwd, options.out) || options.out}: ${(size / 1024 / 1024).toFixed(1)} MiB, componentize ${seconds(componentizeMs)}, total ${seconds(Date.now() - started)}${options.seal ? ', sealed' : ', not sealed'}`);
  for (const text of said) console.log(text.replace(/^/gm, '  '));
}

main().catch((error) => {
  console.error(`build: ${error.message}`);
  process.exit(1);
});
