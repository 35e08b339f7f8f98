/** An error caused by what the user typed: printed as one line without a stack trace. */
export class UsageError extends Error {
  override name = "UsageError";
}
