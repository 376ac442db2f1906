// berth inspect IMAGE.sqsh [--json]
import { readImageInfo } from '../squashfs/image-info.js';
import { formatBytes } from './progress.js';

export async function inspectCommand(file: string, flags: { json?: boolean }): Promise<string> {
  const info = await readImageInfo(file);
  if (flags.json) return JSON.stringify(info, null, 2);
  const m = info.image;
  const c = m.config;
  const json = (v: unknown) => JSON.stringify(v);
  const rows: [string, string][] = [
    ['File', `${info.file} (${formatBytes(info.size)}, squashfs ${info.squashfs.version}, ${info.squashfs.compression}, ${info.squashfs.inodes} inodes)`],
    ['Source', m.source],
    ['Manifest digest', m.manifestDigest ?? '(none: classic docker save archive)'],
    ['Config digest', m.configDigest],
    ['Platform', [m.platform.os, m.platform.architecture, m.platform.variant].filter(Boolean).join('/')],
    ['Created', m.created ?? '-'],
    ['Layers', String(m.layers.length)],
    ['Entrypoint', c.Entrypoint ? json(c.Entrypoint) : '-'],
    ['Cmd', c.Cmd ? json(c.Cmd) : '-'],
    ['WorkingDir', c.WorkingDir || '/'],
    ['User', c.User || '(root)'],
    ['Env', c.Env.join('\n' + ' '.repeat(17)) || '-'],
    ['Labels', Object.entries(c.Labels).map(([k, v]) => `${k}=${v}`).join('\n' + ' '.repeat(17)) || '-'],
    ['Volumes', c.Volumes.join(', ') || '-'],
    ['ExposedPorts', c.ExposedPorts.join(', ') || '-'],
  ];
  return rows.map(([k, v]) => `${`${k}:`.padEnd(17)}${v}`).join('\n');
}
