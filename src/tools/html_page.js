/* html_page.js -- the step-through page's script (embedded into the library by CMake; see
 * src/tools/html.c). It reads the steps that the library wrote as JSON (explain.c's tg__step:
 * the description the text trace prints too) and shows one at a time: rich (tables, heat maps)
 * and as text, laid out exactly as tg__step_print lays it out, from the numbers as tg__fmt_num
 * formatted them. Nothing here computes a value or a gradient. */
(function () {
  'use strict';

  const data = JSON.parse(document.getElementById('tg-data').textContent);
  const steps = data.steps;
  const nForward = steps.filter((s) => s.step.kind === 'forward').length;
  const FULL = 16; /* TG_TRACE_FULL: larger tensors print as a summary */

  /* ---- The text, as tg__step_print writes it ---- */

  /* Lengths in bytes, as C's printf pads (names may hold UTF-8). */
  const utf8 = new TextEncoder();
  const blen = (s) => utf8.encode(s).length;
  const padRight = (s, w) => s + ' '.repeat(Math.max(0, w - blen(s)));
  const padLeft = (s, w) => ' '.repeat(Math.max(0, w - blen(s))) + s;

  /* vals_width: the widest entry, plus a column for the sign. */
  function width(x, strs) {
    let w = 1;
    for (const s of strs) {
      const l = blen(s) + (!x.integer && s[0] !== '-' ? 1 : 0);
      w = Math.max(w, l);
    }
    return w;
  }
  function rowText(strs, w) {
    return '[' + strs.map((s, i) => (i ? '  ' : ' ') + padLeft(s, w)).join('') + ' ]';
  }
  const isMatrix = (x) => x.rank === 2 && x.shape[0] > 1 && x.shape[1] > 1;
  const isColumn = (x) => x.rank === 2 && x.shape[0] > 1 && x.shape[1] === 1;

  /* print_vals: the values after a prefix of `col` bytes, then the suffix. */
  function valsText(x, col, suffix) {
    if (x.numel <= 0) return '[ ]' + suffix;
    if (x.numel > FULL) {
      const w = width(x, x.head), wl = width(x, [x.last]);
      return '[' + x.head.map((s, i) => (i ? '  ' : ' ') + padLeft(s, w)).join('') + '  ... ' +
        padLeft(x.last, wl) + ' ]  (' + x.numel + ' entries, norm ' + x.norm + ')' + suffix;
    }
    if (x.rank === 0 && x.numel === 1) return x.s[0] + suffix;
    const w = width(x, x.s);
    if (isMatrix(x)) {
      const rows = [], c = x.shape[1];
      for (let r = 0; r < x.shape[0]; r++)
        rows.push((r ? ' '.repeat(col) : '') + rowText(x.s.slice(r * c, (r + 1) * c), w) +
          (r === x.shape[0] - 1 ? suffix : ''));
      return rows.join('\n');
    }
    return rowText(x.s, w) + (isColumn(x) ? '^T' : '') + suffix;
  }

  function stepText(st) {
    let out = '#' + st.index + '  ' + st.name + ' = ' + st.expr + '   ' + st.shape + '\n';
    for (const r of st.rows) {
      if (!r.vals) {
        out += '    ' + padRight(r.label, 11) + ' ' + r.text + '\n';
        continue;
      }
      const pre = '    ' + padRight(r.label, 11) + ' ' +
        padRight(r.lhs, r.pad ? st.lhs_width : 0) + ' ' + r.rel + ' ';
      out += pre + valsText(r.vals, blen(pre), r.note) + '\n';
    }
    return out;
  }

  /* ---- Small DOM helpers ---- */

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  /* ---- Values, rich: a scalar, a table, a heat map ---- */

  /* Element i's index as the reader writes it: [r][c] for a matrix, [i] otherwise. */
  function indexName(x, i) {
    if (isMatrix(x)) return '[' + Math.floor(i / x.shape[1]) + '][' + (i % x.shape[1]) + ']';
    return x.rank === 0 ? '' : '[' + i + ']';
  }

  /* Diverging colour: blue for negative, red for positive, white at 0, scaled by the largest
   * magnitude in the tensor. */
  function heatColour(v, max) {
    if (v === null || !isFinite(v)) return '#999';
    const t = max > 0 ? Math.min(1, Math.abs(v) / max) : 0;
    const [r, g, b] = v < 0 ? [33, 102, 172] : [178, 24, 43];
    const mix = (c) => Math.round(255 + (c - 255) * (0.12 + 0.88 * t));
    return t === 0 ? '#f4f4f4' : 'rgb(' + mix(r) + ',' + mix(g) + ',' + mix(b) + ')';
  }

  function valsView(x, lhs) {
    if (!x.s) return el('span', { class: 'summary', text: valsText(x, 0, '') });
    const tip = (i) => lhs + indexName(x, i) + ' = ' + x.s[i];
    if (x.rank === 0 && x.numel === 1) return el('span', { class: 'scalar', title: tip(0) }, x.s[0]);
    if (isMatrix(x) || x.numel > FULL) {
      const rows = isMatrix(x) ? x.shape[0] : Math.ceil(x.numel / 32);
      const cols = isMatrix(x) ? x.shape[1] : Math.min(32, x.numel);
      const max = Math.max(0, ...x.v.map((v) => (v === null ? 0 : Math.abs(v))));
      const big = x.numel > FULL;
      const t = el('table', { class: 'heat' + (big ? ' big' : '') });
      for (let r = 0; r < rows; r++) {
        const tr = el('tr');
        for (let c = 0; c < cols && r * cols + c < x.numel; c++) {
          const i = r * cols + c, v = x.v[i];
          const dark = max > 0 && v !== null && Math.abs(v) / max > 0.55;
          tr.append(el('td', {
            title: tip(i), 'data-i': i,
            style: 'background:' + heatColour(v, max) + ';color:' + (dark ? '#fff' : '#1d2330'),
          }, big ? '' : x.s[i]));
        }
        t.append(tr);
      }
      return big ? el('span', {}, t, el('div', { class: 'summary', text: valsText(x, 0, '') })) : t;
    }
    const t = el('table', { class: 'nums' });
    if (isColumn(x)) {
      x.s.forEach((s, i) =>
        t.append(el('tr', {}, el('td', { title: tip(i), class: s[0] === '-' ? 'neg' : '' }, s))));
    } else {
      t.append(el('tr', {}, x.s.map((s, i) =>
        el('td', { title: tip(i), class: s[0] === '-' ? 'neg' : '' }, s))));
    }
    return t;
  }

  /* ---- The graph ---- */

  const boxes = {}, edges = [];
  document.querySelectorAll('#graph g.node').forEach((g) => {
    const id = g.querySelector('title').textContent.trim();
    g.dataset.id = id;
    boxes[id] = g;
  });
  document.querySelectorAll('#graph g.edge').forEach((g) => {
    const [from, to] = g.querySelector('title').textContent.split('->').map((s) => s.trim());
    edges.push({ g, from, to });
  });

  function showInGraph(s) {
    const fwd = s.step.kind === 'forward';
    for (const [id, g] of Object.entries(boxes)) {
      const node = /^n\d+$/.test(id) ? +id.slice(1) : -1;
      g.classList.toggle('current', id === s.svg);
      g.classList.toggle('input', s.inputs.includes(id) && id !== s.svg);
      g.classList.toggle('future', fwd && node > s.step.index);
    }
    for (const e of edges) {
      const to = +e.to.slice(1);
      e.g.classList.toggle('active', e.to === s.svg);
      e.g.classList.toggle('future', fwd && to > s.step.index);
      /* backward: where an input also feeds other ops, its gradient is a sum over those edges */
      e.g.classList.toggle('fanout', !fwd && e.to !== s.svg && s.inputs.includes(e.from));
    }
    const g = boxes[s.svg], pane = document.getElementById('graph');
    if (g && pane) { /* scroll the pane, not the page, so the box is in view */
      const b = g.getBoundingClientRect(), p = pane.getBoundingClientRect();
      if (b.top < p.top || b.bottom > p.bottom)
        pane.scrollTop += b.top - p.top - (p.height - b.height) / 2;
    }
  }

  /* ---- The bar ---- */

  let cur = 0, exercise = false;
  const answers = {}; /* step -> { typed: [...], marks: [...], revealed } in exercise mode */

  const slider = el('input', {
    id: 'slider', type: 'range', min: 0, max: steps.length - 1, value: 0, 'aria-label': 'step',
    oninput: (e) => go(+e.target.value),
  });
  const fwdShare = (100 * nForward / steps.length).toFixed(2);
  const where = el('div', { id: 'where' });
  const btn = (id, label, title, f) => el('button', { id, title, onclick: f }, label);
  const bFirst = btn('first', '|\u25c0', 'first step (Home)', () => go(0));
  const bPrev = btn('prev', '\u25c0 Back', 'previous step (\u2190)', () => go(cur - 1));
  const bNext = btn('next', 'Next \u25b6', 'next step (\u2192)', () => go(cur + 1));
  const bLast = btn('last', '\u25b6|', 'last step (End)', () => go(steps.length - 1));
  bNext.classList.add('primary');
  const exBox = el('input', {
    id: 'exercise', type: 'checkbox',
    onchange: (e) => { exercise = e.target.checked; render(); },
  });
  document.body.prepend(el('header', { id: 'bar' },
    el('h1', {}, el('span', { class: 'lib' }, 'tapegrad \u00b7 '), 'the forward and backward pass of ' + data.loss),
    el('div', { class: 'buttons' }, bFirst, bPrev, bNext, bLast),
    el('div', { id: 'slider-wrap' }, slider,
      el('div', { id: 'slider-scale' },
        el('span', { class: 'f', style: 'width:' + fwdShare + '%' }, 'forward \u2192'),
        el('span', { class: 'keys' }, el('kbd', {}, '\u2190'), ' ', el('kbd', {}, '\u2192'), ' to step'),
        el('span', { class: 'b', style: 'flex:1' }, '\u2190 backward'))),
    where,
    el('label', { class: 'switch', title: 'hide the gradients and work them out yourself' },
      exBox, 'Exercise mode')));
  slider.style.background = '';
  const panel = el('section', { id: 'panel' });
  document.getElementById('app').append(panel);

  /* ---- One step ---- */

  /* The rows in groups: a labelled row and the unlabelled rows that continue it. */
  function groupOf(label) {
    if (label.startsWith('->')) return 'to';
    return label || 'cont';
  }

  /* In exercise mode, before the answer is revealed, a backward step shows only what the
   * student works from: the node, its value and what it saved. */
  const hiddenInExercise = new Set(['upstream', 'rule', 'local', 'to']);

  function rowsView(st, hide) {
    const grid = el('div', { class: 'rows' });
    let group = '', first = true;
    for (const r of st.rows) {
      if (r.label) group = groupOf(r.label);
      if (hide && hiddenInExercise.has(group)) continue;
      const cls = 'g-' + group + (r.label ? '' : ' cont') + (first ? ' first' : '');
      first = false;
      grid.append(el('div', { class: 'label ' + (group === 'to' && r.label ? 'to ' : '') + cls },
        r.label));
      const content = el('div', { class: 'content ' + cls });
      if (!r.vals) {
        content.append(el('span', { class: 'text' }, r.text));
      } else {
        content.append(el('span', { class: 'lhs' }, r.lhs), el('span', { class: 'rel' }, r.rel.trim()),
          valsView(r.vals, r.lhs.replace(/^.* = /, '')));
        const note = r.note.trim();
        if (note)
          content.append(el('span', { class: 'note' + (/summed|sum so far/.test(note) ? ' sum' : '') },
            note));
      }
      grid.append(content);
    }
    return grid;
  }

  const explainForward = 'Forward: the node computes its value from its inputs and keeps what ' +
    'its backward will need.';
  const explainBackward = 'Backward: the node receives dl/d(its output) and passes a gradient ' +
    'to each input, using what it saved.';

  /* ---- The exercise: type dl/d(node), each element marked against the recorded value ---- */

  const MAX_TYPED = 64;
  /* Right when within half a unit of the 4th decimal plus 0.5%: what the page shows, worked out
   * by hand from the rounded numbers of the earlier steps. */
  const close = (got, want) => Math.abs(got - want) <= 5e-4 + 5e-3 * Math.abs(want);

  function parseNumbers(text) {
    return text.replace(/[[\]()^T;,]/g, ' ').trim().split(/\s+/).filter((s) => s !== '')
      .map(Number);
  }

  function exerciseView(s, idx) {
    const st = s.step, up = st.rows.find((r) => r.label === 'upstream');
    if (!up || !up.vals || !up.vals.v || up.vals.numel > MAX_TYPED) return null;
    const x = up.vals, a = answers[idx] || (answers[idx] = { typed: [], marks: null, revealed: false });
    const cols = isMatrix(x) ? x.shape[1] : isColumn(x) ? 1 : x.numel;
    const rows = Math.max(1, Math.ceil(x.numel / cols));
    const inputs = [];
    const entry = el('table', { class: 'entry' });
    for (let r = 0; r < rows; r++) {
      const tr = el('tr');
      for (let c = 0; c < cols && r * cols + c < x.numel; c++) {
        const i = r * cols + c;
        const inp = el('input', {
          type: 'text', inputmode: 'decimal', 'data-i': i, 'aria-label': up.lhs + indexName(x, i),
          value: a.typed[i] !== undefined ? a.typed[i] : '', placeholder: '?',
          class: a.marks ? (a.marks[i] ? 'right' : 'wrong') : '',
          oninput: (e) => { a.typed[i] = e.target.value; },
        });
        inputs.push(inp);
        tr.append(el('td', {}, inp));
      }
      entry.append(tr);
    }
    const paste = el('input', {
      type: 'text', id: 'paste', placeholder: 'e.g. 0.3347 -0.3347',
      oninput: (e) => {
        parseNumbers(e.target.value).forEach((v, i) => {
          if (i < inputs.length && !Number.isNaN(v)) { inputs[i].value = String(v); a.typed[i] = String(v); }
        });
      },
    });
    const check = () => {
      a.typed = inputs.map((inp) => inp.value);
      a.marks = inputs.map((inp, i) => {
        const v = parseNumbers(inp.value);
        return v.length === 1 && !Number.isNaN(v[0]) && x.v[i] !== null && close(v[0], x.v[i]);
      });
      a.revealed = true; /* and now the rule, and the rest of the step */
      render();
      const first = document.querySelector('table.entry input.wrong');
      if (first) first.focus();
    };
    const box = el('div', { class: 'exercise', id: 'exercise-box' },
      el('h3', {}, 'Your turn: what is ', el('span', { class: 'lhs' }, up.lhs), '?'),
      el('div', { class: 'explain' },
        'Type one number per element' + (x.numel > 1 ? ' (' + x.numel + ' elements, shape ' + st.shape + ')' : '') +
        ', from the gradients of the steps before' + (up.note.trim() ? ' ' + up.note.trim() : '') + '.'),
      el('div', { class: 'answer' }, el('span', { class: 'lhs' }, up.lhs + ' ='), entry),
      el('div', { class: 'paste' }, 'or paste a row:', paste),
      el('div', { class: 'answer' },
        el('button', { id: 'check', class: 'primary', onclick: check }, 'Check'),
        a.revealed ? null : el('button', {
          id: 'reveal', onclick: () => { a.revealed = true; render(); },
        }, 'Show the answer')));
    if (a.marks) {
      const n = a.marks.filter(Boolean).length;
      box.append(el('div', {
        id: 'verdict', class: 'verdict ' + (n === x.numel ? 'all' : 'some'),
        'data-right': n, 'data-of': x.numel,
      }, n === x.numel ? 'All ' + n + ' right.' : n + ' of ' + x.numel + ' right.'));
      box.append(el('div', { class: 'marks', id: 'marks' }, a.marks.map((m, i) => el('span', {
        class: m ? 'right' : 'wrong', 'data-i': i,
      }, (i ? '   ' : '') + up.lhs + indexName(x, i) + (m ? ' \u2714' : ' \u2718 (recorded ' + x.s[i] + ')')))));
    }
    return box;
  }

  function render() {
    const s = steps[cur], st = s.step, fwd = st.kind === 'forward';
    document.body.classList.toggle('backward', !fwd);
    document.body.classList.toggle('exercising', exercise);
    const pos = fwd ? cur + 1 : cur - nForward + 1, of = fwd ? nForward : steps.length - nForward;
    where.replaceChildren('Step ', el('b', {}, String(cur + 1)), ' of ' + steps.length + ' \u00b7 ' +
      (fwd ? 'forward ' : 'backward ') + pos + '/' + of);
    slider.value = cur;
    bFirst.disabled = bPrev.disabled = cur === 0;
    bNext.disabled = bLast.disabled = cur === steps.length - 1;
    showInGraph(s);

    const a = answers[cur];
    const ex = exercise && !fwd ? exerciseView(s, cur) : null;
    const hide = !!ex && !(a && a.revealed);
    const text = stepText(st);
    const card = el('div', {
      class: 'card', id: 'step', 'data-kind': st.kind, 'data-index': st.index,
      'data-svg': s.svg, 'data-hidden': hide ? 'yes' : 'no',
    },
    el('div', {}, el('span', { class: 'phase' }, fwd ? 'forward' : 'backward'),
      el('span', { class: 'explain' }, fwd ? explainForward : explainBackward)),
    el('h2', { class: 'step' }, el('span', { class: 'idx' }, '#' + st.index),
      el('span', { class: 'name' }, st.name), ' = ', el('span', { class: 'expr' }, st.expr),
      el('span', { class: 'shape' }, st.shape)),
    ex,
    rowsView(st, hide),
    hide ? el('div', { class: 'hidden-note' },
      'The upstream gradient, the rule and what reaches each input are hidden until you check.') : null,
    hide ? null : el('details', { class: 'astext' },
      el('summary', {}, 'As text (what tg_tape_set_trace prints for this node)'),
      el('pre', { id: 'step-text' }, text)));
    panel.replaceChildren(card);
  }

  function go(i) {
    const n = Math.max(0, Math.min(steps.length - 1, i));
    if (n === cur && panel.firstChild) return;
    cur = n;
    render();
  }

  document.addEventListener('keydown', (e) => {
    if (e.target.tagName === 'INPUT' && e.target.type !== 'range' && e.target.type !== 'checkbox') {
      if (e.key === 'Enter' && document.getElementById('check')) document.getElementById('check').click();
      return;
    }
    const k = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[e.key];
    if (k) { go(cur + k); e.preventDefault(); }
    else if (e.key === 'Home') { go(0); e.preventDefault(); }
    else if (e.key === 'End') { go(steps.length - 1); e.preventDefault(); }
  });

  /* For scripts and tests: the steps' text as the page lays it out. */
  window.tapegradPage = { count: steps.length, forward: nForward, text: (i) => stepText(steps[i].step) };
  render();
})();
