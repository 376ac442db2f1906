// Published ports, played by an attacker (SECURITY.md, "Networking"): the attacker listens first
// on one address of the port the victim publishes with -p (pasta would bind the other family
// and go on, and connections to 127.0.0.1 or localhost would reach the attacker, with what they
// carry: a notebook's token, a cookie). berth refuses to start the container instead. And a
// container that kills the process keeping its pasta does not leave the port held.
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, cleanup, freePort } from '../helpers.js';
import { account, as, ATTACKER, VICTIM, victimImages } from './users.js';

let work: string;
const image = () => path.join(work, 'plain.sqsh');
const env = () => ({ BERTH_RUNTIME_DIR: path.join(work, 'runtime'), BERTH_IMAGE_LINGER: '0' });


beforeAll(async () => {
  work = await victimImages('network');
}, 120_000);
afterAll(() => cleanup(work));

describe('-p with a port another user holds', () => {
  it('is refused, naming the other user, when the attacker listens first on 127.0.0.1 only', async () => {
    const port = await freePort();
    const listener = spawn('runuser', ['-u', ATTACKER, '--', 'python3', '-c',
      `import socket,time;s=socket.socket();s.bind(("127.0.0.1",${port}));s.listen();print("up",flush=True);time.sleep(30)`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((r) => listener.stdout.once('data', r));
    try {
      const r = await as(VICTIM, process.execPath, [BERTH, 'exec', '-p', `${port}:80`, image(), 'echo', 'started'], { env: env() });
      expect(r.stdout).toBe('');
      expect(r.code).toBe(125);
      expect(r.stderr).toContain(`port ${port} on this node is also bound by uid ${account(ATTACKER).uid}`);
    } finally {
      // runuser passes the signal on and waits for the listener: once it has exited, the
      // attacker's socket is closed, and whatever still holds the port is the victim's.
      if (listener.exitCode === null && listener.signalCode === null) {
        const gone = new Promise((r) => listener.once('exit', r));
        listener.kill();
        await gone;
      }
    }
    // Nothing of the victim's holds the port afterwards.
    expect(spawnSync('ss', ['-Hltn', `sport = :${port}`], { encoding: 'utf8' }).stdout.trim()).toBe('');
  });
});
