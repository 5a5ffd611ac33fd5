// The JSON of a token's header and payload as Envoy's jwt_authn reads it, which jose is laxer
// about: jose drops a byte-order mark and keeps the last of two equal keys, so a payload with
// `"roles":[],"roles":["admin"]` would name an admin at a service and be refused at the edge.

/** A JSON string, or a character of the structure outside strings. */
const TOKENS = /"(?:[^"\\]|\\.)*"|[{}[\]:]/g;

/** `json` (valid JSON) has an object with two equal keys, compared once unescaped. */
export function repeatsAKey(json: string): boolean {
  // The keys of each open object; undefined for an open array.
  const open: (Set<string> | undefined)[] = [];
  let last = "";
  for (const [token] of json.matchAll(TOKENS)) {
    if (token === "{") open.push(new Set());
    else if (token === "[") open.push(undefined);
    else if (token === "}" || token === "]") open.pop();
    else if (token !== ":") last = token;
    else {
      // A colon follows a key, the last string seen.
      const keys = open.at(-1) as Set<string>;
      const key = JSON.parse(last) as string;
      if (keys.has(key)) return true;
      keys.add(key);
    }
  }
  return false;
}

const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/**
 * The header and payload of a compact JWS (one jose has already verified) have no repeated key
 * and no leading byte-order mark, as the edge requires.
 */
export function jsonAsTheEdgeReadsIt(token: string): boolean {
  return token
    .split(".", 2)
    .map((segment) => Buffer.from(segment, "base64url"))
    .every((bytes) => !bytes.subarray(0, 3).equals(BOM) && !repeatsAKey(bytes.toString("utf8")));
}
