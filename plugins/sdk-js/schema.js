// A small JSON Schema validator for the subset step plugins use: `type`
// (one or a list), `required`, `properties`, `additionalProperties`
// (false or a schema), `enum`, `const`, `minimum`/`maximum` (and the
// exclusive ones), `minLength`/`maxLength`, `pattern`, `items`,
// `minItems`/`maxItems`, `anyOf`/`oneOf` (first match wins). Everything
// else in a schema (`description`, `default`, `x-runbook-*`) is ignored.
//
// Errors name the place of the first problem as the host shows it:
// `checks[1].expect_status`, or "" for the whole object.

/**
 * Whether a parameter value is not known yet: while a runbook is validated
 * or planned, a value that comes from a parameter not given or from an
 * earlier step's output is a placeholder naming it (`<params.version>`,
 * `v<steps.build.outputs.tag>`). Such values are not checked.
 * @param {unknown} value
 * @returns {boolean}
 */
export function unresolved(value) {
  if (typeof value !== 'string') return false;
  const start = value.indexOf('<');
  return start >= 0 && value.indexOf('>', start) > start;
}

/** `path` + `.key`, or `[index]`. */
export function joinPath(path, key) {
  if (typeof key === 'number') return `${path}[${key}]`;
  return path === '' ? key : `${path}.${key}`;
}

function typeOf(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

function fits(type, value) {
  const actual = typeOf(value);
  return actual === type || (type === 'number' && actual === 'integer');
}

function show(value) {
  const text = JSON.stringify(value);
  return text === undefined ? String(value) : text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function article(type) {
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

/**
 * The first problem of `value` against `schema`, or null.
 * @param {object|boolean} schema
 * @param {unknown} value
 * @param {string} [path]
 * @returns {{path: string, message: string} | null}
 */
export function validate(schema, value, path = '') {
  if (schema === true || schema === undefined || schema === null) return null;
  if (schema === false) return { path, message: 'is not allowed here' };
  // A placeholder stands for a value the run will know: nothing to check.
  if (unresolved(value)) return null;

  if (schema.anyOf || schema.oneOf) {
    const options = schema.anyOf || schema.oneOf;
    const problems = [];
    for (const option of options) {
      const problem = validate(option, value, path);
      if (!problem) {
        problems.length = 0;
        break;
      }
      problems.push(problem);
    }
    if (problems.length) {
      // The form that got furthest into the value says best what is wrong.
      const deepest = problems.reduce((best, problem) => (problem.path.length > best.path.length ? problem : best));
      if (options.length === 1 || deepest.path.length > path.length) return deepest;
      // Else the form of the value's type, if one has it.
      const typed = problems.filter((problem) => !problem.wrongType);
      if (typed.length === 1) return typed[0];
      return { path, message: problems.map((problem) => problem.message).join('; or ') };
    }
  }

  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!types.some((type) => fits(type, value))) {
      const wanted = types.map(article).join(' or ');
      return { path, wrongType: true, message: `expected ${wanted}, got ${typeOf(value) === 'integer' ? 'a number' : article(typeOf(value))} ${show(value)}` };
    }
  }
  if (schema.const !== undefined && JSON.stringify(schema.const) !== JSON.stringify(value)) {
    return { path, message: `expected ${show(schema.const)}, got ${show(value)}` };
  }
  if (Array.isArray(schema.enum) && !schema.enum.some((allowed) => JSON.stringify(allowed) === JSON.stringify(value))) {
    return { path, message: `expected one of ${schema.enum.map(show).join(', ')}, got ${show(value)}` };
  }

  if (typeof value === 'number') {
    if (schema.minimum !== undefined && value < schema.minimum) {
      return { path, message: `must be at least ${schema.minimum}, got ${value}` };
    }
    if (schema.maximum !== undefined && value > schema.maximum) {
      return { path, message: `must be at most ${schema.maximum}, got ${value}` };
    }
    if (schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum) {
      return { path, message: `must be more than ${schema.exclusiveMinimum}, got ${value}` };
    }
    if (schema.exclusiveMaximum !== undefined && value >= schema.exclusiveMaximum) {
      return { path, message: `must be less than ${schema.exclusiveMaximum}, got ${value}` };
    }
  }

  if (typeof value === 'string') {
    const length = [...value].length;
    if (schema.minLength !== undefined && length < schema.minLength) {
      return { path, message: schema.minLength === 1 ? 'must not be empty' : `must be at least ${schema.minLength} characters long` };
    }
    if (schema.maxLength !== undefined && length > schema.maxLength) {
      return { path, message: `must be at most ${schema.maxLength} characters long, got ${length}` };
    }
    if (schema.pattern !== undefined && !new RegExp(schema.pattern, 'u').test(value)) {
      return { path, message: `${show(value)} does not match the pattern ${schema.pattern}` };
    }
  }

  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems) {
      return { path, message: `needs at least ${schema.minItems} item${schema.minItems === 1 ? '' : 's'}, got ${value.length}` };
    }
    if (schema.maxItems !== undefined && value.length > schema.maxItems) {
      return { path, message: `takes at most ${schema.maxItems} item${schema.maxItems === 1 ? '' : 's'}, got ${value.length}` };
    }
    if (schema.items !== undefined) {
      for (let index = 0; index < value.length; index++) {
        const problem = validate(schema.items, value[index], joinPath(path, index));
        if (problem) return problem;
      }
    }
  }

  if (typeOf(value) === 'object') {
    for (const key of schema.required || []) {
      if (!Object.prototype.hasOwnProperty.call(value, key)) {
        return { path: joinPath(path, key), message: 'is required' };
      }
    }
    const properties = schema.properties || {};
    for (const [key, item] of Object.entries(value)) {
      if (Object.prototype.hasOwnProperty.call(properties, key)) {
        const problem = validate(properties[key], item, joinPath(path, key));
        if (problem) return problem;
      } else if (schema.additionalProperties === false) {
        const known = Object.keys(properties);
        return {
          path: joinPath(path, key),
          message: `unknown parameter${known.length ? `; expected one of ${known.map((name) => `\`${name}\``).join(', ')}` : ''}`,
        };
      } else if (schema.additionalProperties !== undefined && schema.additionalProperties !== true) {
        const problem = validate(schema.additionalProperties, item, joinPath(path, key));
        if (problem) return problem;
      }
    }
  }
  return null;
}
