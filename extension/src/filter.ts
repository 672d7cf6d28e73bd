/**
 * The filter box's little language, turned into the query of GET /quantlab/api/runs.
 *
 *   status:running,queued  tag:trend  strategy:sma_crossover  symbol:AAA  user:alice
 *   sharpe>1  max_drawdown_pct>=-20  sort:-sharpe  golden cross
 *
 * `key:value` pairs filter (a comma gives several values), `metric<op>number` are thresholds,
 * and every other word is searched in the run names.
 */

export const FILTER_KEYS = ['status', 'strategy', 'symbol', 'tag', 'user', 'sort'] as const;
export type FilterKey = (typeof FILTER_KEYS)[number];

export interface IRunQuery {
  status?: string[];
  strategy?: string[];
  symbol?: string[];
  tag?: string[];
  user?: string[];
  sort?: string;
  where?: string;
  text?: string;
}

// A metric name then comparison characters: a threshold, even a malformed one (`sharpe>>1`,
// `sharpe>abc`), which the server then refuses with a message that says what is wrong,
// instead of it becoming a name search that silently matches nothing.
const THRESHOLD = /^([A-Za-z_][A-Za-z0-9_]*)([<>=!]+)(.*)$/;
const PAIR = /^([A-Za-z]+):(.+)$/;

/** Parse the filter box; unknown `key:` words raise an Error that names the valid keys. */
export function parseFilter(input: string): IRunQuery {
  const query: IRunQuery = {};
  const thresholds: string[] = [];
  const words: string[] = [];
  for (const token of input.trim().split(/\s+/).filter(t => t.length > 0)) {
    const threshold = THRESHOLD.exec(token);
    if (threshold) {
      thresholds.push(token);
      continue;
    }
    const pair = PAIR.exec(token);
    if (pair) {
      const key = pair[1].toLowerCase();
      if (!(FILTER_KEYS as readonly string[]).includes(key)) {
        const close = closest(key, FILTER_KEYS);
        throw new Error(
          `unknown filter '${pair[1]}:'${close ? ` — did you mean '${close}:'?` : ''}; use one of ` +
            `${FILTER_KEYS.map(k => k + ':').join(' ')}, a threshold such as sharpe>1, or words ` +
            'of a run name'
        );
      }
      if (key === 'sort') {
        query.sort = pair[2];
      } else {
        const values = pair[2].split(',').filter(v => v.length > 0);
        const existing = (query[key as Exclude<FilterKey, 'sort'>] ?? []) as string[];
        query[key as Exclude<FilterKey, 'sort'>] = existing.concat(values);
      }
      continue;
    }
    words.push(token);
  }
  if (thresholds.length > 0) {
    query.where = thresholds.join(', ');
  }
  if (words.length > 0) {
    query.text = words.join(' ');
  }
  return query;
}

/** The query string of GET /quantlab/api/runs for a query, a page size and an owner filter. */
export function toSearchParams(query: IRunQuery, limit: number, user?: string): URLSearchParams {
  const params = new URLSearchParams();
  for (const key of ['status', 'strategy', 'symbol', 'tag', 'user'] as const) {
    for (const value of query[key] ?? []) {
      params.append(key, value);
    }
  }
  if (user && !(query.user && query.user.length)) {
    params.append('user', user);
  }
  if (query.sort) {
    params.set('sort', query.sort);
  }
  if (query.where) {
    params.set('where', query.where);
  }
  if (query.text) {
    params.set('text', query.text);
  }
  params.set('limit', String(limit));
  return params;
}

/** Edit distance (insertions, deletions, substitutions) between two words. */
export function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      current.push(Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost));
    }
    previous = current;
  }
  return previous[b.length];
}

/** The choice a misspelt word most likely meant (at most a third of it edited), or null. */
export function closest(word: string, choices: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const choice of choices) {
    const distance = editDistance(word, choice);
    if (distance < bestDistance) {
      best = choice;
      bestDistance = distance;
    }
  }
  return best !== null && bestDistance <= Math.max(1, Math.floor(best.length / 3)) ? best : null;
}

/**
 * The ids of ``runs`` oldest first, by when each was queued: a diff reads "older → newer"
 * whatever order the list is sorted in (by a metric, say). Runs never queued (null) and ties
 * keep their given order.
 */
export function olderFirst(runs: ReadonlyArray<{ id: string; queued_at: number | null }>): string[] {
  return runs
    .map((run, index) => ({ run, index }))
    .sort((a, b) => {
      const ta = a.run.queued_at ?? Number.POSITIVE_INFINITY;
      const tb = b.run.queued_at ?? Number.POSITIVE_INFINITY;
      return ta !== tb ? ta - tb : a.index - b.index;
    })
    .map(({ run }) => run.id);
}
