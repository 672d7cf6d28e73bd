/** The REST client of /quantlab/api/ (Jupyter's login, token and XSRF handled by ServerConnection). */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface IRun {
  id: string;
  name: string;
  user: string | null;
  tags: string[];
  strategy: string | null;
  symbols: string[];
  status: string;
  progress: number;
  step: string | null;
  /** How far the step is, when it counts something (indicators, functions compiled). */
  step_done?: number;
  step_total?: number;
  bars_done: number;
  eta_seconds: number | null;
  queued_at: number | null;
  started_at: number | null;
  finished_at: number | null;
  metrics: { [name: string]: number | null };
  error: string | null;
  partial: boolean;
  cached_from?: string | null;
  position?: number | null;
  /** Cancel was asked for (here or in a notebook); the run stops at its next chunk. */
  cancel_requested?: boolean;
  /** Only in GET runs/{id} (the list leaves it out). */
  traceback?: string | null;
  config?: { [key: string]: unknown };
  audit_skipped?: boolean;
}

export interface IRunPage {
  runs: IRun[];
  total: number;
  limit: number;
  offset: number;
  seq: number;
}

export interface IRunEvent {
  seq: number;
  run_id: string;
  type: string;
  ts: number;
  data: { [key: string]: any };
}

export interface INotification {
  id: string;
  user: string;
  run_id?: string;
  kind?: string;
  title?: string;
  body?: string;
  created_at?: number;
  read: boolean;
}

export interface IComparison {
  id: string;
  run_ids: string[];
  labels: { [id: string]: string };
  metrics: { [id: string]: { [metric: string]: unknown } };
  /** The compare dashboard on the Lab's own server (``<base_url>quantlab/dashboards/compare``). */
  dashboard_url: string | null;
  /** The same comparison on ``quantlab dashboard compare`` (for people without the Lab). */
  standalone_url?: string | null;
}

/** GET diff?a=&b=: why two runs differ (quantlab.research.diff.RunDiff.as_dict). */
export interface IRunDiff {
  a: string;
  b: string;
  causes: string[];
  code: string;
  engine: [string, string] | null;
  divergence: string | null;
  trades: { only_a: number; only_b: number };
  text: string;
}

export interface IReport {
  run_id: string;
  /** The executed notebook (on the server). */
  notebook: string;
  html: string | null;
  report_ref: string;
  /** The notebook relative to the server's root, when Lab can open it. */
  lab_path: string | null;
  /** The report as a web page, relative to the server's base URL. */
  url: string;
}

/** An error answered by the API: its message says what went wrong and what to do. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly body: { [key: string]: unknown } = {}
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const API_PATH = 'quantlab/api';

export class QuantlabApi {
  constructor(readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  url(...parts: string[]): string {
    return URLExt.join(this.settings.baseUrl, API_PATH, ...parts);
  }

  /** The events WebSocket URL, with the token when the server wants it in the URL. */
  eventsUrl(after: number | null, runId?: string): string {
    const params = new URLSearchParams();
    if (after !== null) {
      params.set('after', String(after));
    }
    if (runId) {
      params.set('run_id', runId);
    }
    const token = this.settings.token;
    if (this.settings.appendToken && token) {
      params.set('token', token);
    }
    const query = params.toString();
    return URLExt.join(this.settings.wsUrl, API_PATH, 'events') + (query ? `?${query}` : '');
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const init: RequestInit = { method };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { 'Content-Type': 'application/json' };
    }
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(this.url(path), init, this.settings);
    } catch (error) {
      throw new ApiError(0, `cannot reach the Jupyter server (${error}); is it running?`);
    }
    const text = await response.text();
    let data: any = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = { message: text };
    }
    if (!response.ok) {
      const message =
        data && typeof data.message === 'string' && data.message
          ? data.message
          : `${method} ${path} failed with HTTP ${response.status}`;
      throw new ApiError(response.status, message, data ?? {});
    }
    return data as T;
  }

  listRuns(params: URLSearchParams): Promise<IRunPage> {
    return this.request<IRunPage>('GET', `runs?${params.toString()}`);
  }

  getRun(id: string): Promise<IRun> {
    return this.request<IRun>('GET', `runs/${encodeURIComponent(id)}`);
  }

  submit(config: unknown, options: { [key: string]: unknown } = {}): Promise<IRun> {
    return this.request<IRun>('POST', 'runs', { config, ...options });
  }

  cancel(id: string): Promise<IRun> {
    return this.request<IRun>('POST', `runs/${encodeURIComponent(id)}/cancel`);
  }

  rerun(id: string): Promise<IRun> {
    return this.request<IRun>('POST', `runs/${encodeURIComponent(id)}/rerun`);
  }

  report(id: string): Promise<IReport> {
    return this.request<IReport>('POST', `runs/${encodeURIComponent(id)}/report`);
  }

  compare(ids: string[]): Promise<IComparison> {
    const params = new URLSearchParams({ ids: ids.join(',') });
    return this.request<IComparison>('GET', `compare?${params.toString()}`);
  }

  diff(a: string, b: string): Promise<IRunDiff> {
    const params = new URLSearchParams({ a, b });
    return this.request<IRunDiff>('GET', `diff?${params.toString()}`);
  }

  notifications(
    unreadOnly: boolean,
    limit = 50
  ): Promise<{ notifications: INotification[]; user: string }> {
    const params = new URLSearchParams({ unread_only: String(unreadOnly), limit: String(limit) });
    return this.request('GET', `notifications?${params.toString()}`);
  }

  markRead(id: string): Promise<unknown> {
    return this.request('POST', `notifications/${encodeURIComponent(id)}/read`);
  }
}
