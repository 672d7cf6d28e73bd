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
