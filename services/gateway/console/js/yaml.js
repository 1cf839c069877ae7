// JSON values written as YAML, for reading specs the way they are usually
// written (`agentmesh apply -f agent.yaml`). Output only: the console
// applies JSON, which the API takes as is.

const PLAIN = /^[A-Za-z_/][A-Za-z0-9_\-./ ]*$/;
const RESERVED = /^(true|false|null|yes|no|on|off|y|n|~)$/i;

function scalar(v) {
  if (v === null) return 'null';
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  const s = String(v);
  if (s !== '' && PLAIN.test(s) && !RESERVED.test(s) && !s.endsWith(' ') && !s.includes(': ') && !s.includes(' #')) return s;
  return JSON.stringify(s);
}

function key(k) {
  return PLAIN.test(k) && !RESERVED.test(k) && !k.includes(' ') ? k : JSON.stringify(k);
}

function block(s, pad) {
  // A literal block keeps newlines; its lines cannot carry trailing spaces
  // or tabs reliably, so those strings stay quoted.
  if (!s.includes('\n') || /[ \t]\n|[ \t]$|\r/.test(s) || s.startsWith(' ')) return null;
  const chomp = s.endsWith('\n') ? '|' : '|-';
  const body = (s.endsWith('\n') ? s.slice(0, -1) : s).split('\n').map((l) => (l === '' ? '' : pad + l)).join('\n');
  return `${chomp}\n${body}`;
}

function lines(v, indent) {
  const pad = '  '.repeat(indent);
  if (Array.isArray(v)) {
    if (v.length === 0) return ['[]'];
    const out = [];
    for (const item of v) {
      if (item && typeof item === 'object' && !Array.isArray(item) && Object.keys(item).length) {
        const inner = lines(item, indent + 1);
        out.push(`${pad}- ${inner[0].trimStart()}`, ...inner.slice(1));
      } else {
        out.push(`${pad}- ${inline(item, indent + 1)}`);
      }
    }
    return out;
  }
  if (v && typeof v === 'object') {
    const entries = Object.entries(v);
    if (entries.length === 0) return ['{}'];
    const out = [];
    for (const [k, item] of entries) {
      if (item && typeof item === 'object' && (Array.isArray(item) ? item.length : Object.keys(item).length)) {
        out.push(`${pad}${key(k)}:`, ...lines(item, Array.isArray(item) ? indent : indent + 1));
      } else {
        out.push(`${pad}${key(k)}: ${inline(item, indent + 1)}`);
      }
    }
    return out;
  }
  return [pad + scalar(v)];
}

function inline(v, indent) {
  if (Array.isArray(v)) return '[]';
  if (v && typeof v === 'object') return '{}';
  if (typeof v === 'string') return block(v, '  '.repeat(indent)) ?? scalar(v);
  return scalar(v);
}

export function toYaml(value) {
  return lines(value, 0).join('\n') + '\n';
}
