/** How numbers, times and statuses read in the panel. */

export const TERMINAL = ['completed', 'failed', 'cancelled'];

export function isTerminal(status: string): boolean {
  return TERMINAL.includes(status);
}

/** Seconds as "0:42", "12:05" or "1:02:03"; null for unknown. */
export function formatDuration(seconds: number | null | undefined): string | null {
  if (seconds === null || seconds === undefined || !isFinite(seconds) || seconds < 0) {
    return null;
  }
  const total = Math.round(seconds);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const mm = h > 0 ? String(m).padStart(2, '0') : String(m);
  return (h > 0 ? `${h}:` : '') + `${mm}:${String(s).padStart(2, '0')}`;
}

export function formatNumber(value: unknown, digits = 2): string {
  if (typeof value !== 'number' || !isFinite(value)) {
    return '–';
  }
  return value.toLocaleString(undefined, {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits
  });
}

/** Bars as "950", "12.3 k" or "1.2 M". */
export function formatBars(value: unknown): string {
  if (typeof value !== 'number' || !isFinite(value) || value <= 0) {
    return '';
  }
  if (value >= 1e6) {
    return `${(value / 1e6).toFixed(1)} M bars`;
  }
  if (value >= 1e4) {
    return `${(value / 1e3).toFixed(1)} k bars`;
  }
  return `${Math.round(value)} bars`;
}

/** The metrics a row shows, in order: [label, metric key, digits, suffix]. */
export const KEY_METRICS: ReadonlyArray<[string, string, number, string]> = [
  ['Sharpe', 'sharpe', 2, ''],
  ['Return', 'total_return_pct', 1, '%'],
  ['Max DD', 'max_drawdown_pct', 1, '%'],
  ['Trades', 'n_trades', 0, '']
];

export function timeAgo(epochSeconds: number | null | undefined, now = Date.now() / 1000): string {
  if (!epochSeconds) {
    return '';
  }
  const delta = Math.max(0, now - epochSeconds);
  if (delta < 60) {
    return `${Math.round(delta)} s ago`;
  }
  if (delta < 3600) {
    return `${Math.round(delta / 60)} min ago`;
  }
  if (delta < 86400) {
    return `${Math.round(delta / 3600)} h ago`;
  }
  return new Date(epochSeconds * 1000).toLocaleDateString();
}

/** The warning of a run submitted with `audit: false` (the run list's `audit_skipped`; the same
 * words as quantlab/render/format.py AUDIT_SKIPPED), '' for any other run. */
export const AUDIT_SKIPPED = 'look-ahead audit skipped';

export function auditBadge(run: { audit_skipped?: boolean | null }): string {
  return run.audit_skipped ? `⚠ ${AUDIT_SKIPPED}` : '';
}

/** How long ago an epoch time was, again every CLOCK_MS while the panel shows it. */
export const CLOCK_MS = 10000;

// JupyterLab cuts a toast's message at 140 characters: the run's name gives way, not the numbers.
const TOAST_MAX = 140;
const TOAST_METRICS: ReadonlyArray<[string, string, number, string]> = [
  ['Return', 'total_return_pct', 1, ' %'],
  ['Sharpe', 'sharpe', 2, ''],
  ['Max DD', 'max_drawdown_pct', 1, ' %']
];

/**
 * The one wording of a run's toast, whether it came from the live stream or from a stored
 * notification: `Backtest "name" completed: Return 12.3 %, Sharpe 1.42, Max DD -5.1 %`, or
 * `Backtest "name" failed: <error>`. Never longer than a toast shows: a long name is shortened.
 */
export function toastText(
  name: string,
  outcome: string,
  metrics: { [name: string]: unknown } | null | undefined,
  error?: string | null
): string {
  let detail: string;
  if (outcome === 'failed') {
    detail = error || 'see its log';
  } else {
    detail = TOAST_METRICS.filter(([, key]) => typeof metrics?.[key] === 'number')
      .map(([label, key, digits, suffix]) => `${label} ${formatNumber(metrics![key], digits)}${suffix}`)
      .join(', ');
  }
  const tail = `" ${outcome}` + (detail ? `: ${detail}` : '');
  const room = Math.max(12, TOAST_MAX - tail.length - 'Backtest "'.length);
  const shortName = name.length > room ? `${name.slice(0, room - 1)}…` : name;
  const text = `Backtest "${shortName}${tail}`;
  return text.length > TOAST_MAX ? `${text.slice(0, TOAST_MAX - 1)}…` : text;
}

/**
 * The tooltip of a run's name in the panel: the full name (the row ellipsizes a long one), the
 * id, then what it ran on.
 */
export function runTooltip(run: {
  id: string;
  name?: string | null;
  strategy?: string | null;
  symbols?: string[] | null;
}): string {
  const symbols = (run.symbols ?? []).join(', ');
  const ran = run.strategy || symbols ? `${run.strategy ?? '?'}${symbols ? ` on ${symbols}` : ''}` : '';
  return [run.name || '(unnamed)', `id ${run.id}`, ran].filter(line => line).join('\n');
}

/** A running step with its count when it has one: "computing indicators 120/300". */
export function formatStep(step: string | null | undefined, done?: number, total?: number): string {
  const name = step ?? '';
  if (!name || typeof total !== 'number' || !(total > 0) || typeof done !== 'number') {
    return name;
  }
  return `${name} ${Math.min(done, total)}/${total}`;
}
