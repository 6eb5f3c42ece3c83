// Minimal ambient typings for `oidc-provider` 9, which ships no type declarations (and
// @types/oidc-provider is not installed). Only what the test harness touches is typed precisely;
// everything else is left loose on purpose. If @types/oidc-provider is ever added as a
// devDependency, delete this file.
declare module 'oidc-provider' {
  import type { IncomingMessage, ServerResponse } from 'node:http';

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  type Any = any;

  export type Configuration = Record<string, Any>;

  /** Koa context as seen by provider middleware (`provider.use`). */
  export interface KoaContextWithOIDC {
    method: string;
    path: string;
    url: string;
    status: number;
    body: Any;
    headers: Record<string, string | string[] | undefined>;
    get(field: string): string;
    set(field: string, value: string): void;
    /** Only present on routed (OIDC) requests, and only after `next()` for most of its members. */
    oidc?: Any;
    [key: string]: Any;
  }

  export type Middleware = (ctx: KoaContextWithOIDC, next: () => Promise<unknown>) => unknown;

  export interface AdapterPayload {
    [key: string]: Any;
    accountId?: string;
    clientId?: string;
    grantId?: string;
    uid?: string;
    userCode?: string;
    jti?: string;
    consumed?: Any;
  }

  export interface Adapter {
    upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void>;
    find(id: string): Promise<AdapterPayload | undefined>;
    findByUserCode(userCode: string): Promise<AdapterPayload | undefined>;
    findByUid(uid: string): Promise<AdapterPayload | undefined>;
    consume(id: string): Promise<void>;
    destroy(id: string): Promise<void>;
    revokeByGrantId(grantId: string): Promise<void>;
  }

  export class Provider {
    constructor(issuer: string, configuration?: Configuration);
    readonly issuer: string;
    proxy: boolean;
    keys: string[];
    middleware: Middleware[];
    callback(): (req: IncomingMessage, res: ServerResponse) => void;
    use(fn: Middleware): this;
    on(event: string, listener: (...args: Any[]) => void): this;
    once(event: string, listener: (...args: Any[]) => void): this;
    off(event: string, listener: (...args: Any[]) => void): this;
    emit(event: string, ...args: Any[]): boolean;
    urlFor(name: string, opt?: Record<string, unknown>): string;
    pathFor(name: string, opt?: Record<string, unknown>): string;
    interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<Any>;
    interactionResult(req: IncomingMessage, res: ServerResponse, result: Any, opts?: { mergeWithLastSubmission?: boolean }): Promise<string>;
    interactionFinished(req: IncomingMessage, res: ServerResponse, result: Any, opts?: { mergeWithLastSubmission?: boolean }): Promise<void>;
    registerGrantType(name: string, handler: Any, params?: Any, dupes?: Any): void;
    readonly Client: Any;
    readonly Grant: Any;
    readonly Session: Any;
    readonly Interaction: Any;
    readonly AccessToken: Any;
    readonly AuthorizationCode: Any;
    readonly RefreshToken: Any;
    readonly ClientCredentials: Any;
    readonly IdToken: Any;
    readonly Claims: Any;
    readonly BaseToken: Any;
    readonly ReplayDetection: Any;
    static readonly ctx: KoaContextWithOIDC | undefined;
  }

  export const errors: Record<string, Any>;
  export const interactionPolicy: Any;
  export default Provider;
}
