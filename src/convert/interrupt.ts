// What a signal must undo before it ends berth in the middle of a conversion: the named temp
// file removed (filesystems without O_TMPFILE), tar2sqfs stopped. Each is registered while it
// is live; with nothing registered berth keeps the default actions and dies at once, as there
// is nothing to clean.
//
// Node runs signal listeners from its event loop, and process.exit() waits for its thread pool:
// a read blocked on a FIFO that never sends holds process.exit() forever (measured with Node
// 20). So after cleaning up, berth restores the default action and raises the signal again:
// the kernel ends it at once, and its parent sees it killed by that signal, which a shell
// reports as 128+N ($? is 143 for SIGTERM). This is what POSIX shells expect of a program that
// cleans up on a signal (https://www.cons.org/cracauer/sigint.html).
import { constants } from 'node:os';

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
type Handled = (typeof SIGNALS)[number];

const actions = new Set<() => void>();
const listeners = new Map<Handled, () => void>();

/** Runs `action` if a signal (or an exit) comes before the returned function is called. */
export function onInterrupt(action: () => void): () => void {
  actions.add(action);
  if (listeners.size === 0) install();
  return () => {
    actions.delete(action);
    if (actions.size === 0) uninstall();
  };
}

function install(): void {
  for (const signal of SIGNALS) {
    const listener = () => interrupted(signal);
    listeners.set(signal, listener);
    process.on(signal, listener);
  }
  process.on('exit', runActions);
}

function uninstall(): void {
  for (const [signal, listener] of listeners) process.off(signal, listener);
  listeners.clear();
  process.off('exit', runActions);
}

function runActions(): void {
  const all = [...actions];
  actions.clear();
  for (const action of all) {
    try {
      action();
    } catch {
      // best effort: the others must still run
    }
  }
}

function interrupted(signal: Handled): void {
  runActions();
  uninstall();
  process.stderr.write(`${process.stderr.isTTY ? '\r\x1b[K' : ''}berth: stopped by ${signal}; nothing was written\n`);
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  // Still here: someone else listens, or the signal was ignored when berth started (nohup).
  process.exit(128 + constants.signals[signal]);
}
