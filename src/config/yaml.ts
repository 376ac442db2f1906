// The YAML library, loaded only when there is something to read (a configuration file, a CDI
// spec): most commands find none, and every container started from the command line would
// otherwise pay for loading it. Apart from load.ts so that host/cdi.ts can read YAML without
// importing the settings table (which imports the host bindings, cdi.ts among them).
import { createRequire } from 'node:module';

export function yaml(): typeof import('yaml') {
  return createRequire(import.meta.url)('yaml') as typeof import('yaml');
}
