// berth's version: the one package.json holds (a unit test keeps them equal), which the
// Makefiles build into berth-helper and the SPANK plugin, so `berth version` can tell them apart.
export const VERSION = '0.1.0';
