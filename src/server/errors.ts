/**
 * Errors as OpenAI's API writes them: `{"error": {"message", "type", "param", "code"}}` with the
 * HTTP status that fits. Whatever goes wrong, a client gets one of these and never a stack trace.
 */
import type { FastifyError } from "fastify";

export interface OpenAiErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** An error meant for the client: its status, type and message are shown as they are. */
export class ApiError extends Error {
  override name = "ApiError";
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }

  toJSON(): OpenAiErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** 400: the request is wrong; `param` names the field. */
export const invalidRequest = (message: string, param: string | null = null, code: string | null = null): ApiError =>
  new ApiError(400, "invalid_request_error", message, param, code);

export const unauthorized = (message: string): ApiError => new ApiError(401, "authentication_error", message, null, "invalid_api_key");

export const notFound = (message: string, code: string | null = "not_found"): ApiError =>
  new ApiError(404, "not_found_error", message, null, code);

export const queueFull = (message: string): ApiError => new ApiError(429, "rate_limit_error", message, null, "rate_limit_exceeded");

export const unavailable = (message: string): ApiError => new ApiError(503, "service_unavailable", message, null, null);

export const serverError = (message: string): ApiError => new ApiError(500, "server_error", message, null, null);

/** Ajv's record of the first failed check, as Fastify attaches it to a validation error. */
interface ValidationIssue {
  instancePath: string;
  keyword: string;
  message?: string;
  params: Record<string, unknown>;
}

/** The field an Ajv issue is about, in the dotted form OpenAI's `param` uses ("messages.0.role"). */
export function issueParam(issue: ValidationIssue): string | null {
  const path = issue.instancePath.split("/").filter(Boolean);
  if (issue.keyword === "required" && typeof issue.params.missingProperty === "string") path.push(issue.params.missingProperty);
  if (issue.keyword === "additionalProperties" && typeof issue.params.additionalProperty === "string") {
    path.push(issue.params.additionalProperty);
  }
  return path.length > 0 ? path.join(".") : null;
}

function validationMessage(issue: ValidationIssue): string {
  const param = issueParam(issue);
  if (issue.keyword === "required") return `${param} is required`;
  if (issue.keyword === "additionalProperties") return `${param} is not a known field`;
  if (issue.keyword === "enum" && Array.isArray(issue.params.allowedValues)) {
    return `${param ?? "the body"} must be one of ${issue.params.allowedValues.map((v) => JSON.stringify(v)).join(", ")}`;
  }
  if (issue.keyword === "type") {
    const types = ([] as unknown[]).concat(issue.params.type).filter((t) => t !== "null");
    const article = (t: unknown) => (t === "integer" || t === "array" || t === "object" ? `an ${t}` : `a ${t}`);
    return `${param ?? "the body"} must be ${types.map(article).join(" or ")}`;
  }
  return `${param ?? "the body"} ${issue.message ?? "is invalid"}`;
}

/**
 * Any error a route or Fastify itself threw, as the ApiError to answer with. Errors that are not
 * the client's come out as a 500 with a generic message: their details go to the log only.
 */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  const e = err as Partial<FastifyError> & { validation?: ValidationIssue[] };
  if (Array.isArray(e.validation) && e.validation.length > 0) {
    const issue = e.validation[0];
    return invalidRequest(validationMessage(issue), issueParam(issue));
  }
  switch (e.code) {
    case "FST_ERR_CTP_INVALID_JSON_BODY":
      return invalidRequest("the request body is not valid JSON", null, "invalid_json");
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return invalidRequest("the request body is empty; send a JSON object", null, "invalid_json");
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new ApiError(413, "invalid_request_error", "the request body is larger than the server accepts", null, "request_too_large");
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return new ApiError(
        415,
        "invalid_request_error",
        "send the body as JSON with Content-Type: application/json",
        null,
        "unsupported_media_type",
      );
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
      return invalidRequest("the body's size does not match its Content-Length", null, null);
  }
  // secure-json-parse's own errors (bad JSON) carry a 400 and no code.
  if (e.statusCode === 400 && err instanceof SyntaxError) return invalidRequest("the request body is not valid JSON", null, "invalid_json");
  if (typeof e.statusCode === "number" && e.statusCode >= 400 && e.statusCode < 500) {
    return new ApiError(e.statusCode, "invalid_request_error", e.message ?? "bad request");
  }
  return serverError("the server failed to handle this request; see its log");
}
