import { randomBytes } from "node:crypto";

/** A new opaque id such as "usr_3q9dK1xVtA2mR0bC": a type prefix and 96 random bits. */
export const newId = (prefix: string) => `${prefix}_${randomBytes(12).toString("base64url")}`;
