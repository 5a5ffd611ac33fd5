// The one way tests assert a failed call: its code, its ErrorInfo reason and the fields its
// BadRequest names.
import type { ExecutionContext } from "ava";
import { Code, ServiceError } from "../../kit/errors.js";

/**
 * Asserts that `call` fails with a ServiceError of `code`, and, when given, of ErrorInfo `reason`
 * and a BadRequest that names exactly `fields`, in order. Returns the error.
 */
export async function expectStatus(
  t: ExecutionContext,
  call: Promise<unknown>,
  code: Code,
  reason?: string,
  fields?: string[],
): Promise<ServiceError | undefined> {
  const error = await t.throwsAsync(call, { instanceOf: ServiceError });
  t.is(Code[error?.code ?? -1], Code[code], error?.message.slice(0, 200));
  if (reason !== undefined) t.is(error?.details.reason, reason);
  if (fields) {
    t.deepEqual(
      error?.details.fieldViolations?.map((violation) => violation.field),
      fields,
    );
  }
  return error;
}

/** Asserts INVALID_ARGUMENT naming exactly `fields`, with reason INVALID_ARGUMENT by default. */
export const expectInvalid = (
  t: ExecutionContext,
  call: Promise<unknown>,
  fields: string[],
  reason = "INVALID_ARGUMENT",
) => expectStatus(t, call, Code.INVALID_ARGUMENT, reason, fields);
