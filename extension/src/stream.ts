/**
 * The run-event stream: one WebSocket to /quantlab/api/events that resumes from the last seq it
 * delivered after any disconnect (a server restart, a network blip), with a capped backoff.
 * `stop()` closes it for good until the next `start()` (the panel stops it while hidden).
 */

import { ISignal, Signal } from '@lumino/signaling';

import { IRunEvent, QuantlabApi } from './api';

export type StreamState = 'stopped' | 'connecting' | 'live' | 'reconnecting';

const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 10000;

export class EventStream {
  constructor(private readonly api: QuantlabApi) {}

  get event(): ISignal<this, IRunEvent> {
    return this._event;
  }

  /** Emitted when the socket (re)opens: after a gap the list should be reloaded. */
  get stateChanged(): ISignal<this, StreamState> {
    return this._stateChanged;
  }

  get state(): StreamState {
    return this._state;
  }

  /** The seq of the last event delivered (the resume point). */
  get lastSeq(): number | null {
    return this._lastSeq;
  }

  /**
   * Follow events after `after` (null: from now on, or from the last delivered event).
   *
   * A caller that just loaded a snapshot passes the seq the snapshot is current to: it becomes
   * the resume point even when lower than the last delivered seq, so that after a reconnect the
   * events the snapshot may predate are replayed onto it, and so that an event store that was
   * reset (seqs start again from 0) is followed rather than ignored.
   */
  start(after: number | null): void {
    if (after !== null) {
      this._lastSeq = after;
    }
    if (this._wanted) {
      return;
    }
    this._wanted = true;
    this._backoff = MIN_BACKOFF_MS;
    this._connect();
  }

  stop(): void {
    this._wanted = false;
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
      this._timer = null;
    }
    const socket = this._socket;
    this._socket = null;
    if (socket) {
      socket.onclose = null;
      socket.onmessage = null;
      socket.onerror = null;
      socket.close();
    }
    this._setState('stopped');
  }

  private _connect(): void {
    this._setState(this._state === 'stopped' ? 'connecting' : 'reconnecting');
    let socket: WebSocket;
    try {
      socket = new WebSocket(this.api.eventsUrl(this._lastSeq));
    } catch (error) {
      console.warn('QuantLab: cannot open the events WebSocket', error);
      this._retry();
      return;
    }
    this._socket = socket;
    socket.onopen = () => {
      this._backoff = MIN_BACKOFF_MS;
      this._setState('live');
    };
    socket.onmessage = (message: MessageEvent) => {
      let event: IRunEvent;
      try {
        event = JSON.parse(String(message.data)) as IRunEvent;
      } catch {
        return;
      }
      if (this._lastSeq !== null && event.seq <= this._lastSeq) {
        return; // already delivered before a reconnect
      }
      this._lastSeq = event.seq;
      this._event.emit(event);
    };
    socket.onclose = () => {
      if (this._socket === socket) {
        this._socket = null;
        this._retry();
      }
    };
  }

  private _retry(): void {
    if (!this._wanted) {
      return;
    }
    this._setState('reconnecting');
    const delay = this._backoff;
    this._backoff = Math.min(this._backoff * 2, MAX_BACKOFF_MS);
    this._timer = window.setTimeout(() => {
      this._timer = null;
      if (this._wanted) {
        this._connect();
      }
    }, delay);
  }

  private _setState(state: StreamState): void {
    if (state !== this._state) {
      this._state = state;
      this._stateChanged.emit(state);
    }
  }

  private _socket: WebSocket | null = null;
  private _wanted = false;
  private _timer: number | null = null;
  private _backoff = MIN_BACKOFF_MS;
  private _lastSeq: number | null = null;
  private _state: StreamState = 'stopped';
  private _event = new Signal<this, IRunEvent>(this);
  private _stateChanged = new Signal<this, StreamState>(this);
}
