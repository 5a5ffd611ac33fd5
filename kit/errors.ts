import { type ServiceError as GrpcError, type Metadata, status } from "@grpc/grpc-js";
import type { Any } from "../gen/ts/google/protobuf/any.js";
import {
  BadRequest,
  BadRequest_FieldViolation,
  ErrorInfo,
  PreconditionFailure,
  PreconditionFailure_Violation,
  QuotaFailure,
  QuotaFailure_Violation,
} from "../gen/ts/google/rpc/error_details.js";
import { Status } from "../gen/ts/google/rpc/status.js";

export { status as Code };

/** What a failure says beyond its code: the google.rpc error details it carries. */
export interface ErrorDetails {
  /** UPPER_SNAKE reason for the one ErrorInfo, for example "USER_NOT_FOUND". */
  reason?: string;
  /** Extra ErrorInfo metadata, for example the id that was not found. */
  metadata?: Record<string, string>;
  /** One entry per invalid field: a BadRequest detail. */
  fieldViolations?: { field: string; description: string }[];
  /** Unmet preconditions, for example insufficient stock: a PreconditionFailure detail. */
  preconditionViolations?: { type: string; subject: string; description: string }[];
  /** Quotas the call would pass, for example streams per caller: a QuotaFailure detail. */
  quotaViolations?: { subject: string; description: string }[];
}

/**
 * The one error type of shopmesh. Handlers throw it; the server turns it into a gRPC status with
 * google.rpc details, and the typed clients turn a failed call back into it.
 */
export class ServiceError extends Error {
  override name = "ServiceError";

  constructor(
    readonly code: status,
    message: string,
    readonly details: ErrorDetails = {},
    /** What went wrong underneath, for the log; never sent to the caller. */
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
  }
}

/**
 * `text` in at most `max` UTF-16 units, ending in "…" when cut. The cut never splits an emoji,
 * and the result is well-formed: grpc-js percent-encodes a status message and throws on half of
 * a surrogate pair, losing the call.
 */
export function clipText(text: string, max: number): string {
  if (text.length <= max) return text.toWellFormed();
  let end = max - 1;
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${text.slice(0, end).toWellFormed()}…`;
}

const typeUrl = (name: string) => `type.googleapis.com/${name}`;

/** Encodes an error as google.rpc.Status for the `grpc-status-details-bin` trailer. */
export function encodeStatus(error: ServiceError, domain: string): Buffer {
  const { reason, metadata, fieldViolations, preconditionViolations, quotaViolations } =
    error.details;
  const details: Any[] = [
    {
      typeUrl: typeUrl("google.rpc.ErrorInfo"),
      value: Buffer.from(
        ErrorInfo.encode({
          reason: reason ?? status[error.code],
          domain,
          metadata: metadata ?? {},
        }).finish(),
      ),
    },
  ];
  if (fieldViolations?.length) {
    const violations = fieldViolations.map((v) => BadRequest_FieldViolation.fromPartial(v));
    details.push({
      typeUrl: typeUrl("google.rpc.BadRequest"),
      value: Buffer.from(BadRequest.encode({ fieldViolations: violations }).finish()),
    });
  }
  if (preconditionViolations?.length) {
    const violations = preconditionViolations.map((v) =>
      PreconditionFailure_Violation.fromPartial(v),
    );
    details.push({
      typeUrl: typeUrl("google.rpc.PreconditionFailure"),
      value: Buffer.from(PreconditionFailure.encode({ violations }).finish()),
    });
  }
  if (quotaViolations?.length) {
    const violations = quotaViolations.map((v) => QuotaFailure_Violation.fromPartial(v));
    details.push({
      typeUrl: typeUrl("google.rpc.QuotaFailure"),
      value: Buffer.from(QuotaFailure.encode({ violations }).finish()),
    });
  }
  return Buffer.from(
    Status.encode({ code: error.code, message: clipText(error.message, 1024), details }).finish(),
  );
}

/** Decodes the google.rpc details of a failed call, when it carries any. */
export function decodeStatus(metadata: Metadata | undefined): ErrorDetails & { domain?: string } {
  const raw = metadata?.get("grpc-status-details-bin")[0];
  if (!raw || typeof raw === "string") return {};
  const out: ErrorDetails & { domain?: string } = {};
  for (const any of Status.decode(raw).details) {
    switch (any.typeUrl) {
      case typeUrl("google.rpc.ErrorInfo"): {
        const info = ErrorInfo.decode(any.value);
        Object.assign(out, { reason: info.reason, domain: info.domain, metadata: info.metadata });
        break;
      }
      case typeUrl("google.rpc.BadRequest"):
        out.fieldViolations = BadRequest.decode(any.value).fieldViolations;
        break;
      case typeUrl("google.rpc.PreconditionFailure"):
        out.preconditionViolations = PreconditionFailure.decode(any.value).violations;
        break;
      case typeUrl("google.rpc.QuotaFailure"):
        out.quotaViolations = QuotaFailure.decode(any.value).violations.map(
          ({ subject, description }) => ({ subject, description }),
        );
        break;
    }
  }
  return out;
}

/** Turns a failed call's error into a ServiceError with its decoded details. */
export function fromGrpcError(error: GrpcError): ServiceError {
  return new ServiceError(error.code, error.details, decodeStatus(error.metadata));
}

/** Codes that mean the server failed, not the caller: OpenTelemetry's rpc conventions' list. */
export const SERVER_FAULTS: ReadonlySet<status> = new Set([
  status.UNKNOWN,
  status.DEADLINE_EXCEEDED,
  status.UNIMPLEMENTED,
  status.INTERNAL,
  status.UNAVAILABLE,
  status.DATA_LOSS,
]);

/**
 * Thrown inside a store transaction to undo it for what the caller asked, so that the caller is
 * answered outside it (`reason` says why). Not a failure of the store, as a refusal is not.
 */
export class Rollback<T> extends Error {
  override name = "Rollback";

  constructor(readonly reason: T) {
    super("rolled back for the caller's request");
  }
}

/** `error` is a refusal of what the caller asked, not a failure of the server. */
export const isRefusal = (error: unknown): boolean =>
  error instanceof Rollback || (error instanceof ServiceError && !SERVER_FAULTS.has(error.code));

/**
 * This process's own shutdown cut the call (its grace period ended): UNAVAILABLE, so that the
 * caller, Envoy included, calls another replica.
 */
export class ShuttingDown extends ServiceError {
  constructor() {
    super(status.UNAVAILABLE, "the server is shutting down; call again", {
      reason: "SHUTTING_DOWN",
    });
  }
}

/** Shorthands for the errors handlers throw most. */
export const errors = {
  invalidArgument: (fieldViolations: { field: string; description: string }[]) =>
    new ServiceError(
      status.INVALID_ARGUMENT,
      fieldViolations.map((v) => `${v.field}: ${v.description}`).join("; "),
      { reason: "INVALID_ARGUMENT", fieldViolations },
    ),
  notFound: (reason: string, message: string, metadata?: Record<string, string>) =>
    new ServiceError(status.NOT_FOUND, message, { reason, ...(metadata && { metadata }) }),
  alreadyExists: (reason: string, message: string, metadata?: Record<string, string>) =>
    new ServiceError(status.ALREADY_EXISTS, message, { reason, ...(metadata && { metadata }) }),
  failedPrecondition: (reason: string, message: string, details: ErrorDetails = {}) =>
    new ServiceError(status.FAILED_PRECONDITION, message, { reason, ...details }),
};
