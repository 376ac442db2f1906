// The sweep of temp files that killed conversions left behind (filesystems without O_TMPFILE):
// only berth's names, only the user's own regular files, and only when no live converter can be
// writing them.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sweepStaleTemps } from '../../src/convert/output.js';

const dir = mkdtempSync(path.join(tmpdir(), 'berth-sweep-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A pid that was alive a moment ago and is not now. */
function deadPid(): number {
  const r = spawnSync('sh', ['-c', 'echo $$']);
  return Number(r.stdout.toString().trim());
}

function plant(name: string, ageSeconds = 0): string {
  const file = path.join(dir, name);
  writeFileSync(file, 'partial image');
  const t = Date.now() / 1000 - ageSeconds;
  utimesSync(file, t, t);
  return name;
}

describe('sweepStaleTemps', () => {
  const host = hostname();
  it('takes what dead or reused PIDs of this host left, of any image in the directory', () => {
    const dead = deadPid();
    const swept = [
      plant(`.a.sqsh.berth-tmp-${dead}-abc123@${host}`),
      plant(`.other.sqsh.berth-tmp-${dead}-link@${host}`),
      // PID 1 is alive but started long before 2001: it cannot have written this file since.
      plant(`.b.sqsh.berth-tmp-1-xyz@${host}`, Date.now() / 1000 - 978307200),
      plant(`.c.sqsh.berth-tmp-${dead}-q1w2e3@elsewhere`, 2 * 3600),
      plant(`.d.sqsh.berth-tmp-${dead}-q1w2e3`, 2 * 3600), // an older berth's name: no host
      plant(`e.sqsh.berth-tmp-${dead}-0123456789ab`, 2 * 3600),
    ];
    const kept = [
      plant(`.mine.sqsh.berth-tmp-${process.pid}-abc@${host}`), // this very process
      plant(`.live.sqsh.berth-tmp-1-abc@${host}`), // PID 1, written just now
      plant(`.f.sqsh.berth-tmp-${dead}-abc@elsewhere`, 60), // another node's, still being written
      plant(`.g.sqsh.berth-tmp-${dead}-abc`, 60),
      plant('image.sqsh'),
      plant('.image.sqsh.partial'),
    ];
    symlinkSync('/etc/passwd', path.join(dir, `.h.sqsh.berth-tmp-${dead}-abc@${host}`));
    mkdirSync(path.join(dir, `.i.sqsh.berth-tmp-${dead}-abc@${host}`));
    kept.push(`.h.sqsh.berth-tmp-${dead}-abc@${host}`, `.i.sqsh.berth-tmp-${dead}-abc@${host}`);
    expect(sweepStaleTemps(dir).sort()).toEqual(swept.sort());
    expect(readdirSync(dir).sort()).toEqual(kept.sort());
    expect(existsSync('/etc/passwd')).toBe(true);
  });

  it('a directory it cannot read is left alone', () => {
    expect(sweepStaleTemps(path.join(dir, 'missing'))).toEqual([]);
  });
});
