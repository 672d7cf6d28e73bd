// Unit tests of the panel's pure logic (node's test runner; `npm test` compiles first).
const test = require('node:test');
const assert = require('node:assert/strict');

const { parseFilter, toSearchParams } = require('../lib-test/filter.js');
const { formatBars, formatDuration, formatNumber, formatStep, isTerminal, timeAgo, toastText } = require('../lib-test/format.js');
const { closest } = require('../lib-test/filter.js');

test('key:value pairs, thresholds, sort and words', () => {
  assert.deepEqual(
    parseFilter('  status:running,queued tag:trend sharpe>1 max_drawdown_pct>=-20 sort:-sharpe golden cross '),
    {
      status: ['running', 'queued'],
      tag: ['trend'],
      sort: '-sharpe',
      where: 'sharpe>1, max_drawdown_pct>=-20',
      text: 'golden cross'
    }
  );
});

test('a key given twice keeps every value', () => {
  assert.deepEqual(parseFilter('symbol:AAA symbol:BBB,CCC'), { symbol: ['AAA', 'BBB', 'CCC'] });
});

test('an empty filter is an empty query', () => {
  assert.deepEqual(parseFilter('   '), {});
});

test('an unknown key names the valid ones', () => {
  assert.throws(() => parseFilter('stauts:running'), {
    message: "unknown filter 'stauts:' — did you mean 'status:'?; use one of status: strategy: symbol: tag: user: sort:, a threshold such as sharpe>1, or words of a run name"
  });
});

test('the query string repeats multi-valued filters and adds the page size', () => {
  const params = toSearchParams(parseFilter('status:queued,running sharpe>1 my run'), 25);
  assert.equal(params.toString(), 'status=queued&status=running&where=sharpe%3E1&text=my+run&limit=25');
});

test('"mine" adds the user unless the filter names users', () => {
  assert.equal(toSearchParams({}, 50, 'alice').get('user'), 'alice');
  assert.deepEqual(toSearchParams({ user: ['bob'] }, 50, 'alice').getAll('user'), ['bob']);
});

test('durations read like a clock', () => {
  assert.equal(formatDuration(42), '0:42');
  assert.equal(formatDuration(725), '12:05');
  assert.equal(formatDuration(3723), '1:02:03');
  assert.equal(formatDuration(null), null);
  assert.equal(formatDuration(-1), null);
  assert.equal(formatDuration(Infinity), null);
});

test('bars and numbers', () => {
  assert.equal(formatBars(950), '950 bars');
  assert.equal(formatBars(12345), '12.3 k bars');
  assert.equal(formatBars(1.25e6), '1.3 M bars');
  assert.equal(formatBars(0), '');
  assert.equal(formatNumber(null), '–');
  assert.equal(formatNumber(NaN), '–');
  assert.equal(formatNumber(1.234, 1), (1.2).toLocaleString(undefined, { minimumFractionDigits: 1 }));
});

test('terminal statuses and ages', () => {
  assert.ok(isTerminal('completed') && isTerminal('failed') && isTerminal('cancelled'));
  assert.ok(!isTerminal('running') && !isTerminal('queued'));
  assert.equal(timeAgo(1000, 1030), '30 s ago');
  assert.equal(timeAgo(1000, 1000 + 600), '10 min ago');
  assert.equal(timeAgo(1000, 1000 + 7200), '2 h ago');
  assert.equal(timeAgo(null, 1000), '');
});

test('a run submitted with audit: false gets the warning badge, others none', () => {
  const { AUDIT_SKIPPED, auditBadge } = require('../lib-test/format.js');
  assert.equal(AUDIT_SKIPPED, 'look-ahead audit skipped');
  assert.equal(auditBadge({ audit_skipped: true }), '⚠ look-ahead audit skipped');
  assert.equal(auditBadge({ audit_skipped: false }), '');
  assert.equal(auditBadge({}), '');
});

test('a malformed threshold goes to the server, which says what is wrong', () => {
  assert.deepEqual(parseFilter('sharpe>>1 golden'), { where: 'sharpe>>1', text: 'golden' });
  assert.deepEqual(parseFilter('sharpe>abc'), { where: 'sharpe>abc' });
});

test('did-you-mean picks the nearest key only when it is near', () => {
  assert.equal(closest('stratgy', ['status', 'strategy', 'symbol']), 'strategy');
  assert.equal(closest('zzzzzz', ['status', 'strategy', 'symbol']), null);
});

test('a toast has one wording, whole metrics, and fits what a toast shows', () => {
  const metrics = { total_return_pct: 12.34, sharpe: 1.4237, max_drawdown_pct: -5.06 };
  assert.equal(toastText('x', 'completed', metrics),
               'Backtest "x" completed: Return 12.3 %, Sharpe 1.42, Max DD -5.1 %');
  const long = toastText('n'.repeat(300), 'completed', metrics);
  assert.ok(long.length <= 140, long);
  assert.ok(long.endsWith('completed: Return 12.3 %, Sharpe 1.42, Max DD -5.1 %'), long);
  assert.equal(toastText('x', 'failed', null, 'boom'), 'Backtest "x" failed: boom');
  assert.equal(toastText('x', 'completed', {}), 'Backtest "x" completed');
});

test('a run name\'s tooltip holds the whole name and the id', () => {
  const { runTooltip } = require('../lib-test/format.js');
  const name = 'momentum on the whole S&P 500 universe, '.repeat(4).trim();
  assert.equal(runTooltip({ id: '01ABC', name, strategy: 'sma_crossover', symbols: ['AAA', 'BBB'] }),
               `${name}\nid 01ABC\nsma_crossover on AAA, BBB`);
  assert.equal(runTooltip({ id: '01ABC', name: null }), '(unnamed)\nid 01ABC');
});

test('a step with a count shows it; without one, the step alone', () => {
  assert.equal(formatStep('computing indicators', 120, 300), 'computing indicators 120/300');
  assert.equal(formatStep('compiling the engine', 25, 22), 'compiling the engine 22/22');
  assert.equal(formatStep('simulating', 0, 0), 'simulating');
  assert.equal(formatStep('simulating'), 'simulating');
  assert.equal(formatStep(null, 1, 2), '');
});

test('a diff takes the two runs oldest first, whatever the list order', () => {
  const { olderFirst } = require('../lib-test/filter.js');
  // listed by a metric: the newer run first
  assert.deepEqual(olderFirst([{ id: 'new', queued_at: 200 }, { id: 'old', queued_at: 100 }]),
                   ['old', 'new']);
  assert.deepEqual(olderFirst([{ id: 'old', queued_at: 100 }, { id: 'new', queued_at: 200 }]),
                   ['old', 'new']);
  // never queued (a cached copy, an imported run) and ties keep the given order
  assert.deepEqual(olderFirst([{ id: 'a', queued_at: null }, { id: 'b', queued_at: 5 }]), ['b', 'a']);
  assert.deepEqual(olderFirst([{ id: 'a', queued_at: 5 }, { id: 'b', queued_at: 5 }]), ['a', 'b']);
});
