// A JSON parser that remembers where each value sits in the text, so an
// API error naming a field (`tools[1].spec.config.endpoint`, as the
// gateway reports it) can be shown at that field's line in the editor.

export class JsonSyntaxError extends Error {
  constructor(message, index, text) {
    const { line, column } = lineOf(text, index);
    super(`${message} at line ${line}, column ${column}`);
    this.index = index;
    this.line = line;
    this.column = column;
  }
}

export function lineOf(text, index) {
  let line = 1;
  let start = 0;
  for (let i = 0; i < index && i < text.length; i++) {
    if (text[i] === '\n') {
      line++;
      start = i + 1;
    }
  }
  return { line, column: index - start + 1 };
}

/**
 * Parses `text`; returns `{value, spans}` where `spans` maps a field path
 * (`a.b[2].c`; the root is '') to `{start, end}` of its key (for members)
 * or value (for array items and the root).
 */
export function parse(text) {
  let i = 0;
  const spans = new Map();
  const fail = (message) => {
    throw new JsonSyntaxError(message, i, text);
  };
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++;
  };
  const join = (parent, key) => (parent === '' ? key : `${parent}.${key}`);

  function string() {
    const start = i;
    i++;
    let out = '';
    while (i < text.length) {
      const c = text[i];
      if (c === '"') {
        i++;
        return out;
      }
      if (c === '\\') {
        const e = text[i + 1];
        const simple = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
        if (e in simple) {
          out += simple[e];
          i += 2;
        } else if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) {
          out += String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16));
          i += 6;
        } else {
          fail('bad escape in a string');
        }
      } else if (c < ' ') {
        fail('control character in a string');
      } else {
        out += c;
        i++;
      }
    }
    i = start;
    return fail('unterminated string');
  }

  function value(path) {
    ws();
    const start = i;
    const c = text[i];
    let v;
    if (c === '{') {
      i++;
      v = {};
      ws();
      if (text[i] === '}') i++;
      else {
        for (;;) {
          ws();
          if (text[i] !== '"') fail('expected a "quoted" member name');
          const keyStart = i;
          const key = string();
          const member = join(path, key);
          spans.set(member, { start: keyStart, end: i });
          ws();
          if (text[i] !== ':') fail("expected ':' after a member name");
          i++;
          v[key] = value(member);
          ws();
          if (text[i] === ',') {
            i++;
            continue;
          }
          if (text[i] === '}') {
            i++;
            break;
          }
          fail("expected ',' or '}'");
        }
      }
    } else if (c === '[') {
      i++;
      v = [];
      ws();
      if (text[i] === ']') i++;
      else {
        for (let n = 0; ; n++) {
          ws();
          const item = `${path}[${n}]`;
          const itemStart = i;
          v.push(value(item));
          if (!spans.has(item)) spans.set(item, { start: itemStart, end: i });
          ws();
          if (text[i] === ',') {
            i++;
            continue;
          }
          if (text[i] === ']') {
            i++;
            break;
          }
          fail("expected ',' or ']'");
        }
      }
    } else if (c === '"') {
      v = string();
    } else {
      const m = /^(?:-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null)/.exec(text.slice(i, i + 400));
      if (!m) fail(i >= text.length ? 'unexpected end of the document' : 'expected a value');
      i += m[0].length;
      v = JSON.parse(m[0]);
    }
    if (path === '') spans.set('', { start, end: i });
    return v;
  }

  const v = value('');
  ws();
  if (i < text.length) fail('unexpected text after the document');
  return { value: v, spans };
}

/** The span of `path`, or of its nearest ancestor present in the text. */
export function locate(spans, path) {
  let p = path;
  for (;;) {
    if (spans.has(p)) return { path: p, ...spans.get(p), exact: p === path };
    if (p === '') return null;
    const cut = Math.max(p.lastIndexOf('.'), p.lastIndexOf('['));
    p = cut <= 0 ? '' : p.slice(0, cut);
  }
}
