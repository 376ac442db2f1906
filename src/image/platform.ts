// OCI platform names (GOOS/GOARCH[/variant]) and the host's own.
import { BerthError } from '../errors.js';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

const NODE_TO_OCI_ARCH: Record<string, string> = {
  x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64', ia32: '386',
};

export function hostPlatform(): Platform {
  const architecture = NODE_TO_OCI_ARCH[process.arch] ?? process.arch;
  return architecture === 'arm64' ? { os: 'linux', architecture, variant: 'v8' } : { os: 'linux', architecture };
}

export function parsePlatform(text: string): Platform {
  const [os, architecture, variant, extra] = text.split('/');
  if (!os || !architecture || extra !== undefined) {
    throw new BerthError('USAGE', `invalid platform '${text}'`, 'write it as OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8');
  }
  return variant ? { os, architecture, variant } : { os, architecture };
}

export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

/** Does a descriptor's platform serve `want`? A missing variant matches any. */
export function platformMatches(have: Partial<Platform> | undefined, want: Platform): boolean {
  if (!have || have.os !== want.os || have.architecture !== want.architecture) return false;
  if (!have.variant || !want.variant) return true;
  return have.variant === want.variant;
}
