/**
 * QuantLab's JupyterLab extension: the "Backtests" side panel and run toasts.
 */

import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon } from '@jupyterlab/ui-components';

import { QuantlabApi } from './api';
import { RunNotifier } from './notifier';
import { BacktestsPanel, IPanelSettings } from './panel';
import { EventStream } from './stream';

export const PLUGIN_ID = 'quantlab:plugin';
const OPEN_COMMAND = 'quantlab:open-backtests';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M3 3h2v16h16v2H3z"/>
    <path d="M7 15.6l4.2-5.1 3.3 2.8L19.4 6l1.6 1.2-6.1 8.6-3.4-2.8-2.9 3.6z"/>
  </g>
</svg>`;

export const backtestsIcon = new LabIcon({ name: 'quantlab:backtests', svgstr: ICON_SVG });

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'The Backtests side panel: every run, live, with cancel, rerun, report and compare.',
  autoStart: true,
  optional: [ILayoutRestorer, ISettingRegistry, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    settingRegistry: ISettingRegistry | null,
    palette: ICommandPalette | null
  ) => {
    const api = new QuantlabApi(app.serviceManager.serverSettings);
    const stream = new EventStream(api);
    const showPanel = () => app.shell.activateById(panel.id);
    // Toasts have a stream of their own, always on: a run's outcome is toasted when it
    // happens, whether or not the panel (whose stream stops while hidden) is open.
    const toastStream = new EventStream(api);
    const notifier = new RunNotifier(api, toastStream, showPanel);
    toastStream.start(null);
    const panel = new BacktestsPanel({
      api,
      stream,
      user: () => notifier.whoami(),
      openPath: async (path: string) => {
        await app.commands.execute('docmanager:open', { path });
      },
      insertCode: (code: string) => insertIntoNotebook(app, code)
    });
    rememberLastNotebook(app);
    panel.title.icon = backtestsIcon;
    app.shell.add(panel, 'left', { rank: 650 });
    if (restorer) {
      restorer.add(panel, 'quantlab-backtests');
    }

    app.commands.addCommand(OPEN_COMMAND, {
      label: 'Show Backtests',
      caption: 'Open the Backtests panel: every run, live',
      icon: backtestsIcon,
      execute: showPanel
    });
    if (palette) {
      palette.addItem({ command: OPEN_COMMAND, category: 'QuantLab' });
    }

    const apply = (settings: ISettingRegistry.ISettings) => {
      const composite = settings.composite as { [key: string]: any };
      panel.settings = {
        show: composite.show === 'mine' ? 'mine' : 'all',
        limit: Number(composite.limit) || 50
      } as IPanelSettings;
      notifier.settings = {
        enabled: composite.notifications !== false,
        othersRuns: composite.notifyOthersRuns === true,
        pollSeconds: Number(composite.notificationPollSeconds) || 30
      };
    };
    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          apply(settings);
          settings.changed.connect(apply);
        })
        .catch(reason => {
          console.error('QuantLab: cannot load the settings; using the defaults', reason);
          notifier.settings = notifier.settings;
        });
    } else {
      notifier.settings = notifier.settings;
    }
  }
};

const isNotebook = (widget: any) =>
  !!widget && !widget.isDisposed && !!widget.content &&
  typeof widget.content.activeCellIndex === 'number';

/** The notebook the user last worked in (the main area may have moved on to another tab). */
let lastNotebook: any = null;

function rememberLastNotebook(app: JupyterFrontEnd): void {
  const changed = (app.shell as any).currentChanged;
  changed?.connect((_: unknown, args: { newValue: unknown }) => {
    if (isNotebook(args.newValue)) {
      lastNotebook = args.newValue;
    }
  });
}

/**
 * Insert `code` as a new cell below the active cell of the notebook last in focus, and select
 * it. False when no notebook is open.
 */
async function insertIntoNotebook(app: JupyterFrontEnd, code: string): Promise<boolean> {
  let target: any = app.shell.currentWidget;
  if (!isNotebook(target)) {
    // another kind of tab is current: the notebook last in focus, else the first one open
    target = isNotebook(lastNotebook)
      ? lastNotebook
      : (Array.from(app.shell.widgets('main')).find(isNotebook) ?? null);
  }
  if (!target) {
    return false;
  }
  app.shell.activateById(target.id);
  await app.commands.execute('notebook:insert-cell-below');
  const cell = target.content.activeCell;
  if (!cell) {
    return false;
  }
  cell.model.sharedModel.setSource(code);
  return true;
}

export default plugin;
