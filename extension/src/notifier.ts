/**
 * Toasts (JupyterLab's Notification API) when a run completes or fails.
 *
 * Two sources, one toast per run and outcome: the live event stream (while it runs), and the
 * in-app notifications kept in the registry, read at start-up and every `pollSeconds`, so that
 * what happened while the browser was closed (or the panel hidden) is shown when it comes back.
 * A notification is marked read once shown.
 */

import { Notification } from '@jupyterlab/apputils';

import { INotification, IRun, IRunEvent, QuantlabApi } from './api';
import { toastText } from './format';
import { EventStream } from './stream';

export interface INotifierSettings {
  enabled: boolean;
  othersRuns: boolean;
  pollSeconds: number;
}

export class RunNotifier {
  constructor(
    private readonly api: QuantlabApi,
    stream: EventStream,
    private readonly showPanel: () => void
  ) {
    stream.event.connect(this._onEvent, this);
  }

  /** The user the server records our runs under (known after the first poll). */
  get user(): string | null {
    return this._user;
  }

  /** The user the server records our runs under, asking the server if not known yet. */
  async whoami(): Promise<string | null> {
    if (this._user === null) {
      try {
        this._user = (await this.api.notifications(true, 1)).user;
      } catch (error) {
        console.warn('QuantLab: cannot tell which user the server records', error);
      }
    }
    return this._user;
  }

  set settings(value: INotifierSettings) {
    this._settings = value;
    this._schedule(0);
  }

  get settings(): INotifierSettings {
    return this._settings;
  }

  /** Show unread registry notifications now; returns how many were shown. */
  async poll(): Promise<number> {
    let shown = 0;
    try {
      const reply = await this.api.notifications(true);
      this._user = reply.user;
      // oldest first, so that toasts stack in the order things happened
      for (const item of [...reply.notifications].reverse()) {
        if (this._settings.enabled && this._remember(item.run_id, item.kind)) {
          await this._toastNotification(item);
          shown++;
        }
        await this.api.markRead(item.id);
      }
    } catch (error) {
      console.warn('QuantLab: cannot read notifications', error);
    }
    return shown;
  }

  dispose(): void {
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
      this._timer = null;
    }
    this._disposed = true;
  }

  private _schedule(delayMs: number): void {
    if (this._disposed) {
      return;
    }
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
    }
    this._timer = window.setTimeout(async () => {
      this._timer = null;
      await this.poll();
      this._schedule(Math.max(5, this._settings.pollSeconds) * 1000);
    }, delayMs);
  }

  private async _onEvent(_: EventStream, event: IRunEvent): Promise<void> {
    if (!this._settings.enabled || (event.type !== 'completed' && event.type !== 'failed')) {
      return;
    }
    let run: IRun;
    try {
      run = await this.api.getRun(event.run_id);
    } catch {
      return;
    }
    if (!this._settings.othersRuns && this._user !== null && run.user !== this._user) {
      return;
    }
    if (this._remember(run.id, event.type)) {
      this._toastRun(run, event.type);
    }
  }

  /** True the first time a run's outcome is seen in this browser session. */
  private _remember(runId: string | undefined, kind: string | undefined): boolean {
    const key = `${runId ?? '?'}:${kind ?? '?'}`;
    if (runId !== undefined && this._shown.has(key)) {
      return false;
    }
    this._shown.add(key);
    return true;
  }

  private _actions(): Notification.IAction[] {
    return [{ label: 'Show', caption: 'Open the Backtests panel', callback: () => this.showPanel() }];
  }

  private _toastRun(run: IRun, outcome: string): void {
    const text = toastText(run.name || run.id, outcome, run.metrics, run.error);
    if (outcome === 'completed') {
      Notification.success(text, { autoClose: 8000, actions: this._actions() });
    } else {
      Notification.error(text, { autoClose: false, actions: this._actions() });
    }
  }

  /** A stored notification: about a run still in the registry, in the run toast's wording. */
  private async _toastNotification(item: INotification): Promise<void> {
    if (item.run_id && (item.kind === 'completed' || item.kind === 'failed')) {
      try {
        this._toastRun(await this.api.getRun(item.run_id), item.kind);
        return;
      } catch {
        // the run is gone (or unreadable): the notification's own words
      }
    }
    const failed = item.kind === 'failed' || item.kind === 'error';
    const options = { autoClose: failed ? (false as const) : 8000, actions: this._actions() };
    const text = notificationText(item);
    if (failed) {
      Notification.error(text, options);
    } else if (item.kind === 'completed') {
      Notification.success(text, options);
    } else {
      Notification.info(text, options);
    }
  }

  private _settings: INotifierSettings = { enabled: true, othersRuns: false, pollSeconds: 30 };
  private _shown = new Set<string>();
  private _user: string | null = null;
  private _timer: number | null = null;
  private _disposed = false;
}

/** A notification's title and body, without saying the title twice (a body that is a headline
 * starts with the title: "Run 'x' completed: Sharpe 1.2"). */
export function notificationText(item: INotification): string {
  const title = item.title ?? '';
  const body = item.body ?? '';
  if (title && body.startsWith(title)) {
    return body;
  }
  return [title, body].filter(t => t).join(': ') || 'QuantLab notification';
}
