// The server frames the page accepts, checked against the server's own
// declarations (conversations/realtime/protocol.py SERVER_FRAMES, copied into
// frame_declarations.js by `python3 manage.py frame_declarations`).
//
// validServerFrame(frame) is true for a frame that matches its declaration. For
// anything else it is false, and the first such frame of each type is logged
// (console.warn), so a page that drops frames says why without flooding the
// console. The rules are the server's, with one difference: a field the
// declaration does not list is allowed (a server newer than the page may send
// one; the page uses only the fields it knows).

import { SERVER_FRAMES } from './frame_declarations.js';

const IS_TYPE = {
  string: (v) => typeof v === 'string',
  integer: (v) => Number.isInteger(v),
  number: (v) => typeof v === 'number',
  boolean: (v) => typeof v === 'boolean',
  object: (v) => v !== null && typeof v === 'object' && !Array.isArray(v),
  array: (v) => Array.isArray(v),
};

function valueProblem(where, value, spec) {
  if (value === null) return spec.nullable ? null : `${where} must not be null`;
  if (!IS_TYPE[spec.type](value)) return `${where} is not ${spec.type}`;
  if (spec.values && !spec.values.includes(value)) return `${where} ${JSON.stringify(value)} is not an allowed value`;
  if (spec.fields) return fieldsProblem(where, value, spec.fields);
  if (spec.items) {
    for (let i = 0; i < value.length; i += 1) {
      const problem = valueProblem(`${where}[${i}]`, value[i], spec.items);
      if (problem !== null) return problem;
    }
  }
  return null;
}

function fieldsProblem(where, data, fields) {
  for (const [name, spec] of Object.entries(fields)) {
    if (!Object.hasOwn(data, name)) return `${where}: missing field '${name}'`;
    const problem = valueProblem(`${where}.${name}`, data[name], spec);
    if (problem !== null) return problem;
    if (spec.only_when) {
      const [other, value] = spec.only_when;
      if ((data[name] !== null) !== (data[other] === value)) return `${where}.${name} goes with ${other} '${value}' only`;
    }
  }
  return null;
}

/** What is wrong with a decoded server frame; null if it matches its declaration. */
export function serverFrameProblem(frame, declarations = SERVER_FRAMES) {
  if (frame === null || typeof frame !== 'object' || Array.isArray(frame)) return 'a frame is a JSON object';
  if (typeof frame.type !== 'string' || !Object.hasOwn(declarations, frame.type)) {
    return `undeclared server frame type ${JSON.stringify(frame.type)}`;
  }
  return fieldsProblem(frame.type, frame, declarations[frame.type]);
}

const warned = new Set();

/** True if `frame` matches its declaration; otherwise false, logged once per frame type. */
export function validServerFrame(frame) {
  const problem = serverFrameProblem(frame);
  if (problem === null) return true;
  const kind = frame !== null && typeof frame === 'object' && typeof frame.type === 'string' ? frame.type : '';
  if (!warned.has(kind)) {
    warned.add(kind);
    console.warn(`chatsite: dropped a server frame that does not match its declaration (${problem})`, frame);
  }
  return false;
}
