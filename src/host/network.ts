// What --network user needs of this node: pasta (Debian's passt), which gives a network
// namespace of its own user-mode networking from an unprivileged process, and /dev/net/tun,
// which pasta opens inside it. Found here so that a node without them fails before anything
// starts, with what to do; the helper only runs the path it is given.
import { accessSync, constants, statSync } from 'node:fs';
import path from 'node:path';
import { BerthError } from '../errors.js';

/** pasta's absolute path on this node (the host's PATH, then the usual places). */
export function findPasta(env: NodeJS.ProcessEnv = process.env): string {
  const dirs = [...(env.PATH ?? '').split(':').filter((d) => d.startsWith('/')), '/usr/bin', '/usr/sbin', '/usr/local/bin'];
  const pasta = dirs.map((d) => path.join(d, 'pasta')).find((f) => {
    try {
      accessSync(f, constants.X_OK);
      return statSync(f).isFile();
    } catch {
      return false;
    }
  });
  if (!pasta) {
    throw new BerthError('HOST_MISSING', '--network user: this node has no pasta, which berth uses for user-mode networking',
      "ask the site to install it (Debian and Ubuntu: apt install passt; RHEL: dnf install passt), or use --network none (a loopback only)");
  }
  try {
    accessSync('/dev/net/tun', constants.R_OK | constants.W_OK);
  } catch {
    throw new BerthError('HOST_INCOMPATIBLE', '--network user: you cannot open /dev/net/tun, which pasta needs inside the container\'s network namespace',
      'most distributions make it mode 0666; an administrator can (chmod 0666 /dev/net/tun, or a udev rule); or use --network none');
  }
  return pasta;
}
