export type * from './types.js';
export { ConfigError, configEnvNames, envName, loadConfig, parseConfig } from './load.js';
