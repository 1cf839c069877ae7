// The spec editor: a plain textarea over a backdrop that marks a line, a
// line-number gutter, and an error bubble placed under the field that an
// API error (or a JSON syntax error) names.

import { h, replace } from './dom.js';
import { lineOf, locate, parse } from './jsonpos.js';

const LINE_HEIGHT = 20; // px; console.css sets the same on .editor

export function specEditor(text, { label = 'Spec (JSON)' } = {}) {
  const textarea = h('textarea', {
    class: 'editor-text',
    spellcheck: 'false',
    wrap: 'off',
    autocomplete: 'off',
    'aria-label': label,
    value: text,
  });
  const backdrop = h('pre', { class: 'editor-backdrop', 'aria-hidden': 'true' });
  const gutter = h('div', { class: 'editor-gutter', 'aria-hidden': 'true' });
  const bubble = h('div', { class: 'field-error-bubble', role: 'alert', hidden: true });
  const code = h('div', { class: 'editor-code' }, backdrop, textarea, bubble);
  const el = h('div', { class: 'editor' }, gutter, code);
  let marked = null; // {line, start, end, message, path}

  function render() {
    const value = textarea.value;
    const count = value.split('\n').length;
    replace(gutter, ...Array.from({ length: count }, (_, n) => h('div', { class: marked?.line === n + 1 ? 'marked' : null }, String(n + 1))));
    if (!marked) {
      replace(backdrop, value + '\n');
    } else {
      const lines = value.split('\n');
      const before = lines.slice(0, marked.line - 1).join('\n');
      const after = lines.slice(marked.line).join('\n');
      replace(
        backdrop,
        before + (marked.line > 1 ? '\n' : ''),
        h('mark', { class: 'error-line' }, lines[marked.line - 1] || ' '),
        (after || marked.line < lines.length ? '\n' + after : '') + '\n',
      );
    }
    sync();
  }

  function sync() {
    backdrop.style.transform = `translate(${-textarea.scrollLeft}px, ${-textarea.scrollTop}px)`;
    gutter.scrollTop = textarea.scrollTop;
    if (marked) {
      bubble.style.top = `${8 + marked.line * LINE_HEIGHT - textarea.scrollTop}px`;
    }
  }

  textarea.addEventListener('scroll', sync);
  textarea.addEventListener('input', () => {
    // The text moved under the mark: drop it rather than point elsewhere.
    if (marked) clearError();
    else render();
  });

  function showAt(index, message, path) {
    const { line } = lineOf(textarea.value, index);
    marked = { line, message, path };
    replace(bubble, path ? h('code', null, path) : null, path ? ': ' : null, message);
    bubble.hidden = false;
    textarea.setAttribute('aria-invalid', 'true');
    render();
    // Bring the line into view; the caret goes to the field.
    const top = (line - 1) * LINE_HEIGHT;
    if (top < textarea.scrollTop || top > textarea.scrollTop + textarea.clientHeight - 3 * LINE_HEIGHT) {
      textarea.scrollTop = Math.max(0, top - 2 * LINE_HEIGHT);
    }
    textarea.setSelectionRange(index, index);
    sync();
    return line;
  }

  function clearError() {
    marked = null;
    bubble.hidden = true;
    textarea.removeAttribute('aria-invalid');
    render();
  }

  render();
  return {
    el,
    textarea,
    get text() {
      return textarea.value;
    },
    set text(value) {
      textarea.value = value;
      clearError();
    },
    /** Parses the text; on a syntax error marks it and returns null. */
    parse() {
      try {
        return parse(textarea.value);
      } catch (error) {
        if (error.index === undefined) throw error;
        showAt(error.index, error.message, null);
        return null;
      }
    },
    /**
     * Marks `path` (a field path under the document root) with `message`;
     * returns the line, or null when the text has no such field.
     */
    showFieldError(spans, path, message) {
      const at = locate(spans, path);
      if (!at) return null;
      const why = at.exact ? message : `${message} (the field is missing here)`;
      return showAt(at.start, why, path);
    },
    clearError,
  };
}
