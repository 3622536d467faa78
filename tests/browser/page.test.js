#!/usr/bin/env node
/* page.test.js -- the step-through page (tg_tape_write_html) in a real browser: Debian's chromium,
 * headless, driven by puppeteer-core (no browser download).
 *
 * For the course report's 2-4-2 network (examples/trace, with and without --decay), it writes the
 * page and the text trace of the same pass, opens the page, steps through every forward and
 * backward step with the keyboard, and checks at each step that the text the page shows is, line
 * by line, what the library printed for that node (the trace on stdout for backward steps,
 * tg__step_print's text in the page's data for forward steps) and that the graph highlights that
 * node. Then the buttons, the slider and the keys; the exercise mode with a right, a wrong and a
 * pasted answer; that nothing was fetched and no script failed. Screenshots go to out/browser/.
 *
 *     cd tests/browser && npm ci && node page.test.js     (TG_BUILD=build by default)
 *
 * The last line is "browser: N passed, M failed"; the exit status is 0 only when none failed. */
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const puppeteer = require('puppeteer-core');

const root = path.resolve(__dirname, '..', '..');
const build = path.resolve(root, process.env.TG_BUILD || 'build');
const out = path.resolve(root, process.env.TG_BROWSER_OUT || path.join('out', 'browser'));
const chromium = process.env.CHROMIUM || '/usr/bin/chromium';

let passed = 0;
let failed = 0;
function check(name, ok, detail) {
  if (ok) {
    passed++;
    console.log('  ok    ' + name);
  } else {
    failed++;
    console.log('  FAIL  ' + name + (detail ? '\n' + String(detail).replace(/^/gm, '        ') : ''));
  }
  return ok;
}

/* The first line where two texts differ, for a readable failure. */
function firstDifference(got, want) {
  const a = got.split('\n');
  const b = want.split('\n');
  for (let i = 0; i < Math.max(a.length, b.length); i++)
    if (a[i] !== b[i])
      return 'line ' + (i + 1) + ':\n got: ' + JSON.stringify(a[i]) + '\nwant: ' + JSON.stringify(b[i]);
  return null;
}

/* Runs examples/trace; returns its stdout and the page's path. */
function writePage(name, args) {
  const exe = path.join(build, 'examples', 'trace');
  const page = path.join(out, 'page-' + name + '.html');
  const r = spawnSync(exe, [...args, '--html', page, path.join(out, 'graph-' + name + '.png')], {
    encoding: 'utf8',
  });
  if (r.error || r.status !== 0)
    throw new Error(exe + ' failed: ' + (r.error || r.stderr));
  return { page, stdout: r.stdout };
}

/* The trace's backward steps from the example's stdout: index -> text, in the order printed. */
function traceSteps(stdout) {
  const from = stdout.indexOf('\nbackward pass from ');
  const to = stdout.indexOf('\nend of the backward pass');
  const blocks = stdout.slice(from, to).split('\n\n').filter((b) => /^#\d+ {2}/.test(b));
  return blocks.map((b) => ({ index: +b.match(/^#(\d+)/)[1], text: b.replace(/\n*$/, '\n') }));
}

/* The numbers of the step's upstream gradient as the trace printed them (the right answer). */
function upstreamNumbers(text) {
  const lines = text.split('\n');
  const i = lines.findIndex((l) => l.startsWith('    upstream'));
  const nums = [];
  for (let j = i; j < lines.length && (j === i || lines[j].startsWith('              ')); j++) {
    const vals = lines[j].slice(lines[j].indexOf('=') + 1).replace(/\(.*$/, '');
    nums.push(...vals.replace(/[[\]^T]/g, ' ').trim().split(/\s+/).filter(Boolean));
  }
  return nums;
}

async function state(page) {
  return page.evaluate(() => {
    const card = document.getElementById('step');
    const pre = document.getElementById('step-text');
    const current = [...document.querySelectorAll('#graph g.node.current')].map((g) => g.dataset.id);
    return {
      kind: card.dataset.kind,
      index: +card.dataset.index,
      svg: card.dataset.svg,
      hidden: card.dataset.hidden === 'yes',
      text: pre ? pre.textContent : null,
      current,
      slider: +document.getElementById('slider').value,
    };
  });
}

async function goTo(page, i) {
  await page.evaluate((v) => {
    const s = document.getElementById('slider');
    s.value = v;
    s.dispatchEvent(new Event('input', { bubbles: true }));
  }, i);
}

/* Steps through every step of one page and compares its text with the library's. */
async function stepThrough(page, name, data, trace) {
  const n = data.steps.length;
  const nodes = data.steps.filter((s) => s.step.kind === 'forward').length;
  const order = [];
  let textOk = 0;
  let highlightOk = 0;
  const bad = [];
  for (let i = 0; i < n; i++) {
    const s = await state(page);
    order.push(s.kind[0] + s.index);
    const want = s.kind === 'forward' ? data.steps[i].step.text
      : (trace.find((t) => t.index === s.index) || {}).text;
    const diff = want === undefined ? 'no trace step #' + s.index
      : s.text === null ? 'no text shown' : firstDifference(s.text, want);
    if (!diff) textOk++;
    else bad.push(name + ' step ' + (i + 1) + ' (' + s.kind + ' #' + s.index + '): ' + diff);
    /* The backward steps' text in the page's data is the trace's too (one description). */
    if (s.kind === 'backward' && want !== undefined && data.steps[i].step.text !== want)
      bad.push(name + ' step ' + (i + 1) + ': the data text differs from the trace');
    if (s.current.length === 1 && s.current[0] === s.svg && s.svg === data.steps[i].svg) highlightOk++;
    if (i + 1 < n) await page.keyboard.press('ArrowRight');
  }
  const wantOrder = [...Array(nodes).keys()].map((k) => 'f' + k).concat(trace.map((t) => 'b' + t.index));
  check(name + ': the ' + n + ' steps are the ' + nodes + ' forward nodes in order, then the ' +
    trace.length + ' backward steps in the trace\'s order', order.join(' ') === wantOrder.join(' '),
  'got  ' + order.join(' ') + '\nwant ' + wantOrder.join(' '));
  check(name + ': at every step the text shown is the library\'s, line by line (' + textOk + '/' + n + ')',
    textOk === n && bad.length === 0, bad.join('\n'));
  check(name + ': at every step the graph highlights that node and no other (' + highlightOk + '/' + n + ')',
    highlightOk === n);
}

async function main() {
  fs.mkdirSync(out, { recursive: true });
  const runs = [writePage('plain', []), writePage('decay', ['--decay'])];
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'tapegrad-chromium-'));
  const browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    userDataDir: profile,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    for (const [k, run] of runs.entries()) {
      const name = k === 0 ? 'plain' : 'decay';
      const html = fs.readFileSync(run.page, 'utf8');
      console.log('\n' + name + ': ' + path.relative(root, run.page) + ' (' + html.length + ' bytes)');
      check(name + ': the file names no http(s) address', !/https?:\/\//i.test(html),
        (html.match(/.{0,40}https?:\/\/.{0,40}/i) || [''])[0]);
      check(name + ': the file has the graph as inline SVG', /<svg[\s>]/.test(html) && /class="node"/.test(html));
      check(name + ': no script or stylesheet is loaded from elsewhere', !/<(script|link|img)[^>]*(src|href)=/i.test(html));
      const json = html.match(/<script type="application\/json" id="tg-data">([\s\S]*?)<\/script>/);
      let data = null;
      try {
        data = JSON.parse(json[1]);
      } catch (e) {
        data = null;
      }
      check(name + ': the steps\' JSON parses', data && Array.isArray(data.steps) && data.steps.length > 0);
      if (!data) continue;
      const trace = traceSteps(run.stdout);

      const page = await browser.newPage();
      await page.setViewport({ width: 1400, height: 900, deviceScaleFactor: 1 });
      const requests = [];
      const errors = [];
      page.on('request', (r) => requests.push(r.url()));
      page.on('pageerror', (e) => errors.push(String(e)));
      page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
      const url = 'file://' + run.page;
      await page.goto(url, { waitUntil: 'load' });
      await page.waitForSelector('#step');
      const boxes = await page.$$eval('#graph g.node', (g) => g.length);
      check(name + ': the graph has a box per node and leaf (' + boxes + ')', boxes > data.steps.filter((s) => s.step.kind === 'forward').length);

      await stepThrough(page, name, data, trace);

      /* The controls: Back, Next, Home, End, the slider. */
      const last = data.steps.length - 1;
      let s = await state(page);
      check(name + ': ArrowRight reached the last step', s.slider === last);
      await page.click('#prev');
      s = await state(page);
      check(name + ': Back goes one step back', s.slider === last - 1);
      await page.keyboard.press('Home');
      s = await state(page);
      check(name + ': Home goes to the first step', s.slider === 0 && s.kind === 'forward' && s.index === 0);
      await page.click('#next');
      await page.keyboard.press('ArrowLeft');
      s = await state(page);
      check(name + ': Next then ArrowLeft comes back', s.slider === 0);
      const mid = data.steps.length - trace.length + 2;
      await goTo(page, mid);
      s = await state(page);
      check(name + ': the slider jumps to any step', s.slider === mid && s.kind === 'backward' && s.index === trace[2].index);
      await page.keyboard.press('End');
      s = await state(page);
      check(name + ': End goes to the last step', s.slider === last);

      if (name === 'plain') {
        /* A forward step: h = tanh(h~), the node that saves its output. */
        const h = data.steps.findIndex((x) => x.step.kind === 'forward' && x.step.name === 'h');
        await goTo(page, h);
        await page.evaluate(() => { document.querySelector('details.astext').open = true; });
        await page.screenshot({ path: path.join(out, 'forward.png') });
        await exercise(page, data, trace);
      } else {
        /* A backward step at a fan-out: W_y feeds the matmul and the penalty; #3 adds the second
         * contribution and shows the sum. */
        const i = data.steps.findIndex((x) => x.step.kind === 'backward' && x.step.name === 'W_y h');
        await goTo(page, i);
        s = await state(page);
        check(name + ': the fan-out step shows both contributions summed',
          /contribution 2 of 2/.test(s.text) && /all contributions summed/.test(s.text));
        await page.screenshot({ path: path.join(out, 'backward-fanout.png') });
        await page.evaluate(() => { document.querySelector('details.astext').open = true; });
        await page.screenshot({ path: path.join(out, 'backward-fanout-text.png'), fullPage: true });
        const r = data.steps.findIndex((x) => x.step.kind === 'backward' && x.step.name === 'r');
        await goTo(page, r);
        await page.screenshot({ path: path.join(out, 'backward-penalty.png') });
      }
      const others = requests.filter((u) => u !== url);
      check(name + ': the page fetched nothing (' + requests.length + ' request: the file itself)',
        others.length === 0, others.join('\n'));
      check(name + ': no script error', errors.length === 0, errors.join('\n'));
      await page.close();
    }
  } finally {
    await browser.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

/* Exercise mode on the plain page: a right answer, a wrong one, a pasted row. */
async function exercise(page, data, trace) {
  await page.click('#exercise');
  const at = (name) => data.steps.findIndex((x) => x.step.kind === 'backward' && x.step.name === name);
  const traceOf = (name) => trace.find((t) => t.index === data.steps[at(name)].step.index).text;

  /* dl/dh: four elements, typed one by one, all right. */
  await goTo(page, at('h'));
  let s = await state(page);
  const hidden = await page.$$eval('#step .g-upstream, #step .g-rule, #step .g-to', (e) => e.length);
  check('exercise: a backward step hides its gradients, its rule and its text', s.hidden && hidden === 0 && s.text === null);
  const right = upstreamNumbers(traceOf('h'));
  const inputs = await page.$$('table.entry input');
  check('exercise: one box per element of dl/dh (' + inputs.length + ')', inputs.length === right.length && right.length === 4);
  for (const [i, inp] of inputs.entries()) await inp.type(right[i]);
  await page.screenshot({ path: path.join(out, 'exercise-typed.png') });
  await page.click('#check');
  let v = await page.$eval('#verdict', (e) => [+e.dataset.right, +e.dataset.of]);
  s = await state(page);
  check('exercise: the right answer is marked right, element by element (' + v[0] + ' of ' + v[1] + ')',
    v[0] === 4 && v[1] === 4 && (await page.$$('table.entry input.right')).length === 4);
  const rule = await page.$eval('#step .g-rule .text', (e) => e.textContent).catch(() => null);
  check('exercise: checking reveals the rule with real names', rule === 'dl/dh~ += dl/dh * (1 - h^2)' && !s.hidden, rule);
  await page.screenshot({ path: path.join(out, 'exercise-right.png'), fullPage: true });

  /* dl/dh~: the second element wrong. */
  await goTo(page, at('h~'));
  const want = upstreamNumbers(traceOf('h~'));
  const wrong = want.slice();
  wrong[1] = String(+wrong[1] + 0.1);
  const boxes = await page.$$('table.entry input');
  for (const [i, inp] of boxes.entries()) await inp.type(wrong[i]);
  await page.keyboard.press('Enter'); /* Enter checks too */
  v = await page.$eval('#verdict', (e) => [+e.dataset.right, +e.dataset.of]);
  const marks = await page.$$eval('table.entry input', (e) => e.map((x) => x.className));
  check('exercise: a wrong element is marked wrong and the others right (' + v[0] + ' of ' + v[1] + ')',
    v[0] === 3 && v[1] === 4 && marks.join(',') === 'right,wrong,right,right', marks.join(','));
  await page.screenshot({ path: path.join(out, 'exercise-wrong.png'), fullPage: true });

  /* dl/dy~: a pasted row. */
  await goTo(page, at('y~'));
  const row = upstreamNumbers(traceOf('y~'));
  await page.type('#paste', '[ ' + row.join('  ') + ' ]');
  await page.click('#check');
  v = await page.$eval('#verdict', (e) => [+e.dataset.right, +e.dataset.of]);
  check('exercise: a pasted row fills the boxes and is marked (' + v[0] + ' of ' + v[1] + ')',
    v[0] === row.length && v[1] === row.length);
  await page.click('#exercise'); /* back to the normal view */
}

main()
  .catch((e) => check('the test ran to its end', false, e.stack || e))
  .finally(() => {
    console.log('\nscreenshots: ' + path.relative(root, out) + '/');
    console.log('browser: ' + passed + ' passed, ' + failed + ' failed');
    process.exitCode = failed === 0 && passed > 0 ? 0 : 1;
  });
