import { expect, it } from "vitest";
import { outlierStatus } from "../src/sidecar/outbound.js";

it("counts a gRPC trailers-only status for outlier detection as Envoy's grpcToHttpStatus", () => {
  expect(outlierStatus(true, 200, "14")).toBe(503); // UNAVAILABLE
  expect(outlierStatus(true, 200, "4")).toBe(504); // DEADLINE_EXCEEDED
  expect(outlierStatus(true, 200, "13")).toBe(500); // INTERNAL
  expect(outlierStatus(true, 200, "7")).toBe(403);
  expect(outlierStatus(true, 200, "0")).toBe(200);
  expect(outlierStatus(true, 200, "99")).toBe(500);
  // No grpc-status in the headers (it comes in trailers), a 5xx already, or no gRPC request.
  expect(outlierStatus(true, 200, undefined)).toBe(200);
  expect(outlierStatus(true, 502, "0")).toBe(502);
  expect(outlierStatus(false, 200, "14")).toBe(200);
});
