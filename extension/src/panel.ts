/**
 * The Backtests side panel: every run (or the user's), live. A filter box, a list of runs with
 * status, progress bar, step, ETA and key metrics, per-run Cancel / Rerun / Report buttons and
 * "Compare selected". The list is loaded over REST and kept current by the event stream, which
 * runs only while the panel is visible.
 */

import { Clipboard, Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { ApiError, IRun, IRunEvent, QuantlabApi } from './api';
import { IRunQuery, olderFirst, parseFilter, toSearchParams } from './filter';
import {
  auditBadge,
  CLOCK_MS,
  formatBars,
  formatDuration,
  formatNumber,
  formatStep,
  isTerminal,
  KEY_METRICS,
  runTooltip,
  timeAgo
} from './format';
import { EventStream, StreamState } from './stream';

export interface IPanelSettings {
  show: 'all' | 'mine';
  limit: number;
}

export interface IPanelOptions {
  api: QuantlabApi;
  stream: EventStream;
  /** Open a file of the server's root in Lab (the executed report). */
  openPath: (path: string) => Promise<void>;
  /** The current user's name as the server records it (for "mine"). */
  user: () => Promise<string | null>;
  /** Insert code as a new cell of the open notebook; false when none is open. */
  insertCode?: (code: string) => Promise<boolean>;
}

const MAX_COMPARE = 5;
const RELOAD_DEBOUNCE_MS = 300;

export class BacktestsPanel extends Widget {
  constructor(options: IPanelOptions) {
    super();
    this._api = options.api;
    this._stream = options.stream;
    this._openPath = options.openPath;
    this._user = options.user;
    this._insertCode = options.insertCode ?? (async () => false);
    this.id = 'quantlab-backtests';
    this.addClass('jp-QuantlabPanel');
    this.title.caption = 'Backtests';
    this._build();
    this._stream.event.connect(this._onEvent, this);
    this._stream.stateChanged.connect(this._onStreamState, this);
  }

  get settings(): IPanelSettings {
    return this._settings;
  }

  set settings(value: IPanelSettings) {
    this._settings = value;
    if (this.isVisible) {
      void this.reload();
    }
  }

  /** The runs shown, by id (tests and commands read this). */
  get runs(): ReadonlyMap<string, IRun> {
    return this._runs;
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._stream.event.disconnect(this._onEvent, this);
    this._stream.stateChanged.disconnect(this._onStreamState, this);
    this._stream.stop();
    this._stopClock();
    super.dispose();
  }

  /** Load the list for the current filter, then follow events from the list's seq. */
  async reload(): Promise<void> {
    let query: IRunQuery;
    try {
      query = parseFilter(this._filter.value);
    } catch (error) {
      this._showMessage((error as Error).message, true);
      return;
    }
    const ticket = ++this._loadTicket;
    try {
      const mine = this._settings.show === 'mine' ? (await this._user()) ?? undefined : undefined;
      const page = await this._api.listRuns(toSearchParams(query, this._settings.limit, mine));
      if (ticket !== this._loadTicket) {
        return; // a newer load started meanwhile
      }
      this._runs = new Map(page.runs.map(run => [run.id, run]));
      this._order = page.runs.map(run => run.id);
      this._total = page.total;
      this._showMessage(null);
      this._render();
      if (this.isVisible) {
        this._stream.start(page.seq);
      }
    } catch (error) {
      if (ticket === this._loadTicket) {
        this._showMessage((error as Error).message, true);
      }
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this.reload();
    this._startClock();
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this._stream.stop(); // nothing streams to a panel nobody sees
    this._stopClock();
  }

  // -- "n s ago" ---------------------------------------------------------------------------------

  /** Keep the rows' "n s ago" true while the panel is shown. */
  private _startClock(): void {
    if (this._clock === null) {
      this._clock = window.setInterval(() => this._tickClock(), CLOCK_MS);
    }
  }

  private _stopClock(): void {
    if (this._clock !== null) {
      window.clearInterval(this._clock);
      this._clock = null;
    }
  }

  private _tickClock(): void {
    for (const [id, row] of this._rows) {
      const run = this._runs.get(id);
      if (run) {
        (row.querySelector('.jp-QuantlabRun-meta') as HTMLElement).textContent = this._metaText(run);
      }
    }
  }

  private _metaText(run: IRun): string {
    const meta = [run.user ?? '', (run.tags ?? []).map(t => `#${t}`).join(' '), timeAgo(run.queued_at)];
    return meta.filter(m => m).join(' · ');
  }

  // -- events ------------------------------------------------------------------------------------

  private _onEvent(_: EventStream, event: IRunEvent): void {
    const run = this._runs.get(event.run_id);
    if (!run) {
      if (event.type === 'queued') {
        this._scheduleReload(); // a new run: it may belong to this list
      }
      return;
    }
    const data = event.data ?? {};
    switch (event.type) {
      case 'started':
        run.status = 'running';
        run.started_at = event.ts;
        run.step = (data.step as string) ?? 'started';
        break;
      case 'progress':
        run.status = 'running';
        // the fields of quantlab.jobs.lifecycle.Progress, one spelling each
        if (typeof data.progress === 'number') {
          run.progress = data.progress;
        }
        run.step = (data.step as string) ?? run.step;
        run.step_done = typeof data.step_done === 'number' ? data.step_done : undefined;
        run.step_total = typeof data.step_total === 'number' ? data.step_total : undefined;
        if (typeof data.bars_done === 'number') {
          run.bars_done = data.bars_done;
        }
        run.eta_seconds = typeof data.eta_seconds === 'number' ? data.eta_seconds : null;
        break;
      case 'completed':
      case 'failed':
      case 'cancelled':
        run.status = event.type;
        run.finished_at = event.ts;
        run.eta_seconds = null;
        if (event.type === 'completed') {
          run.progress = 1;
        }
        void this._refreshRun(run.id); // metrics, error, partial: from the registry
        break;
      default:
        return;
    }
    this._renderRow(run);
  }

  private _onStreamState(_: EventStream, state: StreamState): void {
    this._node('.jp-QuantlabPanel-live').dataset.state = state;
    this._node('.jp-QuantlabPanel-live').title =
      state === 'live' ? 'Live: updates stream in' : `Events: ${state}`;
  }

  private async _refreshRun(id: string): Promise<void> {
    try {
      const fresh = await this._api.getRun(id);
      if (this._runs.has(id)) {
        this._runs.set(id, fresh);
        this._renderRow(fresh);
      }
    } catch (error) {
      console.warn(`QuantLab: cannot refresh run ${id}`, error);
    }
  }

  private _scheduleReload(): void {
    if (this._reloadTimer !== null) {
      return;
    }
    this._reloadTimer = window.setTimeout(() => {
      this._reloadTimer = null;
      void this.reload();
    }, RELOAD_DEBOUNCE_MS);
  }

  // -- actions -----------------------------------------------------------------------------------

  private async _act(label: string, action: () => Promise<void>): Promise<void> {
    try {
      await action();
    } catch (error) {
      const message = error instanceof ApiError ? error.message : String(error);
      Notification.error(`${label}: ${message}`, { autoClose: 8000 });
    }
  }

  private _cancel(run: IRun): Promise<void> {
    // Said at once: a running run stops at its next chunk, which can take seconds.
    this._cancelling.add(run.id);
    this._renderRow(run);
    return this._act('Cancel', async () => {
      try {
        const fresh = await this._api.cancel(run.id);
        this._runs.set(fresh.id, fresh);
        this._renderRow(fresh);
      } catch (error) {
        this._cancelling.delete(run.id);
        this._renderRow(run);
        throw error;
      }
    });
  }

  /** The status a row shows: "cancelling…" from the click until the run has ended. */
  private _statusText(run: IRun): string {
    if (isTerminal(run.status)) {
      this._cancelling.delete(run.id);
    } else if (this._cancelling.has(run.id) || run.cancel_requested) {
      return 'cancelling…';
    }
    return run.partial ? `${run.status} (partial)` : run.status;
  }

  // -- open in notebook, copy id -----------------------------------------------------------------

  private _openInNotebook(run: IRun): Promise<void> {
    return this._act('Open in notebook', async () => {
      const code = `ql.get_run(${JSON.stringify(run.id)})`;
      if (!(await this._insertCode(code))) {
        Notification.warning(`Open a notebook first, then "Open in notebook" adds ${code} to it`, {
          autoClose: 6000
        });
      }
    });
  }

  private _copyId(run: IRun): Promise<void> {
    return this._act('Copy id', async () => {
      Clipboard.copyToSystem(run.id);
      Notification.info(`Copied the run id ${run.id}`, { autoClose: 2000 });
    });
  }

  // -- traceback of a failed run -----------------------------------------------------------------

  private _renderTraceback(row: HTMLElement, run: IRun): void {
    const details = row.querySelector('.jp-QuantlabRun-traceback') as HTMLDetailsElement;
    details.hidden = run.status !== 'failed';
    const traceback = run.traceback;
    if (typeof traceback === 'string' && traceback) {
      (details.querySelector('pre') as HTMLElement).textContent = traceback;
    }
  }

  private _tracebackNode(id: string): HTMLDetailsElement {
    const details = document.createElement('details');
    details.className = 'jp-QuantlabRun-traceback';
    details.hidden = true;
    const summary = document.createElement('summary');
    summary.textContent = 'Traceback';
    const pre = document.createElement('pre');
    details.append(summary, pre);
    // The list leaves tracebacks out (they are long): fetched when first unfolded.
    details.addEventListener('toggle', () => {
      if (details.open && !pre.textContent) {
        pre.textContent = 'loading…';
        this._api
          .getRun(id)
          .then(fresh => {
            pre.textContent =
              fresh.traceback || 'no traceback was kept';
          })
          .catch(error => {
            pre.textContent = `cannot load the traceback: ${(error as Error).message}`;
          });
      }
    });
    return details;
  }

  private _rerun(run: IRun): Promise<void> {
    return this._act('Rerun', async () => {
      const fresh = await this._api.rerun(run.id);
      Notification.info(`Rerun of "${run.name}" queued as ${fresh.id}`, { autoClose: 4000 });
      await this.reload();
    });
  }

  private _report(run: IRun): Promise<void> {
    // A tab opened after an await is a popup to the browser: open it now, fill it in later.
    const tab = window.open('', '_blank');
    return this._act('Report', async () => {
      const made = this._api.report(run.id);
      Notification.promise(made.then(report => report.report_ref), {
        pending: { message: `Making the report of "${run.name}"…`, options: { autoClose: false } },
        success: { message: () => `Report of "${run.name}" is ready`, options: { autoClose: 3000 } },
        error: { message: (e: unknown) => `Report failed: ${(e as Error).message}` }
      });
      try {
        const report = await made;
        if (tab) {
          tab.location.href = this._api.url(`runs/${encodeURIComponent(run.id)}/report`);
        } else if (report.lab_path) {
          await this._openPath(report.lab_path);
        }
      } catch (error) {
        tab?.close();
        throw error;
      }
    });
  }

  private _compare(): Promise<void> {
    const ids = this._order.filter(id => this._selected.has(id));
    const tab = window.open('', '_blank');
    return this._act('Compare', async () => {
      try {
        const comparison = await this._api.compare(ids);
        // the server's own dashboard page (a path under its base URL): made absolute here, as
        // the blank tab opened above has no page to resolve it against
        const url = comparison.dashboard_url
          ? new URL(comparison.dashboard_url, window.location.href).href
          : null;
        if (tab && url) {
          tab.location.href = url;
        } else {
          tab?.close();
        }
        Notification.success(`Comparison of ${ids.length} runs saved (${comparison.id})`, {
          autoClose: 6000,
          actions: url
            ? [{ label: 'Open dashboard', callback: () => window.open(url, '_blank') }]
            : []
        });
      } catch (error) {
        tab?.close();
        throw error;
      }
    });
  }

  /** "Diff": the run diff of the two selected runs (older first), as text in a dialog. */
  private _diff(): Promise<void> {
    // the list is newest first unless sorted by a metric: order by when each run was queued
    const ids = olderFirst(
      this._order.flatMap(id => {
        const run = this._selected.has(id) ? this._runs.get(id) : undefined;
        return run ? [run] : [];
      }).reverse() // newest first in the list: ties and unqueued runs then read older first
    );
    return this._act('Diff', async () => {
      const diff = await this._api.diff(ids[0], ids[1]);
      const body = document.createElement('pre');
      body.className = 'jp-QuantlabPanel-diff';
      body.textContent = diff.text;
      await showDialog({
        title: `Diff ${diff.a} → ${diff.b}`,
        body: new Widget({ node: body }),
        buttons: [Dialog.okButton({ label: 'Close' })]
      });
    });
  }

  // -- DOM ---------------------------------------------------------------------------------------

  private _node<T extends HTMLElement = HTMLElement>(selector: string): T {
    return this.node.querySelector(selector) as T;
  }

  private _build(): void {
    const header = document.createElement('div');
    header.className = 'jp-QuantlabPanel-header';
    const title = document.createElement('h2');
    title.textContent = 'Backtests';
    const live = document.createElement('span');
    live.className = 'jp-QuantlabPanel-live';
    live.dataset.state = 'stopped';
    title.appendChild(live);
    header.appendChild(title);

    this._filter = document.createElement('input');
    this._filter.type = 'search';
    this._filter.className = 'jp-QuantlabPanel-filter jp-mod-styled';
    this._filter.placeholder = 'Filter: status:running tag:trend sharpe>1 name…';
    this._filter.title =
      'key:value (status, strategy, symbol, tag, user, sort), thresholds such as sharpe>1, ' +
      'other words match run names';
    this._filter.addEventListener('keydown', event => {
      if (event.key === 'Enter') {
        void this.reload();
      }
    });
    this._filter.addEventListener('input', () => {
      if (this._filterTimer !== null) {
        window.clearTimeout(this._filterTimer);
      }
      this._filterTimer = window.setTimeout(() => {
        this._filterTimer = null;
        void this.reload();
      }, 400);
    });
    header.appendChild(this._filter);

    const toolbar = document.createElement('div');
    toolbar.className = 'jp-QuantlabPanel-toolbar';
    this._compareButton = this._button('Compare selected', 'jp-QuantlabPanel-compare', () =>
      this._compare()
    );
    this._compareButton.disabled = true;
    toolbar.appendChild(this._compareButton);
    this._diffButton = this._button('Diff', 'jp-QuantlabPanel-diff-button', () => this._diff());
    this._diffButton.disabled = true;
    this._diffButton.title = 'Select exactly 2 runs to see why they differ';
    toolbar.appendChild(this._diffButton);
    toolbar.appendChild(this._button('Refresh', 'jp-QuantlabPanel-refresh', () => this.reload()));
    const count = document.createElement('span');
    count.className = 'jp-QuantlabPanel-count';
    toolbar.appendChild(count);
    header.appendChild(toolbar);

    const message = document.createElement('div');
    message.className = 'jp-QuantlabPanel-message';
    message.hidden = true;

    this._list = document.createElement('ul');
    this._list.className = 'jp-QuantlabPanel-list';

    this.node.append(header, message, this._list);
  }

  private _button(label: string, className: string, onClick: () => Promise<void>): HTMLButtonElement {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = `jp-Button jp-mod-minimal jp-QuantlabPanel-button ${className}`;
    button.textContent = label;
    button.addEventListener('click', event => {
      event.stopPropagation();
      button.disabled = true;
      void onClick().finally(() => {
        button.disabled = false;
        this._updateCompare();
      });
    });
    return button;
  }

  private _showMessage(text: string | null, isError = false): void {
    const node = this._node('.jp-QuantlabPanel-message');
    node.hidden = text === null;
    node.textContent = text ?? '';
    node.classList.toggle('jp-mod-error', isError);
  }

  private _render(): void {
    for (const id of [...this._rows.keys()]) {
      if (!this._runs.has(id)) {
        this._rows.get(id)!.remove();
        this._rows.delete(id);
        this._selected.delete(id);
      }
    }
    for (const id of this._order) {
      this._renderRow(this._runs.get(id)!);
    }
    // DOM order follows the list order (newest first unless sorted otherwise)
    this._order.forEach(id => this._list.appendChild(this._rows.get(id)!));
    const shown = this._order.length;
    const runs = (n: number) => (n === 1 ? '1 run' : `${n} runs`);
    this._node('.jp-QuantlabPanel-count').textContent =
      shown === this._total ? runs(shown) : `${shown} of ${runs(this._total)}`;
    if (shown === 0) {
      this._showMessage('No runs match. Submit one with %%backtest in a notebook, or clear the filter.');
    }
    this._updateCompare();
  }

  private _renderRow(run: IRun): void {
    let row = this._rows.get(run.id);
    if (!row) {
      row = this._createRow(run.id);
      this._rows.set(run.id, row);
      this._list.appendChild(row);
    }
    const part = (name: string) => row!.querySelector(`.jp-QuantlabRun-${name}`) as HTMLElement;
    row.dataset.status = run.status;
    part('name').textContent = run.name || run.id;
    part('name').title = runTooltip(run);
    part('status').textContent = this._statusText(run);
    part('status').dataset.status = run.status;
    part('audit').textContent = auditBadge(run);
    part('audit').hidden = !run.audit_skipped;
    row.dataset.cancelling = String(this._cancelling.has(run.id));
    part('meta').textContent = this._metaText(run);
    this._renderTraceback(row, run);

    const percent = Math.max(0, Math.min(100, (run.progress ?? 0) * 100));
    const bar = part('bar');
    bar.style.width = `${percent.toFixed(1)}%`;
    part('progress').setAttribute('aria-valuenow', percent.toFixed(0));
    part('progress').hidden = run.status === 'completed' && !run.partial;
    const eta = formatDuration(run.eta_seconds);
    const queuedAt = run.status === 'queued' && run.position ? `#${run.position} in the queue` : '';
    const stepBits = [
      run.status === 'running' ? `${percent.toFixed(0)}%` : '',
      run.status === 'running' ? formatStep(run.step, run.step_done, run.step_total) : '',
      run.status === 'queued' ? queuedAt || 'queued' : '',
      run.status === 'running' ? formatBars(run.bars_done) : '',
      run.status === 'running' && eta ? `~${eta} left` : '',
      run.status === 'failed' && run.error ? run.error : ''
    ];
    part('step').textContent = stepBits.filter(b => b).join(' · ');

    const metrics = part('metrics');
    metrics.replaceChildren();
    if (run.metrics && Object.keys(run.metrics).length > 0) {
      for (const [label, key, digits, suffix] of KEY_METRICS) {
        if (!(key in run.metrics)) {
          continue;
        }
        const item = document.createElement('span');
        item.className = 'jp-QuantlabRun-metric';
        item.dataset.metric = key;
        item.textContent = `${label} ${formatNumber(run.metrics[key], digits)}${suffix}`;
        metrics.appendChild(item);
      }
    }

    const active = !isTerminal(run.status);
    (part('cancel') as HTMLButtonElement).hidden = !active || this._cancelling.has(run.id);
    (part('rerun') as HTMLButtonElement).hidden = active;
    // a cancelled sweep keeps its finished combinations: those can be reported too
    const reportable = run.status === 'completed' || (run.status === 'cancelled' && run.partial);
    (part('report') as HTMLButtonElement).hidden = !reportable;
    (part('select') as HTMLInputElement).disabled = run.status !== 'completed';
    if (run.status !== 'completed' && this._selected.delete(run.id)) {
      (part('select') as HTMLInputElement).checked = false;
      this._updateCompare();
    }
  }

  private _createRow(id: string): HTMLLIElement {
    const row = document.createElement('li');
    row.className = 'jp-QuantlabRun';
    row.dataset.runId = id;
    const line = (className: string, ...children: HTMLElement[]) => {
      const div = document.createElement('div');
      div.className = className;
      div.append(...children);
      return div;
    };
    const span = (name: string) => {
      const node = document.createElement('span');
      node.className = `jp-QuantlabRun-${name}`;
      return node;
    };
    const select = document.createElement('input');
    select.type = 'checkbox';
    select.className = 'jp-QuantlabRun-select';
    select.title = 'Select for "Compare selected" (completed runs)';
    select.addEventListener('change', () => {
      if (select.checked) {
        this._selected.add(id);
      } else {
        this._selected.delete(id);
      }
      this._updateCompare();
    });
    const progress = document.createElement('div');
    progress.className = 'jp-QuantlabRun-progress';
    progress.setAttribute('role', 'progressbar');
    progress.setAttribute('aria-valuemin', '0');
    progress.setAttribute('aria-valuemax', '100');
    const bar = span('bar');
    progress.appendChild(bar);
    const run = () => this._runs.get(id)!;
    const actions = line(
      'jp-QuantlabRun-actions',
      this._button('Cancel', 'jp-QuantlabRun-cancel', () => this._cancel(run())),
      this._button('Rerun', 'jp-QuantlabRun-rerun', () => this._rerun(run())),
      this._button('Report', 'jp-QuantlabRun-report', () => this._report(run())),
      this._button('Open in notebook', 'jp-QuantlabRun-open', () => this._openInNotebook(run())),
      this._button('Copy id', 'jp-QuantlabRun-copy', () => this._copyId(run()))
    );
    row.append(
      line('jp-QuantlabRun-title', select, span('name'), span('status'), span('audit')),
      line('jp-QuantlabRun-metaLine', span('meta')),
      progress,
      line('jp-QuantlabRun-stepLine', span('step')),
      line('jp-QuantlabRun-metrics'),
      this._tracebackNode(id),
      actions
    );
    return row;
  }

  private _updateCompare(): void {
    const n = this._selected.size;
    this._compareButton.disabled = n < 2 || n > MAX_COMPARE;
    this._compareButton.title =
      n < 2
        ? 'Select 2 to 5 completed runs to compare them'
        : n > MAX_COMPARE
          ? `At most ${MAX_COMPARE} runs can be compared`
          : `Compare ${n} runs in the dashboard`;
    this._diffButton.disabled = n !== 2;
  }

  private readonly _api: QuantlabApi;
  private readonly _stream: EventStream;
  private readonly _openPath: (path: string) => Promise<void>;
  private readonly _user: () => Promise<string | null>;
  private readonly _insertCode: (code: string) => Promise<boolean>;
  private _cancelling = new Set<string>();
  private _clock: number | null = null;
  private _settings: IPanelSettings = { show: 'all', limit: 50 };
  private _runs = new Map<string, IRun>();
  private _order: string[] = [];
  private _total = 0;
  private _rows = new Map<string, HTMLLIElement>();
  private _selected = new Set<string>();
  private _loadTicket = 0;
  private _reloadTimer: number | null = null;
  private _filterTimer: number | null = null;
  private _filter!: HTMLInputElement;
  private _list!: HTMLUListElement;
  private _compareButton!: HTMLButtonElement;
  private _diffButton!: HTMLButtonElement;
}
