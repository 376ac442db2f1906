// berth inspect IMAGE.sqsh [--json]. Every value below but the file's size comes from the image,
// someone else's text: the human form escapes control characters in each (terminal.ts), and
// --json is exact JSON, whose escaping is JSON's own.
import { readImageInfo } from '../squashfs/image-info.js';
import { formatBytes } from './progress.js';
import { printable } from './terminal.js';

const INDENT = ' '.repeat(17);

export async function inspectCommand(file: string, flags: { json?: boolean }): Promise<string> {
  const info = await readImageInfo(file);
  if (flags.json) return JSON.stringify(info, null, 2);
  const m = info.image;
  const c = m.config;
  const json = (v: unknown) => JSON.stringify(v);
  // One list item per line: each item escaped first, so that only berth's own newlines break lines.
  const list = (items: string[]) => items.map(printable).join(`\n${INDENT}`);
  const rows: [string, string][] = [
    ['File', printable(`${info.file} (${formatBytes(info.size)}, squashfs ${info.squashfs.version}, ${info.squashfs.compression}, ${info.squashfs.inodes} inodes)`)],
    ['Source', printable(m.source)],
    ['Manifest digest', printable(m.manifestDigest ?? '(none: classic docker save archive)')],
    ['Config digest', printable(m.configDigest)],
    ['Platform', printable([m.platform.os, m.platform.architecture, m.platform.variant].filter(Boolean).join('/'))],
    ['Created', printable(m.created ?? '-')],
    ['Layers', String(m.layers.length)],
    ['Entrypoint', c.Entrypoint ? printable(json(c.Entrypoint)) : '-'],
    ['Cmd', c.Cmd ? printable(json(c.Cmd)) : '-'],
    ['WorkingDir', printable(c.WorkingDir || '/')],
    ['User', printable(c.User || '(root)')],
    ['Env', list(c.Env) || '-'],
    ['Labels', list(Object.entries(c.Labels).map(([k, v]) => `${k}=${v}`)) || '-'],
    ['Volumes', printable(c.Volumes.join(', ')) || '-'],
    ['ExposedPorts', printable(c.ExposedPorts.join(', ')) || '-'],
  ];
  return rows.map(([k, v]) => `${`${k}:`.padEnd(17)}${v}`).join('\n');
}
